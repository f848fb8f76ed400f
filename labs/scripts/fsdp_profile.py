"""Lab 12's torchrun job: lab 07's FSDP2 training step under torch.profiler, and gloo's all-reduce bandwidth.

    python -m torch.distributed.run --standalone --nproc-per-node 2 labs/scripts/fsdp_profile.py
    # or, from a notebook:  labkit.dist.launch("fsdp_profile.py", 2, [...])

Two parts, in the same processes:

* ``profile``: lab 07's model (`labkit.dist.model_config`) wrapped exactly as lab 07 wraps it
  (``fsdp_train.shard``: one FSDP2 unit per decoder layer, the embedding and the LM head), on each
  rank's slice of lab 07's global batches. For each of ``--repeats`` repeats and each arm
  (``reshard``: ZeRO-3, parameters all-gathered in forward and again in backward; ``noreshard``:
  ``reshard_after_forward=False``, one all-gather per step), a fresh model takes one untimed step,
  then ``--steps`` steps are recorded by `labkit.flops.profile_steps` and split into communication
  and compute by `labkit.flops.comm_split`; `labkit.dist.CommCounter` counts the collective bytes.
* ``allreduce``: ``--repeats`` x ``--iters`` timed ``all_reduce`` calls of each ``--sizes`` (bytes,
  fp32), after two untimed ones, between barriers; `labkit.flops.bus_bandwidth` turns them into
  nccl-tests' algorithm and bus bandwidth.

Every rank writes one JSON result with `labkit.dist.write_result` (with the rendezvous, torch, gloo and
NCCL environment variables it saw, ``ENV_PREFIXES``); rank 0 prints one line per part.
kineto's own start/stop lines go to file descriptor 2, i.e. into torchrun's log, never the notebook.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from labkit import dist as ld
from labkit import flops

ARMS = ("reshard", "noreshard")
# the variables a worker's rendezvous and process group read (torchrun's, torch's, gloo's and NCCL's)
ENV_PREFIXES = ("MASTER_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NCCL_", "GLOO_",
                "TORCH_NCCL_", "TORCH_DISTRIBUTED_", "TORCHELASTIC_RUN_ID")


def log(w, *msg):
    if w.rank == 0:
        print(*msg, flush=True)


def profile_arm(args, w, fsdp_train, arm: str, repeat: int, trace_dir: Path) -> dict:
    """One fresh FSDP2 model: a warm-up step, then ``args.steps`` profiled steps; per-step split and bytes."""
    from labkit import env, models

    env.seed_everything(args.seed)
    model = models.build(ld.model_config(args.layers), device="cpu", seed=args.seed).to(w.device)
    fsdp_train.shard(model, reshard=arm == "reshard")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    batches = ld.rank_slice(ld.global_batches(args.seq_len, args.batch, args.seed + repeat), w.rank, w.world_size)

    def step():
        loss = model(**next(batches)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()                                              # warm-up: allocations, first all-gathers
    dist.barrier()
    counter = ld.CommCounter()
    trace = trace_dir / f"{arm}_r{repeat}_rank{w.rank}.json"
    with counter:
        prof = flops.profile_steps(step, args.steps, trace_path=trace)
    split = flops.comm_split(trace)
    marked = [e for e in prof["events"] if e.key == flops.STEP_MARK]
    out = {"steps": split, "comm_bytes_per_step": counter.total / args.steps,
           "wire_bytes_per_step": counter.wire_total / args.steps,
           "profiler_step_s": sum(e.cpu_time_total for e in marked) / 1e6,   # torch's own total of the step spans
           "comm_by_kind": {k: v / args.steps for k, v in counter.bytes.items()},
           "profiler_self_s_per_step": prof["seconds_per_step"], "trace": str(trace),
           "trace_bytes": trace.stat().st_size}
    if not args.keep_traces:
        trace.unlink()
    del model, opt
    return out


def part_profile(args, w) -> dict:
    fsdp_train = ld.script_module("fsdp_train")          # lab 07's own wrapping, by object
    trace_dir = Path(args.trace_dir or tempfile.mkdtemp(prefix="lab12_fsdp_"))
    trace_dir.mkdir(parents=True, exist_ok=True)
    out = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        for arm in ARMS:                                  # interleaved: drift in the machine's load hits both arms
            out[arm].append(profile_arm(args, w, fsdp_train, arm, repeat, trace_dir))
    if args.trace_dir is None and not args.keep_traces:
        trace_dir.rmdir()                                 # its own temporary folder, emptied by profile_arm
    shares = {arm: [sum(s["comm_s"] for s in r["steps"]) / sum(s["step_s"] for s in r["steps"]) for r in rs]
              for arm, rs in out.items()}
    log(w, "[profile] rank 0 communication share per repeat: "
        + "; ".join(f"{arm}: " + ", ".join(f"{v:.1%}" for v in vs) for arm, vs in shares.items()))
    return out


def part_allreduce(args, w) -> dict:
    out = {}
    for size in args.sizes:
        t = torch.ones(max(1, size // 4), dtype=torch.float32, device=w.device)
        for _ in range(2):
            dist.all_reduce(t)
        per_repeat = []
        for _ in range(args.repeats):
            times = []
            for _ in range(args.iters):
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(t)
                times.append(time.perf_counter() - t0)
            per_repeat.append(statistics.median(times))
        out[str(t.numel() * 4)] = per_repeat
    log(w, "[allreduce] median seconds per call, by size: "
        + ", ".join(f"{int(k):,} B: {statistics.median(v) * 1e3:.2f} ms" for k, v in out.items()))
    return out


def main():
    p = argparse.ArgumentParser()
    ld.add_run_args(p)
    p.add_argument("--only", default="profile,allreduce", help="comma-separated parts: profile, allreduce")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each arm / each all-reduce size")
    p.add_argument("--iters", type=int, default=5, help="timed all-reduce calls per repeat")
    p.add_argument("--sizes", type=int, nargs="+", default=[2**16, 2**20, 2**24], help="all-reduce sizes in bytes")
    p.add_argument("--trace-dir", default=None, help="folder for the Chrome traces (default: a temporary one)")
    p.add_argument("--keep-traces", action="store_true", help="keep every trace file (default: only their sizes)")
    args = p.parse_args()
    parts = args.only.split(",")
    w = ld.init_worker()
    torch.set_num_threads(1)
    log(w, f"world size {w.world_size}, backend {w.backend}, device {w.device}, parts {','.join(parts)}")
    result = {"rank": w.rank, "world_size": w.world_size, "backend": w.backend,
              "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}}
    if "profile" in parts:
        result["profile"] = part_profile(args, w)
    if "allreduce" in parts:
        result["allreduce"] = part_allreduce(args, w)
    ld.write_result(result)


if __name__ == "__main__":
    ld.worker_main(main)

"""FSDP2 on ONE GPU: CPU offload vs none, for a model whose training state does not fit a memory budget (lab 07).

    python -m labkit bench fsdp                        # on a GPU: writes data/results/fsdp_gpu.csv (~3 min, H100/H200)
    python -m labkit bench fsdp --quick --device cpu   # the same code path, tiny model, single gloo rank:
                                                       #   data/results/local/fsdp_cpu_quick.csv

One GPU is one rank, so sharding itself saves nothing here (world size 1):
what one GPU *can* show is CPU offload. We cap the process at ``--budget-gb``
of GPU memory (`torch.cuda.set_per_process_memory_fraction`) and train a
Llama-2-7B-shaped model cut to ``--layers`` layers in fp32 with AdamW
(16 bytes per parameter of state, see `labkit.dist.zero_memory`), with
FSDP2 ``fully_shard`` per layer:

* without offload, parameters, gradients and Adam states live on the GPU:
  the first step runs out of the budget;
* with ``CPUOffloadPolicy``, they live in (pinned) host memory; the GPU holds
  one layer's unsharded weights at a time plus activations, and the optimizer
  step runs on the CPU -- it fits, and the table shows what it costs in time.

Multi-GPU scaling (per-GPU bytes falling as 1/N, communication per step) is
not measured here: the notebook takes it from the calculator.
"""
from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta

import torch

from .. import dist as ld
from .. import cli, env, models, results
from .. import bench as bench_cli

QUICK_NOTE = "lab-tiny (2 layers), random weights; --quick only checks that the code path runs"


def _config(layers: int, quick: bool):
    if quick:
        return models.config("lab-tiny", num_hidden_layers=2)
    return models.config("llama-2-7b", num_hidden_layers=layers)


def _init_single_rank(device: torch.device) -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(ld.backend_for(device.type), init_method=f"tcp://127.0.0.1:{ld.free_port()}",
                                rank=0, world_size=1, timeout=timedelta(seconds=120),
                                **({"device_id": device} if device.type == "cuda" else {}))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg, device: torch.device, offload: bool, steps: int, batch: int, seq_len: int) -> dict:
    """Build on the host, shard with FSDP2 (optionally offloaded), train a few AdamW steps."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    row = {"offload": offload, "fits": False, "step_s": None, "peak_gpu_gb": None, "error": ""}
    model = models.build(cfg, device="cpu", seed=0)
    row["n_params"] = models.count_params(model)
    mesh = init_device_mesh(device.type, (1,))
    kw = {"mesh": mesh}
    if offload:
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    opt = None
    try:
        for layer in model.model.layers:
            fully_shard(layer, **kw)
        fully_shard(model, **kw)
        if not offload:
            model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        ids = torch.randint(0, cfg.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0)).to(device)
        times = []
        for _ in range(steps + 1):  # the first step allocates the optimizer state: not timed
            _sync(device)
            t0 = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            times.append(time.perf_counter() - t0)
        row.update(fits=True, step_s=round(statistics.median(times[1:]), 3), loss=round(loss.item(), 4))
    except torch.OutOfMemoryError as exc:
        row["error"] = "OOM: " + str(exc).split(".")[0]
    finally:
        if device.type == "cuda":
            row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        row["optimizer_state_device"] = (str(next(iter(opt.state.values()))["exp_avg"].to_local().device)
                                         if opt is not None and opt.state else None)
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def run(layers: int = 8, budget_gb: float = 16.0, steps: int = 3, batch: int = 2, seq_len: int = 512,
        device: str = "cuda", quick: bool = False) -> list[dict]:
    device = torch.device(device)
    if device.type == "cuda":
        env.require_cuda("the FSDP offload benchmark")
        torch.cuda.set_device(device)
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gb * 1e9 / total), device)
    if quick:
        steps, batch, seq_len = 1, 2, 32
    _init_single_rank(device)
    cfg = _config(layers, quick)
    rows = []
    for offload in (False, True):
        row = measure(cfg, device, offload, steps, batch, seq_len)
        n = row["n_params"]
        row = {"model": QUICK_NOTE if quick else f"llama-2-7b shape, {layers} layers", "layers": 2 if quick else layers,
               "n_params": n, "dtype": "fp32", "budget_gb": budget_gb if device.type == "cuda" else None,
               "state_gb_needed": round(ld.zero_memory(n, 1, 3, param_bytes=4, grad_bytes=4, optimizer_bytes=8) / 1e9, 2),
               "batch_size": batch, "seq_len": seq_len, **{k: v for k, v in row.items() if k != "n_params"}}
        rows.append(row)
        print(row, flush=True)
    import torch.distributed as dist

    dist.destroy_process_group()
    return rows


def main(argv=None) -> int:
    p = bench_cli.parser("fsdp", __doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="CSV to write (default: data/results/fsdp_gpu.csv on a full GPU run, "
                                                "else data/results/local/fsdp_<device>[_quick].csv)")
    p.add_argument("--layers", type=int, default=8, help="decoder layers of the Llama-2-7B-shaped model (8: ~1.9B params)")
    p.add_argument("--budget-gb", type=float, default=16.0, help="GPU memory cap for this process")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="a tiny model and 1 step: checks the code path")
    args = bench_cli.parse(p, argv)
    path = results.bench_csv_path("fsdp", device=args.device, quick=args.quick, out=args.out)  # a bad --out stops here, before measuring
    rows = run(args.layers, args.budget_gb, args.steps, device=args.device, quick=args.quick)
    written = results.write_bench_csv("fsdp", rows, device=args.device, quick=args.quick, out=path)
    bench_cli.emit(args, "fsdp", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

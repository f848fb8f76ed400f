"""Lab 07 §4-5's torchrun job: the hand-written ZeRO-3 step against FSDP2's ``fully_shard``.

    python -m torch.distributed.run --standalone --nproc-per-node 2 labs/scripts/zero3_train.py
    # or, from a notebook:  labkit.dist.launch("zero3_train.py", 2, ["--impl", "my_zero3.py"])

The same `labkit.dist.tiny_lm` (same seed) is trained on each rank's slice of the same global
batches by up to three arms: ``impl`` (the functions of ``--impl``, e.g. the notebook's own
solution cells), ``labkit`` (`labkit.dist.zero3_step`, the canonical copy) and ``fsdp2``
(``fully_shard`` per unit). Each arm reports the global loss per step, the gradient of the first
step as this rank's flat shard, the per-rank bytes of parameters, gradients and AdamW moments,
and the collective bytes of one step. ``--mixed`` repeats everything with bf16 compute
(``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` / ``param_dtype=``).
"""
from __future__ import annotations

import argparse
import importlib.util

import torch
import torch.distributed as dist

from labkit import dist as ld

W = None


def global_mean(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / W.world_size).tolist()


def batches(args):
    for b in ld.rank_slice(ld.global_batches(args.seq_len + 1, args.batch, args.seed), W.rank, W.world_size):
        yield b["input_ids"][:, :-1], b["input_ids"][:, 1:]


def moment_bytes(opt) -> int:
    return ld.local_bytes(v for st in opt.state.values() for k, v in st.items() if k in ("exp_avg", "exp_avg_sq"))


class Snapshot:
    """An optimizer wrapper that keeps the gradients it was asked to step with (the first step's)."""

    def __init__(self, opt, params):
        self.opt, self.params, self.grads = opt, params, None

    def step(self):
        if self.grads is None:
            self.grads = [p.grad.detach().clone() for p in self.params]
        self.opt.step()

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)


def run_hand(args, impl, param_dtype):
    model = ld.tiny_lm(layers=args.layers, seed=args.seed)
    units = list(model)
    shards = [torch.nn.Parameter(impl.flat_shard(list(u.parameters()), W.rank, W.world_size)) for u in units]
    opt = torch.optim.AdamW(shards, lr=args.lr)
    snap = Snapshot(opt, shards)
    losses, comm = [], None
    for step, (x, y) in zip(range(args.steps), batches(args)):
        counter = ld.CommCounter()
        with counter:
            losses.append(float(impl.zero3_step(units, shards, snap, x, y, param_dtype=param_dtype,
                                                reduce_dtype=torch.float32 if param_dtype else None)))
        comm = comm or counter
    return {"loss": global_mean(losses), "grads": snap.grads, "params": [s.detach() for s in shards],
            "bytes": {"params": ld.local_bytes(shards), "grads": ld.local_bytes(snap.grads), "adam": moment_bytes(opt)},
            "comm": dict(comm.bytes), "wire": dict(comm.wire)}


def run_fsdp2(args, param_dtype):
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    model = ld.tiny_lm(layers=args.layers, seed=args.seed)
    kw = {"mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)} if param_dtype else {}
    for unit in model:
        fully_shard(unit, **kw)
    fully_shard(model, **kw)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    losses, grads, comm = [], None, None
    for step, (x, y) in zip(range(args.steps), batches(args)):
        counter = ld.CommCounter()
        with counter:
            loss = torch.nn.functional.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
            loss.backward()
        comm = comm or counter
        if grads is None:   # this rank's slice of each unit's flat gradient, in the hand-written layout
            grads = [ld.flat_shard([p.grad.full_tensor() for p in u.parameters()], W.rank, W.world_size) for u in model]
            local_grads = ld.local_bytes(p.grad for p in model.parameters())
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    params = [ld.flat_shard([p.full_tensor() for p in u.parameters()], W.rank, W.world_size) for u in model]
    return {"loss": global_mean(losses), "grads": grads, "params": params,
            "bytes": {"params": ld.local_bytes(model.parameters()), "grads": local_grads, "adam": moment_bytes(opt)},
            "comm": dict(comm.bytes), "wire": dict(comm.wire)}


def max_diff(a: list, b: list) -> float:
    d = torch.tensor(max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b)), dtype=torch.float64)
    dist.all_reduce(d, op=dist.ReduceOp.MAX)
    return d.item()


def check_collectives(args, n: int = 24) -> dict:
    """torch's reduce_scatter_tensor and all_reduce on this rank vs the one-process simulations
    (`labkit.dist.reduce_scatter_sim`, `ring_allreduce_sim`) fed every rank's input."""
    gen = torch.Generator().manual_seed(args.seed)
    inputs = [torch.randn(n * W.world_size, generator=gen) for _ in range(W.world_size)]
    shard = torch.empty(n)
    dist.reduce_scatter_tensor(shard, inputs[W.rank].clone())
    summed = inputs[W.rank].clone()
    dist.all_reduce(summed)
    ring, sent = ld.ring_allreduce_sim(inputs)
    d = torch.tensor([(shard - ld.reduce_scatter_sim(inputs)[W.rank]).abs().max().item(),
                      (summed - ring[W.rank]).abs().max().item()], dtype=torch.float64)
    dist.all_reduce(d, op=dist.ReduceOp.MAX)
    return {"reduce_scatter_vs_sim": d[0].item(), "all_reduce_vs_ring_sim": d[1].item(),
            "ring_sent_bytes": sent[W.rank], "tensor_bytes": inputs[0].numel() * 4}


def main():
    global W
    p = argparse.ArgumentParser()
    ld.add_run_args(p)
    p.add_argument("--impl", default=None, help="a .py file defining flat_shard and zero3_step (the notebook's)")
    p.add_argument("--mixed", action="store_true", help="also run bf16 compute / fp32 reduce")
    args = p.parse_args()
    W = ld.init_worker()
    torch.set_num_threads(1)
    impls = {"labkit": ld}
    if args.impl:
        spec = importlib.util.spec_from_file_location("notebook_zero3", args.impl)
        impls["impl"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(impls["impl"])
    result = {"rank": W.rank, "world_size": W.world_size, "collectives": check_collectives(args)}
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16))[:2 if args.mixed else 1]:
        arms = {name: run_hand(args, mod, dtype) for name, mod in impls.items()}
        arms["fsdp2"] = run_fsdp2(args, dtype)
        diffs = {}
        for a, b in (("impl", "labkit"), ("labkit", "fsdp2"), ("impl", "fsdp2")):
            if a in arms:
                diffs[f"{a} vs {b}"] = {"loss": max(abs(u - v) for u, v in zip(arms[a]["loss"], arms[b]["loss"])),
                                        "grads": max_diff(arms[a]["grads"], arms[b]["grads"]),
                                        "params": max_diff(arms[a]["params"], arms[b]["params"])}
        result[precision] = {"diffs": diffs, **{name: {k: v for k, v in arm.items() if k not in ("grads", "params")}
                                               for name, arm in arms.items()}}
        if W.rank == 0:
            print(f"[{precision}] " + "; ".join(f"{k}: max |loss diff| {v['loss']:.1e}, |grad diff| {v['grads']:.1e}"
                                                for k, v in diffs.items()), flush=True)
    ld.write_result(result)


if __name__ == "__main__":
    ld.worker_main(main)

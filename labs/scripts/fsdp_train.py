"""Lab 07's torchrun job: DDP and FSDP2 vs one process, per-rank bytes, communication, checkpoint, TP.

    python -m torch.distributed.run --standalone --nproc-per-node 2 labs/scripts/fsdp_train.py --only fsdp
    # or, from Python / a notebook:  labkit.dist.launch("fsdp_train.py", 2, [...])

Each part (``--only fsdp,noreshard,offload,ddp,ckpt,tp,tplayer,timing,sweep,optsave,optload``) runs
in the same processes, so one launch (one torchrun start-up) measures everything. ``optsave`` (on 2
ranks) and ``optload`` (on 4) are the DCP checkpoint with optimizer state resharded 2 -> 4 ranks. Every
rank writes one JSON result with `labkit.dist.write_result`; rank 0 prints.
Training always uses the shared loop `labkit.train.train`, on each rank's
slice of the same seeded global batches the single-process reference sees.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist

from labkit import dist as ld

env = models = train = None  # imported in main(), after start-up checks (transformers is slow to import)

ALL = ("fsdp", "noreshard", "offload", "ddp", "ckpt", "tp", "tplayer", "timing", "sweep")
RESHARD = ("optsave", "optload")  # run by themselves: 2 ranks save, 4 ranks load


def log(w, *msg):
    if w.rank == 0:
        print(*msg, flush=True)


def build(args):
    return models.build(ld.model_config(args.layers), device="cpu", seed=args.seed).to(W.device)


def shard(model, *, reshard=True, offload=False, mesh=None):
    """FSDP2: one unit per decoder layer, one each for the embedding and the LM head, then the root."""
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    kw = {"reshard_after_forward": reshard, "mesh": mesh}
    if offload:  # pinned host memory needs an accelerator; on a CPU-only box pin_memory must be off
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    units = [model.model.embed_tokens, *model.model.layers, model.lm_head]
    for unit in units:
        fully_shard(unit, **kw)
    fully_shard(model, **kw)
    return units


def full_bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def expected_comm(model, strategy: str) -> int:
    """The calculator's textbook volume per step (`labkit.dist.comm_volume`) for this model's
    parameters in their own dtype -- what the lab holds the measured collective bytes against."""
    params = list(model.parameters())
    return int(ld.comm_volume(sum(p.numel() for p in params), strategy, bytes_per_elem=params[0].element_size()))


def resident_param_bytes(model) -> int:
    """Bytes of parameter storage this rank holds right now (sharded DTensor -> local shard;
    an unsharded parameter, as FSDP2 registers between all-gather and reshard, -> full)."""
    seen, total = set(), 0
    for p in model.parameters():
        t = p.to_local() if hasattr(p, "to_local") else p
        if t.untyped_storage().data_ptr() in seen:
            continue
        seen.add(t.untyped_storage().data_ptr())
        total += t.untyped_storage().nbytes()
    return total


def measure_step(model, optimizer, batch):
    """One forward/backward/step, measuring bytes held between forward and backward, grads, states."""
    out = model(**batch)
    between = resident_param_bytes(model)
    out.loss.backward()
    grads = ld.local_bytes(p.grad for p in model.parameters())
    optimizer.step()
    opt = ld.optimizer_bytes(optimizer)
    optimizer.zero_grad(set_to_none=True)
    return {"param_bytes": ld.local_bytes(model.parameters()), "grad_bytes": grads, "optimizer_bytes": opt,
            "resident_between_fwd_bwd": between}


def global_losses(local: list[float]) -> list[float]:
    """Each rank's loss is the mean over its slice; equal slices -> the global mean is their average."""
    t = torch.tensor(local, dtype=torch.float64, device=W.device)
    dist.all_reduce(t)
    return (t / W.world_size).tolist()


def run_training(args, model, label):
    """Train with the shared loop on this rank's slice; count collectives; return per-step numbers."""
    cfg = train.TrainConfig(steps=args.steps, lr=args.lr, schedule="constant", progress=False, desc=label)
    batches = ld.rank_slice(ld.global_batches(args.seq_len, args.batch, args.seed), W.rank, W.world_size)
    counter = ld.CommCounter()
    dist.barrier()
    with counter:
        hist = train.train(model, batches, cfg)
    losses = global_losses(hist.loss)
    log(W, f"[{label}] loss per step: " + ", ".join(f"{x:.4f}" for x in losses)
        + f" | {hist.seconds / args.steps * 1e3:.0f} ms/step")
    return {"loss": losses, "step_s": hist.seconds / args.steps,
            "comm_bytes_per_step": counter.total / args.steps,
            "comm_by_kind": {k: v / args.steps for k, v in counter.bytes.items()},
            "comm_calls_per_step": {k: v / args.steps for k, v in counter.calls.items()}}


def part_fsdp(args, reshard=True, offload=False, label="fsdp"):
    env.seed_everything(args.seed)
    model = build(args)
    n_params = models.count_params(model)
    full = full_bytes(model.parameters())
    shard(model, reshard=reshard, offload=offload)
    res = run_training(args, model, label)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)  # a fresh optimizer, only to measure its state
    probe = next(ld.rank_slice(ld.global_batches(args.seq_len, args.batch, args.seed + 1), W.rank, W.world_size))
    res.update(measure_step(model, opt, probe))
    res.update({"n_params": n_params, "full_param_bytes": full, "reshard_after_forward": reshard,
                "offload": offload, "expected_comm_bytes_per_step": expected_comm(model, "fsdp" if reshard else "fsdp-no-reshard"),
                "shard_device": str(next(model.parameters()).to_local().device),
                "placements": str(next(model.parameters()).placements)})
    return res, model


def part_ddp(args):
    from torch.nn.parallel import DistributedDataParallel as DDP

    env.seed_everything(args.seed)
    model = build(args)
    full, expected = full_bytes(model.parameters()), expected_comm(model, "ddp")
    ddp = DDP(model)
    ld.count_ddp(ddp)
    res = run_training(args, ddp, "ddp")
    opt = torch.optim.AdamW(ddp.parameters(), lr=args.lr)
    probe = next(ld.rank_slice(ld.global_batches(args.seq_len, args.batch, args.seed + 1), W.rank, W.world_size))
    res.update(measure_step(ddp, opt, probe))
    res.update({"full_param_bytes": full, "expected_comm_bytes_per_step": expected})
    return res


def part_ckpt(args, model):
    """Save the sharded model with torch.distributed.checkpoint (each rank writes its own shard as
    safetensors), and the sharded model's logits on a probe batch for the reload check."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    sd = get_model_state_dict(model)
    t0 = time.perf_counter()
    dcp.save(sd, storage_writer=HuggingFaceStorageWriter(args.ckpt_dir, save_distributed=True))
    seconds = time.perf_counter() - t0
    probe = next(ld.global_batches(args.seq_len, args.batch, args.seed + 2))["input_ids"]
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=probe.to(W.device)).logits.float().cpu()  # every rank: the full output
    if W.rank == 0:
        save_file({"input_ids": probe.contiguous(), "logits": logits.contiguous()}, f"{args.ckpt_dir}/probe.safetensors")
    dist.barrier()
    local = ld.local_bytes(sd.values())
    log(W, f"[ckpt] saved sharded state dict ({local:,} bytes on rank 0) in {seconds * 1e3:.0f} ms")
    return {"dir": args.ckpt_dir, "save_s": seconds, "local_state_bytes": local}


def part_tp(args):
    """Column- then row-parallel Llama MLP from scratch vs the single-device MLP, and vs torch's TP."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    from transformers.models.llama.modeling_llama import LlamaMLP

    cfg = ld.model_config(args.layers)
    torch.manual_seed(args.seed)
    mlp = LlamaMLP(cfg).to(W.device)
    x = torch.randn(2, args.seq_len, cfg.hidden_size, device=W.device)
    with torch.no_grad():
        ref = mlp(x)
        counter = ld.CommCounter()
        with counter:
            y = ld.tp_mlp_forward(mlp, x, W.rank, W.world_size)
        ours = (y - ref).abs().max().item()
        mesh = init_device_mesh(W.device.type, (W.world_size,))
        lib = parallelize_module(mlp, mesh, {"gate_proj": ColwiseParallel(), "up_proj": ColwiseParallel(),
                                             "down_proj": RowwiseParallel()})
        y_lib = lib(x)
        y_lib = y_lib.full_tensor() if hasattr(y_lib, "full_tensor") else y_lib
        vs_lib = (y_lib - y).abs().max().item()
    log(W, f"[tp] from-scratch TP MLP vs one device: max |diff| {ours:.2e}; vs torch parallelize_module {vs_lib:.2e}")
    return {"max_abs_diff": ours, "max_abs_diff_vs_torch": vs_lib, "comm_bytes": counter.total,
            "output_bytes": ref.numel() * ref.element_size(),
            "local_weight_bytes": sum(w.numel() * w.element_size() for w in
                                      (mlp.gate_proj.weight.to_local(), mlp.up_proj.weight.to_local(),
                                       mlp.down_proj.weight.to_local())),
            "full_weight_bytes": 3 * cfg.hidden_size * cfg.intermediate_size * 4}


def part_tplayer(args):
    """A whole Llama decoder layer under torch's tensor-parallel plan (q/k/v and gate/up column-,
    o and down row-parallel), its collectives counted by torch's own CommDebugMode: two all-reduces
    per layer in forward (attention, then MLP); in backward torch issues one per column-parallel
    matrix (Megatron-LM's fused scheme needs two)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    cfg = ld.model_config(1)
    torch.manual_seed(args.seed)
    model = models.build(cfg, device="cpu", seed=args.seed)
    ids = next(ld.global_batches(args.seq_len, 2, args.seed))["input_ids"]
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    mesh = init_device_mesh(W.device.type, (W.world_size,))
    plan = {f"self_attn.{n}": ColwiseParallel() for n in ("q_proj", "k_proj", "v_proj")}
    plan.update({"self_attn.o_proj": RowwiseParallel(), "mlp.gate_proj": ColwiseParallel(),
                 "mlp.up_proj": ColwiseParallel(), "mlp.down_proj": RowwiseParallel()})
    parallelize_module(model.model.layers[0], mesh, plan)
    fwd, bwd = CommDebugMode(), CommDebugMode()
    with fwd:
        logits = model(input_ids=ids).logits
    with bwd:
        logits.float().square().mean().backward()
    counts = {mode: {str(k).split(".")[-1]: v for k, v in m.get_comm_counts().items()} for mode, m in
              (("forward", fwd), ("backward", bwd))}
    diff = (logits.detach() - ref).abs().max().item()
    log(W, f"[tplayer] one TP decoder layer: collectives {counts}; logits vs one device max |diff| {diff:.1e}")
    return {"counts": counts, "max_abs_diff": diff}


def part_timing(args):
    """Step time of FSDP2 (ZeRO-3) and FSDP2 + CPUOffloadPolicy, interleaved, ``--repeats`` times:
    each repeat is a fresh model trained ``--steps`` steps; its median step (after the first) is kept."""
    out = {"fsdp": [], "offload": []}
    for rep in range(args.repeats):
        for arm in ("fsdp", "offload"):
            env.seed_everything(args.seed)
            model = build(args)
            shard(model, offload=arm == "offload")
            opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
            times = []
            batches = ld.rank_slice(ld.global_batches(args.seq_len, args.batch, args.seed + rep), W.rank, W.world_size)
            for _, batch in zip(range(args.steps), batches):
                dist.barrier()
                t0 = time.perf_counter()
                model(**batch).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - t0)
            t = torch.tensor(sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)   # a step is as slow as its slowest rank
            out[arm].append(t.item())
            del model, opt
    log(W, "[timing] median s/step per repeat: " + "; ".join(f"{k}: " + ", ".join(f"{v:.3f}" for v in vs)
                                                            for k, vs in out.items()))
    return out


def _train_steps(model, opt, batches, steps):
    losses = []
    for _, batch in zip(range(steps), batches):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return global_losses(losses)


def _full_moments(model, opt) -> dict:
    """{parameter name: full exp_avg} on every rank (an all-gather of each DTensor moment)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: st["exp_avg"].full_tensor() for p, st in opt.state.items()}


def part_optsave(args):
    """2 ranks: train ``steps`` steps, save model + AdamW state with DCP, then train 2 more steps
    (the losses the 4-rank resume must reproduce)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    env.seed_everything(args.seed)
    model = build(args)
    shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    batches = ld.global_batches(args.seq_len, args.batch, args.seed)
    mine = ld.rank_slice(batches, W.rank, W.world_size)
    before = _train_steps(model, opt, mine, args.steps)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=args.optim_dir)
    moments = _full_moments(model, opt)
    if W.rank == 0:
        torch.save(moments, f"{args.optim_dir}/moments_full.pt")
    after = _train_steps(model, opt, mine, 2)
    log(W, f"[optsave] {W.world_size} ranks saved model + AdamW state after {args.steps} steps; next losses "
        + ", ".join(f"{x:.6f}" for x in after))
    return {"losses": before, "next": after,
            "adam_bytes_per_rank": ld.optimizer_bytes(opt)}


def part_optload(args):
    """4 ranks: a fresh FSDP2 model + AdamW, load the 2-rank checkpoint into them (DCP reshards),
    compare the full moments with the saved ones, train the same 2 next steps."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    env.seed_everything(args.seed + 1)   # a different init: only the checkpoint can make it right
    model = build(args)
    shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    msd, osd = get_state_dict(model, opt)   # allocates the optimizer state (sharded 4 ways) to load into
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=args.optim_dir)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    saved = torch.load(f"{args.optim_dir}/moments_full.pt")
    moment_diff = max((v - saved[k]).abs().max().item() for k, v in _full_moments(model, opt).items())
    batches = ld.global_batches(args.seq_len, args.batch, args.seed)
    for _ in range(args.steps):     # the batches the 2-rank run already trained on
        next(batches)
    after = _train_steps(model, opt, ld.rank_slice(batches, W.rank, W.world_size), 2)
    log(W, f"[optload] {W.world_size} ranks loaded it: max |exp_avg diff| {moment_diff:.1e}; next losses "
        + ", ".join(f"{x:.6f}" for x in after))
    return {"next": after, "moment_diff": moment_diff, "adam_bytes_per_rank": ld.optimizer_bytes(opt),
            "local_param_bytes": ld.local_bytes(model.parameters())}


def part_sweep(args):
    """Per-rank bytes for N = 1, 2, 4, ... ranks in one job: FSDP2 over a sub-group of the first N ranks."""
    from torch.distributed.device_mesh import DeviceMesh

    out = {}
    n = 1
    while n <= W.world_size:
        group = dist.new_group(list(range(n))) if n < W.world_size else dist.group.WORLD  # every rank calls new_group
        if W.rank < n:
            env.seed_everything(args.seed)
            model = build(args)
            shard(model, mesh=DeviceMesh.from_group(group, W.device.type))
            opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
            batch = next(ld.global_batches(args.seq_len, n, args.seed))  # one sequence per rank: sizes only
            batch = {k: v[W.rank:W.rank + 1] for k, v in batch.items()}
            out[str(n)] = measure_step(model, opt, batch)
            del model, opt
        dist.barrier()
        n *= 2
    log(W, "[sweep] param bytes on rank 0: " + ", ".join(f"N={k}: {v['param_bytes']:,}" for k, v in out.items()))
    return out


def main():
    global W, env, models, train
    p = argparse.ArgumentParser()
    ld.add_run_args(p)
    p.add_argument("--only", default=",".join(ALL), help="comma-separated parts: " + ",".join(ALL + RESHARD))
    p.add_argument("--ckpt-dir", default=None)
    p.add_argument("--optim-dir", default=None, help="folder of the model + AdamW DCP checkpoint (optsave/optload)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the timing part")
    p.add_argument("--tag", default="", help="(tests) a marker to find this job's processes")
    p.add_argument("--fail-rank", type=int, default=None, help="(tests) this rank raises after start-up")
    args = p.parse_args()
    parts = args.only.split(",")
    W = ld.init_worker()
    torch.set_num_threads(1)
    if args.fail_rank == W.rank:
        raise RuntimeError(f"deliberate failure on rank {W.rank} (--fail-rank)")
    from labkit import env, models, train  # noqa: F811

    log(W, f"world size {W.world_size}, backend {W.backend}, device {W.device}, parts {','.join(parts)}")
    result = {"rank": W.rank, "world_size": W.world_size, "backend": W.backend}
    if "fsdp" in parts or "ckpt" in parts:
        result["fsdp"], model = part_fsdp(args)
        if "ckpt" in parts:
            if not args.ckpt_dir:
                raise ValueError("--only ckpt needs --ckpt-dir")
            result["ckpt"] = part_ckpt(args, model)
        del model
    if "noreshard" in parts:
        result["noreshard"], _ = part_fsdp(args, reshard=False, label="fsdp reshard_after_forward=False")
    if "offload" in parts:
        result["offload"], _ = part_fsdp(args, offload=True, label="fsdp + CPUOffloadPolicy")
    if "ddp" in parts:
        result["ddp"] = part_ddp(args)
    if "tp" in parts:
        result["tp"] = part_tp(args)
    if "tplayer" in parts:
        result["tplayer"] = part_tplayer(args)
    if "timing" in parts:
        result["timing"] = part_timing(args)
    if "sweep" in parts:
        result["sweep"] = part_sweep(args)
    for name, fn in (("optsave", part_optsave), ("optload", part_optload)):
        if name in parts:
            if not args.optim_dir:
                raise ValueError(f"--only {name} needs --optim-dir")
            result[name] = fn(args)
    ld.write_result(result)


W = None
if __name__ == "__main__":
    ld.worker_main(main)

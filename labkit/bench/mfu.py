"""MFU of a 1B-class Llama training step on this GPU, and where the step's time goes (lab 12).

    python -m labkit bench mfu            # on a GPU, a few minutes on an H100: writes data/results/mfu_gpu.csv
    python -m labkit bench mfu --quick    # on a GPU, seconds: a toy model; data/results/local/mfu_cuda_quick.csv

The model is ``--model`` (default ``llama-3.2-1b``: 16 layers, hidden 2048, 1.24B parameters, vocab 128,256)
with random weights, fp32 master weights under bf16 autocast (``bf16-mixed``), sdpa attention, AdamW
(fused when this torch has it), on random tokens. For each batch x sequence length in ``--points``, a
freshly built model takes ``--warmup`` untimed steps, then ``--steps`` timed ones; CUDA events split
every step into forward (including the loss), backward and optimizer (step + zero_grad); each phase's
median is kept. Tokens/s come from the median step; MFU (PaLM's 6N + 12·L·d·s per token,
`labkit.flops.mfu`) and HFU (the causal half of attention that sdpa computes, `labkit.flops.hfu`)
are against the bf16 dense peak of the detected GPU (`labkit.env.gpu_spec`). A point that runs out of
memory is recorded as such and the next one runs.

What holds MFU back shows in the split: at 100% MFU the optimizer would take no time and backward
twice the forward; ``opt_share`` and ``bwd_over_fwd`` say how far each phase is from that.

Tensor-core throughput is a GPU measurement: there is no CPU mode (``--device cpu`` or a machine
without CUDA stops with one line and exit code 2; lab 12 plots the committed GPU run instead).
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys

from .. import cli, results
from .. import bench as bench_cli
from ..errors import LabkitError

POINTS = ((4, 2048), (8, 2048), (16, 1024), (4, 4096))   # (batch, seq_len): 8k-32k tokens per step
QUICK = dict(points=((2, 128),), steps=2, warmup=1)
QUICK_MODEL = dict(num_hidden_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=1024)


def parse_points(text: str) -> tuple[tuple[int, int], ...]:
    """``"4x2048,8x2048"`` -> ``((4, 2048), (8, 2048))``: batch x sequence length, comma separated."""
    points = []
    for part in str(text).split(","):
        part = part.strip().lower()
        try:
            batch, seq = (int(x) for x in part.split("x"))
        except ValueError:
            raise LabkitError(f"--points: {part!r} is not BATCHxSEQ (e.g. 8x2048)") from None
        if batch < 1 or seq < 1:
            raise LabkitError(f"--points: {part!r} needs a positive batch and sequence length")
        points.append((batch, seq))
    return tuple(points)


def parser() -> argparse.ArgumentParser:
    p = bench_cli.parser("mfu", __doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="CSV to write (default data/results/mfu_gpu.csv on a full GPU run; "
                                                "data/results/local/ with --quick)")
    p.add_argument("--model", default="llama-3.2-1b", help="a labkit model name (default llama-3.2-1b)")
    p.add_argument("--points", type=parse_points, default=POINTS,
                   help="batch x sequence length points, e.g. 4x2048,8x2048 (default "
                        + ",".join(f"{b}x{s}" for b, s in POINTS) + ")")
    p.add_argument("--steps", type=int, default=10, help="timed steps per point (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--device", default="cuda", help="cuda (the only device this benchmark measures)")
    p.add_argument("--quick", action="store_true", help="a toy model, one point, 2 steps: checks the code path")
    return p


def check_cuda(device: str) -> None:
    """Stop with one line unless ``device`` is CUDA and a CUDA GPU is visible."""
    import torch

    if torch.device(device).type != "cuda":
        raise LabkitError("the MFU benchmark measures a GPU's tensor cores and has no CPU mode; run it on a GPU "
                          "machine, or see data/results/mfu_gpu.csv (lab 12 plots it)")
    if not torch.cuda.is_available():
        raise LabkitError("the MFU benchmark needs an NVIDIA GPU and none is visible here; run it on a GPU machine, "
                          "or see data/results/mfu_gpu.csv (lab 12 plots it)")


def measure(cfg, batch: int, seq_len: int, steps: int, warmup: int, peak_flops: float, device: str = "cuda") -> dict:
    """One point: a fresh model, ``warmup`` + ``steps`` bf16-mixed AdamW steps, phases timed with CUDA events."""
    import torch

    from .. import flops, models

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    row = {"batch": batch, "seq_len": seq_len, "tokens_per_step": batch * seq_len}
    model = opt = None
    try:
        model = models.build(cfg, device=device, seed=0, attn_implementation="sdpa")
        model.config.use_cache = False
        model.train()
        try:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        except (TypeError, RuntimeError):
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        gen = torch.Generator(device=device).manual_seed(0)
        phases = {"fwd": [], "bwd": [], "opt": []}
        for i in range(warmup + steps):
            ids = torch.randint(0, cfg.vocab_size, (batch, seq_len), device=device, generator=gen)
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            ev[0].record()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            ev[1].record()
            loss.backward()
            ev[2].record()
            opt.step()
            opt.zero_grad(set_to_none=True)
            ev[3].record()
            torch.cuda.synchronize()
            if i >= warmup:
                for k, (a, b) in zip(phases, zip(ev, ev[1:])):
                    phases[k].append(a.elapsed_time(b) / 1e3)
    except torch.cuda.OutOfMemoryError:
        del model, opt
        gc.collect()
        torch.cuda.empty_cache()
        return {**row, "status": "out of memory"}
    steps_s = [sum(t) for t in zip(*phases.values())]
    step_s = statistics.median(steps_s)
    med = {k: statistics.median(v) for k, v in phases.items()}
    tps = batch * seq_len / step_s
    row.update({
        "status": "ok", "step_ms": round(1e3 * step_s, 2), "step_ms_min": round(1e3 * min(steps_s), 2),
        "step_ms_max": round(1e3 * max(steps_s), 2),
        "fwd_ms": round(1e3 * med["fwd"], 2), "bwd_ms": round(1e3 * med["bwd"], 2), "opt_ms": round(1e3 * med["opt"], 2),
        "fwd_share": round(med["fwd"] / step_s, 4), "bwd_share": round(med["bwd"] / step_s, 4),
        "opt_share": round(med["opt"] / step_s, 4), "bwd_over_fwd": round(med["bwd"] / med["fwd"], 3),
        "tokens_per_s": round(tps), "mfu": float(f"{flops.mfu(tps, cfg, seq_len, peak_flops):.4g}"),  # 4 significant digits, not 4 decimals
        "hfu": round(flops.hfu(tps, cfg, seq_len, peak_flops, attn_implementation="sdpa"), 4),
        "model_tflops": round(tps * flops.flops_per_token(cfg, seq_len, attn_implementation="eager") / 1e12, 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "final_loss": round(loss.item(), 4),
    })
    del model, opt, loss
    gc.collect()
    return row


def run(model: str = "llama-3.2-1b", points=POINTS, steps: int = 10, warmup: int = 3, quick: bool = False,
        device: str = "cuda") -> list[dict]:
    from .. import env, models

    check_cuda(device)
    spec = env.gpu_spec()
    if spec is None or not spec.bf16:
        raise LabkitError(f"no bf16 peak known for {env.info()['gpu']['name']!r}; add it to labkit.env.GPU_SPECS "
                          "(MFU needs the denominator)")
    if quick:
        points, steps, warmup = QUICK["points"], QUICK["steps"], QUICK["warmup"]
    cfg = models.config(model, **(QUICK_MODEL if quick else {}))
    label = model + (" (quick toy)" if quick else "")
    rows = []
    for batch, seq in points:
        row = {"model": label, "precision": "bf16-mixed", "attn": "sdpa", "gpu": spec.name,
               "peak_tflops": spec.bf16, **measure(cfg, batch, seq, steps, warmup, spec.bf16 * 1e12, device)}
        rows.append(row)
        print({k: row.get(k) for k in ("batch", "seq_len", "status", "step_ms", "tokens_per_s", "mfu", "opt_share",
                                       "peak_mem_gib")}, flush=True)
    return rows


def main(argv=None) -> int:
    args = bench_cli.parse(parser(), argv)
    check_cuda(args.device)                    # before anything is imported or measured
    path = results.bench_csv_path("mfu", device=args.device, quick=args.quick, out=args.out)  # a bad --out stops here
    rows = run(args.model, args.points, args.steps, args.warmup, args.quick, args.device)
    written = results.write_bench_csv("mfu", rows, device=args.device, quick=args.quick, out=path)
    bench_cli.emit(args, "mfu", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

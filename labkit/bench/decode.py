"""Decode speed and memory of one model in bf16, int8 and NF4 on a GPU (lab 10, section 7).

    python -m labkit bench decode                         # on a GPU: writes data/results/decode_gpu.csv
    python -m labkit bench decode --quick --device cpu    # the same code path, tiny model, no GPU:
                                                          #   data/results/local/decode_cpu_quick.csv

Llama-3.2-1B's architecture (`labkit.models.config("llama-3.2-1b")`) with random weights -- speed
and memory do not depend on the values. For each base (bf16; LLM.int8 = ``bnb.nn.Linear8bitLt``;
NF4 = ``bnb.nn.Linear4bit`` with bf16 compute) it times prefill (one forward over the prompt) and
decode (``labkit.decoding.generate``, greedy, its own KV cache) at batch 1 and 8, and reads the
CUDA caching allocator around it: ``memory_allocated`` (tensors alive) and ``memory_reserved``
(what the allocator keeps from the driver) before, at the peak, after generation and after
``torch.cuda.empty_cache()`` -- the numbers behind "why does memory stay occupied" (INF-01).
"""
from __future__ import annotations

import gc
import sys
import time

import torch

from .. import cli, decoding, env, models, quant, results
from .. import bench as bench_cli
from ..errors import LabkitError
from .qlora import _quantize_int8

BASES = ("bf16", "int8", "nf4")
FULL = dict(model="llama-3.2-1b", batches=(1, 8), prompt=128, new=128, repeats=3)
QUICK = dict(model="lab-tiny", batches=(1, 2), prompt=16, new=8, repeats=1)


def build(cfg, base: str, device: torch.device):
    """Random-weight model in bf16 on ``device`` with its decoder linears as ``base``."""
    if base not in BASES:
        raise LabkitError(f"unknown base {base!r}; use one of {', '.join(BASES)}")
    model = models.build(cfg, device=device, dtype=torch.bfloat16, seed=0).eval()
    if base == "nf4":
        quant.quantize_model(model, backend="bnb", compute_dtype=torch.bfloat16)
    elif base == "int8":
        _quantize_int8(model)
    return model


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _mem(device) -> dict:
    if device.type != "cuda":
        return {"allocated_gb": None, "reserved_gb": None}
    return {"allocated_gb": torch.cuda.memory_allocated() / 1e9, "reserved_gb": torch.cuda.memory_reserved() / 1e9}


@torch.no_grad()
def measure(model, base: str, batch: int, prompt: int, new: int, repeats: int, device: torch.device) -> dict:
    """Median prefill and decode times over ``repeats``, and the allocator around one generation."""
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), device=device,
                        generator=torch.Generator(device=device).manual_seed(0))
    decoding.generate(model, ids[:, :8], 2)                         # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before = _mem(device)
    prefill, total = [], []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        decoding.forward_logits(model, ids, decoding.KVCache(model.config.num_hidden_layers))
        _sync(device)
        prefill.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decoding.generate(model, ids, new)
        _sync(device)
        total.append(time.perf_counter() - t0)
    after = _mem(device)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    emptied = _mem(device)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    decode_s = max(med(total) - med(prefill), 1e-9)
    return {"base": base, "batch": batch, "prompt_tokens": prompt, "new_tokens": new,
            "prefill_tokens_per_s": batch * prompt / med(prefill), "decode_tokens_per_s": batch * new / decode_s,
            "decode_ms_per_step": 1e3 * decode_s / new, "weight_gb": quant.model_nbytes(model) / 1e9,
            "allocated_before_gb": before["allocated_gb"], "peak_allocated_gb": peak,
            "allocated_after_gb": after["allocated_gb"], "reserved_after_gb": after["reserved_gb"],
            "reserved_after_empty_cache_gb": emptied["reserved_gb"], "repeats": repeats}


def run(sizes: dict, device: torch.device, bases=BASES) -> list[dict]:
    cfg = models.config(sizes["model"])
    rows = []
    for base in bases:
        model = build(cfg, base, device)
        for batch in sizes["batches"]:
            row = measure(model, base, batch, sizes["prompt"], sizes["new"], sizes["repeats"], device)
            rows.append({"model": sizes["model"], **row})
            print(f"{base:>5} batch {batch}: prefill {row['prefill_tokens_per_s']:,.0f} tok/s, decode "
                  f"{row['decode_tokens_per_s']:,.1f} tok/s ({row['decode_ms_per_step']:.2f} ms/step), "
                  f"weights {row['weight_gb']:.3f} GB", flush=True)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    p = bench_cli.parser("decode", __doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="lab-tiny and a few tokens (tests the code path)")
    p.add_argument("--bases", default=",".join(BASES), help="comma-separated subset of " + ", ".join(BASES))
    p.add_argument("--out", default=None, help="CSV path (default: data/results/decode_gpu.csv on a full GPU run)")
    args = bench_cli.parse(p, argv)
    bases = tuple(b for b in args.bases.split(",") if b)
    bad = [b for b in bases if b not in BASES]
    if bad:
        raise LabkitError(f"unknown base {bad[0]!r}; use some of {', '.join(BASES)}")
    path = results.bench_csv_path("decode", device=args.device, quick=args.quick, out=args.out)
    if args.device == "cuda":
        env.require_cuda("labkit.bench.decode")
    device = torch.device(args.device)
    sizes = QUICK if args.quick else FULL
    rows = run(sizes, device, bases)
    meta = results.run_metadata("python -m labkit.bench.decode " + " ".join(argv or sys.argv[1:]))
    written = results.write_bench_csv("decode", rows, device=device, quick=args.quick, out=path, metadata=meta)
    bench_cli.emit(args, "decode", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

"""LoRA training-step speed and peak memory: labkit.lora vs peft on real architectures (lab 04).

    python -m labkit bench lora                          # on a GPU: writes data/results/lora_gpu.csv (~2 min, H100)
    python -m labkit bench lora --quick --device cpu     # the same code path, tiny model, no GPU:
                                                         #   data/results/local/lora_cpu_quick.csv

For each model (random weights, bf16, built with `labkit.models.build`) and each
target set (q,v and all-linear), it injects LoRA with labkit and with peft in
turn into the *same* model, trains a few AdamW steps on random tokens, and
records the median step time, tokens/s and `torch.cuda.max_memory_allocated`.
Adapters are fp32 in both (peft's default `autocast_adapter_dtype=True`).
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from .. import cli, env, lora, models, results
from .. import bench as bench_cli

TARGETS = {"q,v": ("q_proj", "v_proj"), "all-linear": "all-linear"}
DEFAULT_MODELS = ("llama-3.2-1b", "llama-2-7b")
# batch x seq per model: big enough to keep an H100 busy, small enough to run in seconds
SHAPES = {"llama-3.2-1b": (8, 1024), "llama-2-7b": (4, 1024)}
QUICK_MODEL = "lab-tiny (2 layers, hidden 64)"  # random weights; --quick only checks that the code path runs


def _quick_config():
    return models.config("lab-tiny", vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, head_dim=16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _with_peft(model, r: int, alpha: float, targets):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                     target_modules=list(targets) if not isinstance(targets, str) else targets)
    wrapped = get_peft_model(model, cfg)
    return wrapped, lambda: _peft_unload(wrapped)


def _peft_unload(wrapped):
    base = wrapped.unload()  # plain layers back, not merged
    if hasattr(base, "peft_config"):
        del base.peft_config
    return base


def _with_labkit(model, r: int, alpha: float, targets):
    lora.inject_lora(model, r=r, alpha=alpha, target_modules=targets)
    return model, lambda: lora.unload_lora(model)


def measure(model, batch: dict, steps: int, warmup: int, *, lr: float = 1e-4, autocast_dtype=None) -> dict:
    """Median seconds per AdamW step over ``steps`` timed steps, and the peak CUDA memory.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward under `torch.autocast`; the
    PEFT-family bench (`labkit.bench.peft`) times its methods with this same loop."""
    device = batch["input_ids"].device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    del opt
    return {"step_s": statistics.median(times), "peak_bytes": peak,
            "trainable_params": sum(p.numel() for p in params), "loss": loss.item()}


def run(model_names=DEFAULT_MODELS, r: int = 16, alpha: float = 32, steps: int = 10, warmup: int = 3,
        repeats: int = 2, device: str = "cuda", quick: bool = False) -> list[dict]:
    device = torch.device(device)
    if device.type == "cuda":
        env.require_cuda("the LoRA benchmark")
    if quick:
        model_names, steps, warmup, repeats = (QUICK_MODEL,), 2, 1, 1
    rows = []
    for name in model_names:
        batch_size, seq_len = (2, 64) if quick else SHAPES.get(name, (4, 1024))
        dtype = torch.bfloat16 if env.supports_bf16(device) else torch.float16
        model = models.build(_quick_config() if quick else name, device=device, dtype=dtype)
        for p in model.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=g).to(device)
        batch = {"input_ids": ids, "labels": ids}
        for tname, targets in TARGETS.items():
            best: dict[str, dict] = {}
            for rep in range(repeats):
                order = ("peft", "labkit") if rep % 2 == 0 else ("labkit", "peft")
                for impl in order:
                    torch.manual_seed(0)
                    wrapped, undo = (_with_peft if impl == "peft" else _with_labkit)(model, r, alpha, targets)
                    m = measure(wrapped, batch, steps, warmup)
                    model = undo()
                    if impl not in best or m["step_s"] < best[impl]["step_s"]:
                        best[impl] = m
            for impl in ("peft", "labkit"):
                m = best[impl]
                rows.append({
                    "model": name, "targets": tname, "impl": impl, "r": r, "alpha": alpha,
                    "batch_size": batch_size, "seq_len": seq_len, "dtype": str(dtype).split(".")[-1],
                    "trainable_params": m["trainable_params"], "step_ms": round(1000 * m["step_s"], 2),
                    "tokens_per_s": round(batch_size * seq_len / m["step_s"]),
                    "peak_mem_gb": None if m["peak_bytes"] is None else round(m["peak_bytes"] / 1e9, 3),
                    "throughput_vs_peft": round(best["peft"]["step_s"] / m["step_s"], 3),
                })
                print(rows[-1], flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    p = bench_cli.parser("lora", __doc__.splitlines()[0])
    p.add_argument("--out", default=None,
                   help="CSV to write (default: data/results/lora_gpu.csv on a full GPU run, else "
                        "data/results/local/lora_<device>[_quick].csv)")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=models.names())
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="a tiny random model and 2 steps: checks the code path")
    args = bench_cli.parse(p, argv)
    path = results.bench_csv_path("lora", device=args.device, quick=args.quick, out=args.out)  # a bad --out stops here, before measuring
    rows = run(args.models, r=args.r, alpha=args.alpha, steps=args.steps, device=args.device, quick=args.quick)
    written = results.write_bench_csv("lora", rows, device=args.device, quick=args.quick, out=path)
    bench_cli.emit(args, "lora", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

"""Training-step time and peak memory per precision on a GPU (lab 02).

    python -m labkit bench precision                        # GPU: about 1 min on an H100; data/results/precision_gpu.csv
    python -m labkit bench precision --quick --device cpu   # seconds: checks the code path;
                                                            #   data/results/local/precision_cpu_quick.csv

The model is a stack of Llama-2-7B-shaped decoder layers (hidden 4096, MLP
11008, 32 heads, vocab 32000; 4 layers by default, ~1.07B parameters) with
random weights (batch 16 x 1024 tokens by default), trained by the shared `labkit.train.train` loop with AdamW on
random tokens. Each configuration gets a freshly built model, ``--warmup``
untimed steps, then ``--steps`` timed steps (median step time); peak memory is
``torch.cuda.max_memory_allocated()`` over the whole run (weights, gradients,
AdamW states and activations).

Configurations: fp32 (tf32 off), tf32 (fp32 weights, tensor-core matmuls),
bf16-mixed and fp16-mixed (autocast; fp16 with torch's GradScaler, with the
from-scratch `labkit.precision.DynamicLossScaler`, and with no loss scaling at
all: the arm lab 02, section 7 shows failing), and pure bf16 weights.
Each row also records the fastest and slowest timed step (the spread behind the
median) and, for the loss-scaled arms, how the scaler checks for inf/NaN
(``inf_check``: "fused" = one ``torch._amp_foreach_non_finite_check_and_unscale_``
per device and dtype; rows written before that column existed were measured
with labkit's earlier per-tensor ``torch.isfinite(g).all()``).
"""
from __future__ import annotations

import sys
import gc
import statistics
import time

import torch

from .. import cli, env, models, results, train
from .. import bench as bench_cli
from ..errors import LabkitError
from ..precision import DynamicLossScaler

# name -> (TrainConfig precision, allow tf32, loss scaler)
CONFIGS = {
    "fp32": ("fp32", False, None),
    "tf32": ("fp32", True, None),
    "bf16-mixed": ("bf16-mixed", False, None),
    "fp16-mixed": ("fp16-mixed", False, "torch"),
    "fp16-mixed (labkit scaler)": ("fp16-mixed", False, "labkit"),
    "fp16-mixed (no loss scaling)": ("fp16-mixed", False, "off"),
    "bf16 (pure)": ("bf16", False, None),
}
QUICK = dict(layers=2, batch_size=2, seq_len=32, steps=2, warmup=1)


def model_config(layers: int, quick: bool = False):
    if quick:   # a lab-tiny-shaped toy: only the code path is being tested
        return models.config("lab-tiny", num_hidden_layers=layers, hidden_size=64, intermediate_size=128,
                             num_attention_heads=4, num_key_value_heads=4, vocab_size=256)
    return models.config("llama-2-7b", num_hidden_layers=layers)


def sizes_for(dev: torch.device) -> dict:
    """Default model and batch for this card: the 80 GB setting, scaled down to fit smaller GPUs
    (fp32 + AdamW keeps 16 bytes per parameter before any activation)."""
    if dev.type != "cuda":
        return dict(layers=4, batch_size=16)
    gib = torch.cuda.get_device_properties(dev).total_memory / 2**30
    if gib >= 70:
        return dict(layers=4, batch_size=16)     # ~42 GB peak in fp32 (H100 80GB)
    if gib >= 35:
        return dict(layers=4, batch_size=4)
    if gib >= 20:
        return dict(layers=2, batch_size=2)
    return dict(layers=1, batch_size=2)          # T4 16GB


def _set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, cfg, dev: torch.device, batch_size: int, seq_len: int, steps: int, warmup: int) -> dict:
    """Train one configuration for warmup + steps steps; return its row."""
    precision, tf32, scaler_kind = CONFIGS[name]
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = models.build(cfg, device=dev, seed=0, dtype=torch.bfloat16 if precision == "bf16" else None)
    n_params = models.count_params(model)
    scaler = {"torch": lambda: torch.amp.GradScaler(dev.type), "labkit": DynamicLossScaler,
              "off": lambda: torch.amp.GradScaler(dev.type, enabled=False),   # scale 1: a no-op scaler
              None: lambda: None}[scaler_kind]()
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            x = torch.randint(0, cfg.vocab_size, (batch_size, seq_len), generator=gen).to(dev)
            yield {"input_ids": x, "labels": x}

    stamps = []

    def tick(step, model, history):
        _sync(dev)
        stamps.append(time.perf_counter())

    _set_tf32(tf32)
    try:
        _sync(dev)
        start = time.perf_counter()
        tcfg = train.TrainConfig(steps=warmup + steps, lr=1e-5, precision=precision, progress=False)
        history = train.train(model, batches(), tcfg, scaler=scaler, callback=tick)
    finally:
        _set_tf32(False)
    times = [b - a for a, b in zip([start] + stamps, stamps)][warmup:]
    step_s = statistics.median(times)
    tokens = batch_size * seq_len
    row = {
        "config": name, "precision": precision, "tf32": tf32, "scaler": scaler_kind or "",
        "layers": cfg.num_hidden_layers, "params": n_params, "batch_size": batch_size, "seq_len": seq_len,
        "step_ms": round(1000 * step_s, 2),
        "step_ms_min": round(1000 * min(times), 2),
        "step_ms_max": round(1000 * max(times), 2),
        "inf_check": "fused" if scaler_kind in ("torch", "labkit") else "",
        "tokens_per_s": round(tokens / step_s),
        # 6 N T: forward 2NT + backward 4NT (attention's own FLOPs left out)
        "model_tflops": round(6 * n_params * tokens / step_s / 1e12, 1),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if dev.type == "cuda" else None,
        "final_loss": round(history.loss[-1], 4),
        "skipped_steps": history.skipped_steps,
    }
    del model, scaler, history
    gc.collect()
    return row


def run(*, layers: int | None = None, batch_size: int | None = None, seq_len: int = 1024, steps: int = 8,
        warmup: int = 3, quick: bool = False, device: str | None = None, configs=None) -> list[dict]:
    """Measure every configuration (or ``configs``); return rows with ``speedup_vs_fp32``.

    ``layers`` and ``batch_size`` default to `sizes_for` this GPU; bf16 configurations are
    left out on a GPU without bf16 (a T4)."""
    dev = torch.device(device) if device else env.device()
    if dev.type == "cuda":
        env.require_cuda("the precision benchmark")
    elif not quick:
        raise LabkitError("the precision benchmark measures a GPU; on this machine run it with "
                          "--quick --device cpu (a code-path check) or use data/results/precision_gpu.csv")
    if quick:
        layers, batch_size, seq_len, steps, warmup = (QUICK[k] for k in ("layers", "batch_size", "seq_len",
                                                                         "steps", "warmup"))
    fit = sizes_for(dev)
    layers = layers or fit["layers"]
    batch_size = batch_size or fit["batch_size"]
    cfg = model_config(layers, quick)
    names = list(configs or [c for c in CONFIGS if env.supports_bf16(dev) or "bf16" not in c])
    for name in names:
        if name not in CONFIGS:
            raise LabkitError(f"unknown configuration {name!r}; use some of: {', '.join(CONFIGS)}")
    rows = []
    for name in names:
        rows.append(measure(name, cfg, dev, batch_size, seq_len, steps, warmup))
        print({k: rows[-1][k] for k in ("config", "step_ms", "model_tflops", "peak_gb", "final_loss",
                                        "skipped_steps")}, flush=True)
    base = next((r["step_ms"] for r in rows if r["config"] == "fp32"), None)
    for r in rows:
        r["speedup_vs_fp32"] = round(base / r["step_ms"], 2) if base else None
    return rows


def main(argv=None) -> int:
    p = bench_cli.parser("precision", __doc__.splitlines()[0])
    p.add_argument("--out", default=None,
                   help="CSV to write (default: data/results/precision_gpu.csv on a full GPU run, else "
                        "data/results/local/precision_<device>[_quick].csv)")
    p.add_argument("--layers", type=int, default=None,
                   help="Llama-2-7B-shaped decoder layers (default: 4 on an 80 GB GPU, fewer on smaller ones)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 16 on an 80 GB GPU, less on smaller ones")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--quick", action="store_true", help="a toy model and 3 steps: test the code path")
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu (with --quick)")
    args = bench_cli.parse(p, argv)
    device = args.device or env.device()
    path = results.bench_csv_path("precision", device=device, quick=args.quick, out=args.out)  # a bad --out stops here, before measuring
    rows = run(layers=args.layers, batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps,
               warmup=args.warmup, quick=args.quick, device=args.device)
    bf16 = next((r for r in rows if r["config"] == "bf16-mixed"), None)
    if bf16 and bf16["speedup_vs_fp32"]:
        print(f"bf16-mixed is {bf16['speedup_vs_fp32']:.1f}x faster per step than fp32")
    written = results.write_bench_csv("precision", rows, device=device, quick=args.quick, out=path)
    bench_cli.emit(args, "precision", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

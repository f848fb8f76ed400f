"""Activation memory and step time of gradient-checkpointing layouts (lab 03).

    python -m labkit bench checkpointing                      # on a GPU: writes data/results/checkpointing_gpu.csv
    python -m labkit bench checkpointing --quick --device cpu # seconds: data/results/local/checkpointing_cpu_quick.csv

Builds a 1B-class model with random weights (default ``llama-3.2-1b``; memory
and speed do not depend on the weights), then for each layout -- no
checkpointing, every 4th / 2nd / every layer (labkit's `apply_checkpointing`),
Chen et al.'s sqrt(n) segments, and transformers' own
``gradient_checkpointing_enable()`` -- runs real AdamW training steps under
bf16 autocast and records:

* ``saved_bytes``  -- what autograd saves in the forward (`memory.saved_activation_bytes`);
* ``held_bytes``   -- device memory the forward leaves allocated for backward
  (allocated after the forward minus before it): the *activation memory*;
* ``peak_bytes``   -- the step's peak above its start (activations, gradients,
  the recomputation and the optimizer's scratch);
* ``step_seconds`` -- median wall time of a full step (forward, backward, AdamW);
* ``time_overhead`` -- the median, over rounds, of (this layout's step time / the
  baseline step just before it) - 1;
* ``time_overheads`` -- those per-round overheads themselves (space-separated in the CSV), and
  ``time_overhead_mean`` / ``_low`` / ``_high`` -- their mean with its 95% t-interval
  (`mean_interval`), so a difference of a few percent can be told from noise.

Timing is *paired*: in every round each layout's step runs right after a
step without checkpointing, so a slow moment of the machine hits both.
``--quick --device cpu`` runs the same code on a 4-layer lab model in seconds
(CPU memory is tracked with `memory.LiveTensors`).
"""
from __future__ import annotations

import gc
import statistics
import sys
import time

import torch

from .. import checkpointing as ck
from .. import cli, env, memory, models, results, stats, train
from .. import bench as bench_cli
from ..errors import LabkitError

LAYOUTS = ("none", "every=4", "every=2", "every=1", "sqrt", "hf")
GPU_DEFAULTS = dict(model="llama-3.2-1b", batch_size=4, seq_len=2048, precision="bf16-mixed", repeats=5)
QUICK_DEFAULTS = dict(model="lab-tiny", layers=4, batch_size=2, seq_len=64, precision="fp32", repeats=2)


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------
def clear_layout(model) -> None:
    ck.remove_checkpointing(model)
    if any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        model.gradient_checkpointing_disable()


def apply_layout(model, name: str) -> int:
    """Set one layout on ``model``; returns how many decoder layers are checkpointed."""
    clear_layout(model)
    n = len(ck.decoder_layers(model))
    if name == "none":
        return 0
    if name == "hf":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return n
    if name == "sqrt":
        ck.apply_checkpointing(model, segment=ck.sqrt_segment(n))
        return n
    if name.startswith("every="):
        return len(ck.apply_checkpointing(model, every=int(name.split("=", 1)[1])))
    raise LabkitError(f"unknown layout {name!r}; use one of {', '.join(LAYOUTS)} (or every=K)")


def describe_layout(name: str, n_layers: int) -> str:
    if name == "none":
        return "no checkpointing"
    if name == "hf":
        return "transformers gradient_checkpointing_enable()"
    if name == "sqrt":
        s = ck.sqrt_segment(n_layers)
        return f"sqrt(n): {-(-n_layers // s)} segments of {s} layers"
    k = int(name.split("=", 1)[1])
    which = {1: "every layer", 2: "every 2nd layer", 3: "every 3rd layer"}.get(k, f"every {k}th layer")
    return f"{which} ({len(range(0, n_layers, k))}/{n_layers})"


def mean_interval(values) -> tuple[float | None, float | None, float | None]:
    """Mean of ``values`` with its 95% t-interval, mean +- t_{0.975, n-1} * sd / sqrt(n)
    (`labkit.stats.t_critical`); ``(mean, None, None)`` for one value, all None for none."""
    values = [float(v) for v in values]
    if not values:
        return None, None, None
    summary = stats.over_seeds(lambda i: values[i], range(len(values)))   # the same t-interval as every lab's
    return (summary.mean, None, None) if summary.n < 2 else (summary.mean, summary.low, summary.high)


# ---------------------------------------------------------------------------
# One training step, metered
# ---------------------------------------------------------------------------
def _forward_loss(model, batch, precision):
    with train.autocast(batch["input_ids"].device, precision):
        return model(**batch, use_cache=False).loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _collect(device: torch.device) -> None:
    """Free what Python still holds, so each measurement starts from the same state."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def metered_step(model, batch, optimizer, precision: str) -> dict:
    """One step (zero_grad, forward, backward, optimizer.step) with its memory: bytes
    held after the forward and the peak above the step's start."""
    device = batch["input_ids"].device
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        loss = _forward_loss(model, batch, precision)
        held = torch.cuda.memory_allocated() - start
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        return {"held_bytes": int(held), "peak_bytes": int(torch.cuda.max_memory_allocated() - start),
                "peak_allocated": int(torch.cuda.max_memory_allocated())}
    with memory.LiveTensors() as live:      # CPU: track every tensor created in the step
        loss = _forward_loss(model, batch, precision)
        held = live.current
        loss.backward()
        optimizer.step()
    return {"held_bytes": int(held), "peak_bytes": int(live.peak), "peak_allocated": None}


def timed_step(model, batch, optimizer, precision: str) -> float:
    device = batch["input_ids"].device
    _sync(device)
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    _forward_loss(model, batch, precision).backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - t0


def measure(model, input_ids: torch.Tensor, layouts=LAYOUTS, precision: str = "bf16-mixed",
            repeats: int = 3, saved: bool = True, log=print) -> list[dict]:
    """Memory and step time of each layout on ``model`` for the batch ``input_ids``.

    Used by this script and by lab 03 itself (on any device). Rows hold bytes
    and seconds plus ``held_cut`` / ``time_overhead`` relative to the first
    layout, the baseline (put ``"none"`` first). ``repeats`` rounds of paired
    steps: each layout costs ``2 x repeats`` timed steps. ``saved`` adds
    `memory.saved_activation_bytes` per layout, measured last, after the
    optimizer's states are freed (so nothing it leaves behind can touch the
    other figures); on CUDA an out-of-memory there leaves ``saved_bytes`` None.
    ``time_overheads`` lists each round's overhead; ``time_overhead_low``/``_high``
    bound their mean (95% t-interval; None with one round).
    """
    batch = {"input_ids": input_ids, "labels": input_ids}
    n_layers = len(ck.decoder_layers(model))
    model.train()
    opt = memory.make_optimizer(model.parameters(), "adamw", lr=1e-6)
    rows = []
    try:
        for name in layouts:
            n_ckpt = apply_layout(model, name)
            timed_step(model, batch, opt, precision)            # warm-up (kernels, optimizer states)
            _collect(input_ids.device)
            row = {"layout": name, "description": describe_layout(name, n_layers),
                   "checkpointed_layers": n_ckpt, "n_layers": n_layers, "saved_bytes": None}
            row.update(metered_step(model, batch, opt, precision))
            row["times"], row["ratios"] = [], []
            rows.append(row)
            if log:
                log(f"  {name:<8} held {row['held_bytes'] / 2**20:9.1f} MiB  peak {row['peak_bytes'] / 2**20:9.1f} MiB")
        base = rows[0]
        for _ in range(repeats):      # paired timing: each layout's step right after a baseline step
            for row in rows[1:] or rows:
                apply_layout(model, base["layout"])
                t_base = timed_step(model, batch, opt, precision)
                apply_layout(model, row["layout"])
                t = timed_step(model, batch, opt, precision)
                base["times"].append(t_base)
                if row is not base:
                    row["times"].append(t)
                    row["ratios"].append(t / t_base)
        opt.zero_grad(set_to_none=True)
        opt.state.clear()
        _collect(input_ids.device)
        if saved:
            for row in rows:
                apply_layout(model, row["layout"])
                try:
                    with train.autocast(input_ids.device, precision):
                        row["saved_bytes"] = memory.saved_activation_bytes(model, input_ids, use_cache=False)
                except torch.cuda.OutOfMemoryError:
                    if log:
                        log(f"  {row['layout']:<8} saved bytes: out of memory, left empty")
                    break
    finally:
        clear_layout(model)
        opt.zero_grad(set_to_none=True)
    for row in rows:
        times, ratios = row.pop("times"), row.pop("ratios")
        row["step_seconds"] = statistics.median(times)
        row["step_seconds_min"] = min(times)
        row["held_cut"] = 1 - row["held_bytes"] / base["held_bytes"]
        row["saved_cut"] = (1 - row["saved_bytes"] / base["saved_bytes"]
                            if row["saved_bytes"] is not None and base["saved_bytes"] else None)
        # the median of paired ratios: a slow moment of the machine hits both steps of a pair
        row["time_overhead"] = statistics.median(ratios) - 1 if ratios else 0.0
        row["time_overheads"] = [r - 1 for r in ratios]          # per round: the spread behind the median
        row["time_overhead_mean"], row["time_overhead_low"], row["time_overhead_high"] = (
            mean_interval(row["time_overheads"]) if ratios else (0.0, None, None))
        if log:
            saved_text = f"{row['saved_bytes'] / 2**20:9.1f} MiB" if row["saved_bytes"] is not None else "        -"
            log(f"  {row['layout']:<8} saved {saved_text}  step {row['step_seconds'] * 1e3:8.1f} ms (median)"
                f"  activation cut {row['held_cut']:6.1%}  time overhead {row['time_overhead']:+6.1%} (median)"
                + (f", mean {row['time_overhead_mean']:+.1%} [{row['time_overhead_low']:+.1%}, "
                   f"{row['time_overhead_high']:+.1%}]" if row["time_overhead_low"] is not None else ""))
    return rows


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------
def run(model_name: str, batch_size: int, seq_len: int, precision: str, repeats: int, device: str = "cuda",
        layers: int | None = None, attn: str = "sdpa") -> list[dict]:
    if device == "cuda":
        env.require_cuda("the checkpointing benchmark")
    cfg = models.config(model_name, **({"num_hidden_layers": layers} if layers else {}))
    cfg.use_cache = False
    t0 = time.perf_counter()
    model = models.build(cfg, device=device, attn_implementation=attn, seed=0)
    print(f"built {model_name} ({models.count_params(model) / 1e9:.3f}B params, {cfg.num_hidden_layers} layers) "
          f"on {device} in {time.perf_counter() - t0:.1f} s; batch {batch_size} x seq {seq_len}, {precision}", flush=True)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch_size, seq_len), generator=gen).to(device)
    rows = measure(model, ids, precision=precision, repeats=repeats, log=lambda s: print(s, flush=True))
    est = {gc: memory.estimate(cfg, batch_size=batch_size, seq_len=seq_len, precision=precision,
                               attn_implementation=attn, gradient_checkpointing=gc, device=device)
           for gc in (False, True)}
    out = []
    for row in rows:
        gc = {"none": False, "every=1": True, "hf": True}.get(row["layout"])
        out.append({"model": model_name, "batch_size": batch_size, "seq_len": seq_len, "precision": precision,
                    "attn": attn, **row,
                    "time_overheads": " ".join(f"{x:.6f}" for x in row["time_overheads"]),
                    "est_activation_bytes": est[gc].activations if gc is not None else None,
                    "est_peak_allocated": est[gc].peak_allocated if gc is not None and device == "cuda" else None})
    return out


def main(argv=None) -> int:
    p = bench_cli.parser("checkpointing", __doc__.splitlines()[0])
    p.add_argument("--out", default=None,
                   help="CSV to write (default: data/results/checkpointing_gpu.csv on a full GPU run, else "
                        "data/results/local/checkpointing_<device>[_quick].csv)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="a 4-layer lab model, tiny batch: tests the code path in seconds")
    p.add_argument("--model", default=None)
    p.add_argument("--layers", type=int, default=None, help="override the number of decoder layers")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--precision", default=None, choices=("fp32", "bf16-mixed", "fp16-mixed"))
    p.add_argument("--repeats", type=int, default=None)
    args = bench_cli.parse(p, argv)
    path = results.bench_csv_path("checkpointing", device=args.device, quick=args.quick, out=args.out)  # a bad --out stops here, before measuring
    opts = dict(QUICK_DEFAULTS if args.quick else {**GPU_DEFAULTS, "layers": None})
    for key in ("model", "layers", "batch_size", "seq_len", "precision", "repeats"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    rows = run(opts["model"], opts["batch_size"], opts["seq_len"], opts["precision"], opts["repeats"],
               device=args.device, layers=opts["layers"])
    written = results.write_bench_csv("checkpointing", rows, device=args.device, quick=args.quick, out=path)
    bench_cli.emit(args, "checkpointing", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

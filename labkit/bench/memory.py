"""Estimated vs measured peak memory of real training steps (lab 01).

    python -m labkit bench memory                        # on a GPU: data/results/memory_gpu.csv, ~6 min on an H100
    python -m labkit bench memory --quick --device cpu   # same code path, tiny models, no GPU:
                                                          #   data/results/local/memory_cpu_quick.csv (git-ignored)
    python -m labkit bench memory --calibrate --out /tmp/calib.json        # what CUDA kernels save / allocate
    python -m labkit bench memory --reestimate data/results/memory_gpu.csv  # new estimator, same measurements

Only a full run on CUDA writes ``data/results/memory_gpu.csv``; a CPU or ``--quick``
run writes ``data/results/local/`` (or ``--out``, which may then not be a ``*_gpu.csv``).

For each configuration the model is built on the device with random weights
(`labkit.models.build`), wrapped with peft LoRA (q_proj, v_proj) or -- for
QLoRA -- its decoder linears are swapped for bitsandbytes NF4 layers first,
then `labkit.memory.measure_training_step` runs a warm-up step and one measured
step (``zero_grad(set_to_none=True)``, forward under autocast, backward,
``optimizer.step()``). The CSV compares ``estimated_bytes`` -- the estimator's
``peak_allocated`` (everything except the CUDA context) -- with
``measured_peak_bytes`` = ``torch.cuda.max_memory_allocated()`` of the measured
step; ``rel_error = estimated / measured - 1``. ``cuda_context_bytes`` is
measured separately (`labkit.memory.cuda_context_bytes`).

On ``--device cpu`` the measured peak is the bytes of parameters and optimizer
states plus `labkit.memory.live_peak_bytes` of the step (tensors created in it).

``--reestimate`` recomputes only the estimate columns of a committed CSV with
the current estimator (no GPU needed); the measured columns and the original
metadata stay, and the metadata records the re-estimation.

The configurations themselves (`FULL_ROWS`, `QUICK_ROWS`, `CALIBRATION`) are in
`labkit.bench.memory_rows`.
"""
from __future__ import annotations

import copy
import gc
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from .. import cli, memory, models, results
from .. import bench as bench_cli
from ..errors import LabkitError
from .memory_rows import CALIBRATION, FULL_ROWS, QUICK_ROWS, TARGETS, _spec_from_csv, row


# ---------------------------------------------------------------------------
# Building the model of a row
# ---------------------------------------------------------------------------
def quantize_nf4_(model, compute_dtype=torch.bfloat16):
    """Swap every linear layer of the decoder layers for a bitsandbytes NF4 `Linear4bit`.

    Blocksize 64, fp32 absmax, no double quantization (what `estimate` models);
    the embedding and lm_head stay as they are, like transformers' quantizer."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise LabkitError("QLoRA rows need bitsandbytes (pip install bitsandbytes)") from None
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                device = lin.weight.device
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                      compute_dtype=compute_dtype, quant_type="nf4", compress_statistics=False,
                                      device="meta")
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, quant_type="nf4",
                                             blocksize=64, compress_statistics=False)
                if lin.bias is not None:
                    q.bias = torch.nn.Parameter(lin.bias.data.to(compute_dtype), requires_grad=False)
                setattr(parent, name, q.to(device))
                del lin
    model.is_loaded_in_4bit = True          # peft then wraps Linear4bit with its 4-bit LoRA layer
    return model


def build(spec: dict, device: str):
    """The model of one row, ready to train: dtype, quantization, checkpointing, LoRA."""
    cfg = models.config(spec["model"])
    quant, precision = spec["quantization"], spec["precision"]
    dtype = torch.bfloat16 if (precision == "bf16" or quant) else torch.float32
    model = models.build(cfg, device=device, dtype=dtype, attn_implementation=spec["attn_implementation"])
    if quant == "nf4":
        quantize_nf4_(model)
        if precision != "bf16":             # like peft's prepare_model_for_kbit_training: the rest in fp32
            for p in model.parameters():
                if p.dtype == torch.bfloat16:
                    p.data = p.data.float()
    elif quant:
        raise LabkitError(f"the bench builds nf4 bases only, not {quant!r}")
    if spec["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec["lora_rank"]:
        from peft import LoraConfig, get_peft_model

        r = spec["lora_rank"]
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                 target_modules=list(TARGETS)))
    model.train()
    return model, cfg


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------
# Measuring one row
# ---------------------------------------------------------------------------
def measure_cpu(model, ids, optimizer: str, precision: str) -> dict:
    """CPU stand-in for `memory.measure_training_step`: resident bytes + live peak of one step."""
    opt = memory.make_optimizer(model.parameters(), optimizer)
    batch = {"input_ids": ids, "labels": ids}
    memory.training_step(model, batch, opt, precision)
    opt.zero_grad(set_to_none=True)
    resident = sum(p.numel() * p.element_size() for p in model.parameters())
    states = {id(s): s for s in (getattr(getattr(m, "weight", None), "quant_state", None) for m in model.modules())
              if s is not None}           # NF4 layers keep their absmax outside the parameters (peft's
    resident += sum(s.absmax.numel() * s.absmax.element_size() for s in states.values())   # wrapper shares it)
    resident += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                    if isinstance(t, torch.Tensor)) + ids.numel() * ids.element_size()
    t0 = time.perf_counter()
    peak = memory.live_peak_bytes(memory.training_step, model, batch, opt, precision)
    return {"peak_allocated": resident + peak, "peak_reserved": None, "start_allocated": resident,
            "cuda_context": 0, "step_seconds": time.perf_counter() - t0}


def _estimate(spec: dict, device: str):
    return memory.estimate(spec["model"], batch_size=spec["batch_size"], seq_len=spec["seq_len"],
                           precision=spec["precision"], optimizer=spec["optimizer"],
                           gradient_checkpointing=spec["gradient_checkpointing"], lora_rank=spec["lora_rank"],
                           quantization=spec["quantization"], attn_implementation=spec["attn_implementation"],
                           lora_targets=TARGETS, device=device)


def _estimate_columns(est) -> dict:
    return {"n_params": est.n_params, "n_trainable": est.n_trainable, "est_weights": est.weights,
            "est_gradients": est.gradients, "est_optimizer": est.optimizer,
            "est_activations": est.activations, "est_transient": est.transient,
            "est_framework": est.framework, "est_peak_phase": est.peak_phase,
            "estimated_bytes": est.peak_allocated, "estimated_total_bytes": est.total}


def run_row(spec: dict, device: str) -> dict:
    out = dict(spec)
    est = _estimate(spec, device)
    out.update(_estimate_columns(est))
    t0 = time.perf_counter()
    model = None
    try:
        model, cfg = build(spec, device)
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, cfg.vocab_size, (spec["batch_size"], spec["seq_len"]), generator=gen).to(device)
        if device == "cuda":
            m = memory.measure_training_step(model, ids, optimizer=spec["optimizer"],
                                             precision=spec["precision"], steps=2)
        else:
            m = measure_cpu(model, ids, spec["optimizer"], spec["precision"])
        out.update({"measured_peak_bytes": m["peak_allocated"], "measured_reserved_bytes": m["peak_reserved"],
                    "measured_start_bytes": m["start_allocated"], "cuda_context_bytes": m["cuda_context"],
                    "measured_total_bytes": m["peak_allocated"] + m["cuda_context"],
                    "rel_error": round(est.peak_allocated / m["peak_allocated"] - 1, 5),
                    "step_seconds": round(m["step_seconds"], 4), "status": "ok"})
    except torch.cuda.OutOfMemoryError:
        out["status"] = "oom"
    except Exception as exc:  # noqa: BLE001 -- record the failure, go on with the next row
        out["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        traceback.print_exc()
    finally:
        del model
        _free(device)
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _gb(nbytes) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e9:.3f}"


def run(rows: list[dict], device: str, path=None, meta=None) -> list[dict]:
    """Measure every row; with ``path``, rewrite the CSV after each row (a crash keeps what ran)."""
    out = []
    for spec in rows:
        r = run_row(spec, device)
        out.append(r)
        if path:
            results.write_csv(path, out, {**(meta or {}), "summary": summary(out)})
        tag = (f"{r['model']} B{r['batch_size']} S{r['seq_len']} {r['precision']} {r['optimizer']}"
               f"{' ckpt' if r['gradient_checkpointing'] else ''}{' r=' + str(r['lora_rank']) if r['lora_rank'] else ''}"
               f"{' ' + r['quantization'] if r['quantization'] else ''} {r['attn_implementation']}")
        print(f"{tag:<62} est {_gb(r['estimated_bytes'])} GB  meas {_gb(r.get('measured_peak_bytes'))} GB  "
              f"err {r.get('rel_error', float('nan')):+.2%}  [{r['status']}, {r['wall_seconds']} s]", flush=True)
    return out


def summary(rows: list[dict]) -> dict:
    errors = [abs(r["rel_error"]) for r in rows if r.get("status") == "ok"]
    if not errors:
        return {"rows": 0}
    return {"rows": len(errors), "median_abs_rel_error": statistics.median(errors), "max_abs_rel_error": max(errors)}


# ---------------------------------------------------------------------------
# Calibration: what CUDA kernels save for backward and allocate inside
# ---------------------------------------------------------------------------
def op_profile(fn) -> list[dict]:
    """Per aten op of ``fn()``: bytes allocated by it (net) and scratch above that (CUDA)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    rows = []

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = func(*args, **(kwargs or {}))
            torch.cuda.synchronize()
            after, peak = torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()
            rows.append({"op": str(func), "net": after - before, "scratch": peak - max(before, after),
                         "level": after})
            return out

    with Mode():
        fn()
    return rows


def calibrate(device: str = "cuda") -> dict:
    """Saved bytes (measured vs estimated, by the op that made them) and an op-by-op memory
    profile of one step, for a few small configurations. (The step profiles of later
    configurations include some memory left over from earlier ones: compare shapes, not levels.)"""
    report = {"saved": [], "profiles": []}
    for name, overrides, b, s, precision, attn, ckpt, lora in CALIBRATION:
        cfg = models.config(name, **overrides)
        spec = row(name, b, s, precision, ckpt, lora, None, attn)
        model = models.build(copy.deepcopy(cfg), device=device, attn_implementation=attn,
                             dtype=torch.bfloat16 if precision == "bf16" else None)
        if ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=lora, target_modules=list(TARGETS)))
        model.train()
        ids = torch.randint(0, cfg.vocab_size, (b, s), device=device)
        with memory.autocast(device, precision):
            saved = memory.saved_activation_bytes(model, ids)
        est = {d: memory.estimate(cfg, batch_size=b, seq_len=s, precision=precision, attn_implementation=attn,
                                  gradient_checkpointing=ckpt, lora_rank=lora, device=d) for d in ("cuda", None)}
        # saved tensors by the op that made them
        makers = {}
        from torch.utils._python_dispatch import TorchDispatchMode

        class Namer(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                ins = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_flatten((args, kwargs))[0]
                       if isinstance(t, torch.Tensor)}
                for t in torch.utils._pytree.tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in ins:
                        makers[t.untyped_storage().data_ptr()] = str(func)
                return out

        seen = {}
        skip = {p.untyped_storage().data_ptr() for p in model.parameters()} | {ids.untyped_storage().data_ptr()}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in skip:
                seen[ptr] = (makers.get(ptr, "?"), tuple(t.shape), str(t.dtype), t.untyped_storage().nbytes())
            return t

        with Namer(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), memory.autocast(device, precision):
            out = model(ids, labels=ids)
        del out
        kinds = {}
        for op, shape, dtype, nbytes in seen.values():
            key = f"{op} {dtype}"
            kinds[key] = kinds.get(key, 0) + nbytes
        report["saved"].append({"spec": spec, "overrides": overrides, "measured": saved,
                                "est_cuda": est["cuda"].activations, "est_default": est[None].activations,
                                "by_op": kinds})
        print(f"saved {name}{overrides} B{b} S{s} {precision} {attn} ckpt={ckpt} lora={lora}: measured {saved} "
              f"est(cuda) {est['cuda'].activations} ({est['cuda'].activations / saved - 1:+.4f}) "
              f"est(None) {est[None].activations}", flush=True)
        if device != "cuda":
            del model
            continue
        # one full step, op by op: where does memory peak, which kernels need scratch?
        opt = memory.make_optimizer(model.parameters(), "adamw")
        batch = {"input_ids": ids, "labels": ids}
        memory.training_step(model, batch, opt, precision)
        opt.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        prof = op_profile(lambda: memory.training_step(model, batch, opt, precision))
        peak_at = max(range(len(prof)), key=lambda i: prof[i]["level"] + prof[i]["scratch"])
        big = sorted(prof, key=lambda r: -r["scratch"])[:12]
        del opt
        _free(device)
        m = memory.measure_training_step(model, ids, optimizer="adamw", precision=precision, steps=2)
        report["profiles"].append({
            "spec": spec, "overrides": overrides, "start_allocated": start,
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "peak_op": prof[peak_at], "peak_level": prof[peak_at]["level"] + prof[peak_at]["scratch"],
            "measured": m, "est_cuda": est["cuda"].to_dict(),
            "top_scratch": [{k: r[k] for k in ("op", "scratch", "net")} for r in big],
            "ops_around_peak": prof[max(0, peak_at - 6): peak_at + 3]})
        print(f"   step: measured peak {m['peak_allocated']} est {est['cuda'].peak_allocated} "
              f"({est['cuda'].peak_allocated / m['peak_allocated'] - 1:+.4f}) start {m['start_allocated']} "
              f"context {m['cuda_context']}; peak near {prof[peak_at]['op']}", flush=True)
        del model
        _free(device)
    return report


# ---------------------------------------------------------------------------
# Re-estimating committed measurements (no GPU needed)
# ---------------------------------------------------------------------------
def reestimate(path: str, device: str = "cuda", cache_values_follow_keys: bool | None = None) -> dict:
    """Recompute the estimate columns of a measured CSV with the current estimator.

    The measured columns and the original metadata line stay as they were;
    the metadata gains ``estimates_recomputed`` (date, versions, command).
    The KV-cache dtype rule of the *measuring* transformers is taken from the
    metadata (``cache_values_follow_keys``), else from the argument, else
    from the installed transformers."""
    import csv

    if not Path(path).is_file():
        raise LabkitError(f"--reestimate {path}: no such file (e.g. data/results/memory_gpu.csv)")
    with open(path) as f:
        first = f.readline()
        meta = json.loads(first[1:]) if first.startswith("#") else {}
        rows = list(csv.DictReader(f if first.startswith("#") else [first, *f]))
    needed = ("model", "batch_size", "seq_len", "precision", "optimizer", "gradient_checkpointing", "lora_rank",
              "quantization", "attn_implementation", "status", "measured_peak_bytes")
    missing = [k for k in needed if not rows or k not in rows[0]]
    if missing:
        raise LabkitError(f"{path} is not a labkit.bench.memory CSV (no {', '.join(missing)} column); "
                          "nothing was rewritten")
    if "cache_values_follow_keys" not in meta and cache_values_follow_keys is not None:
        meta["cache_values_follow_keys"] = cache_values_follow_keys
        meta["cache_values_follow_keys_source"] = "given to --reestimate (not recorded by the measuring run)"
    memory.CACHE_VALUES_FOLLOW_KEYS = meta.get("cache_values_follow_keys")
    out = []
    for r in rows:
        spec = _spec_from_csv(r)
        fresh = {k: r[k] for k in r}
        if r.get("status") == "ok":
            est = _estimate(spec, device)
            fresh.update(_estimate_columns(est))
            fresh["rel_error"] = round(est.peak_allocated / int(r["measured_peak_bytes"]) - 1, 5)
        out.append(fresh)
    redo = results.run_metadata()
    meta.setdefault("summary_at_measurement", meta.get("summary"))
    meta["estimates_recomputed"] = {**{k: redo[k] for k in ("date", "command", "torch", "transformers")},
                                    "cache_values_follow_keys": memory.cache_values_follow_keys()}
    memory.CACHE_VALUES_FOLLOW_KEYS = None
    meta["summary"] = summary([{**r, "rel_error": float(r["rel_error"])} for r in out if r.get("status") == "ok"])
    results.write_csv(path, out, meta)
    return meta["summary"]


# ---------------------------------------------------------------------------
def main(argv=None) -> int:
    p = bench_cli.parser("memory", __doc__.splitlines()[0])
    p.add_argument("--out", default=None,
                   help="CSV to write (default: data/results/memory_gpu.csv on a full GPU run, else "
                        "data/results/local/memory_<device>[_quick].csv; with --calibrate a JSON report)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="tiny models: tests the code path in seconds")
    p.add_argument("--calibrate", action="store_true", help="write a JSON report of what CUDA kernels save")
    p.add_argument("--only", default=None, help="run only rows whose model name contains this")
    p.add_argument("--reestimate", metavar="CSV", default=None,
                   help="recompute the estimate columns of a measured CSV in place (no GPU needed; "
                        "the measured columns and the metadata stay)")
    p.add_argument("--cache-values-follow-keys", choices=("auto", "yes", "no"), default="auto",
                   help="with --reestimate and a CSV that does not record it: did the measuring transformers "
                        "cache values in the keys' dtype (5.17: yes)?")
    args = bench_cli.parse(p, argv)
    if args.reestimate:
        follow = {"auto": None, "yes": True, "no": False}[args.cache_values_follow_keys]
        print(reestimate(args.reestimate, args.device, follow))
        print(f"rewrote the estimate columns of {args.reestimate} (measured columns unchanged)")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise LabkitError("no CUDA GPU here; run with --device cpu --quick to test the code path")
    if args.calibrate:
        out = Path(args.out) if args.out else results.LOCAL_DIR / f"memory_calibration_{args.device}.json"
        if out.suffix == ".csv":
            raise LabkitError(f"--out {out}: the calibration report is JSON; choose a .json name")
        report = calibrate(args.device)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {out}")
        return 0
    path = results.bench_csv_path("memory", device=args.device, quick=args.quick, out=args.out,
                                  subset=bool(args.only))
    rows = QUICK_ROWS if args.quick else FULL_ROWS
    if args.only:
        rows = [r for r in rows if args.only in r["model"]]
        if not rows:
            raise LabkitError(f"--only {args.only!r} matches no row's model")
    t0 = time.perf_counter()
    meta = results.run_metadata()
    meta["cache_values_follow_keys"] = memory.cache_values_follow_keys()
    for package in ("peft", "bitsandbytes"):
        try:
            meta[package] = __import__(package).__version__
        except ImportError:
            meta[package] = None
    meta["compare"] = ("estimated_bytes = estimate(device).peak_allocated (no CUDA context) "
                       "vs measured_peak_bytes = torch.cuda.max_memory_allocated() of the measured step")
    out = run(rows, args.device, path, meta)
    print(f"{summary(out)} in {time.perf_counter() - t0:.0f} s", flush=True)
    print(results.bench_wrote_message(path, "memory", device=args.device, quick=args.quick), flush=True)
    bench_cli.emit(args, "memory", path)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

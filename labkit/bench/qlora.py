"""QLoRA on a real 7B-shaped model: peak memory and step time, measured and estimated (lab 05).

    python -m labkit bench qlora                          # on a GPU: writes data/results/qlora_gpu.csv
    python -m labkit bench qlora --quick --device cpu     # the same code path, tiny model, no GPU:
                                                          #   data/results/local/qlora_cpu_quick.csv

Llama-2-7B's architecture (`labkit.models.config("llama-2-7b")`) with random
weights -- memory and speed do not depend on the values. For each group of
rows the model is built in bf16 on the device, labkit LoRA adapters (fp32, as
peft keeps them) are injected into q_proj and v_proj, and then every frozen
linear base is swapped, one at a time, for a bitsandbytes layer: NF4
(`bnb.nn.Linear4bit`, compute dtype bf16), NF4 with double quantization, or
LLM.int8 (`bnb.nn.Linear8bitLt`); ``bf16`` keeps the 16-bit base. Each row
runs two warm-up steps and then measures training steps (AdamW, pure bf16,
``model(ids, labels=ids)``), with `labkit.memory.estimate` predicting the same
peak. Two rows use bitsandbytes' paged AdamW, whose states (those of at
least 1e5 values) live in CUDA unified memory, outside PyTorch's allocator.
"""
from __future__ import annotations

import gc
import logging
import sys
import time

import torch

from .. import cli, env, lora, memory, models, quant, results
from .. import bench as bench_cli
from ..errors import LabkitError

GB = 1e9
TARGETS = ("q_proj", "v_proj")
PAGED_MIN_NUMEL = 100_000   # bitsandbytes' paged optimizers page only state tensors this large (get_state_buffer)
BASES = ("bf16", "int8", "nf4", "nf4-dq")

# (base, lora r, batch, seq, gradient checkpointing, optimizer); rows of one (base, r)
# share a model, so the list is grouped that way.
FULL_ROWS = [
    ("bf16", 8, 1, 512, False, "adamw"),
    ("bf16", 8, 4, 2048, True, "adamw"),
    ("int8", 8, 1, 512, False, "adamw"),
    ("nf4", 8, 1, 512, False, "adamw"),
    ("nf4", 8, 1, 512, False, "paged-adamw"),      # LoRA r=8 tensors are too small to be paged (< 1e5 values)
    ("nf4", 8, 1, 2048, False, "adamw"),
    ("nf4", 8, 1, 2048, True, "adamw"),
    ("nf4", 8, 4, 2048, True, "adamw"),
    ("nf4", 16, 1, 2048, False, "adamw"),
    ("nf4", 16, 2, 1024, False, "adamw"),
    ("nf4", 16, 4, 2048, True, "adamw"),
    ("nf4", 16, 4, 2048, False, "adamw"),
    ("nf4", 32, 1, 512, False, "adamw"),
    ("nf4", 32, 1, 512, False, "paged-adamw"),     # r=32: A is 32 x 4096 = 131,072 values, paged
    ("nf4-dq", 8, 1, 512, False, "adamw"),
]
QUICK_ROWS = [
    ("bf16", 8, 1, 64, False, "adamw"),
    ("int8", 8, 1, 64, False, "adamw"),
    ("nf4", 8, 1, 64, False, "adamw"),
    ("nf4", 8, 2, 64, True, "adamw"),
    ("nf4", 8, 1, 64, False, "paged-adamw"),
    ("nf4-dq", 8, 1, 64, False, "adamw"),
]


def quick_config():
    """A 2-layer Llama with lab-tiny's widths: the code path in seconds on a CPU."""
    return models.config("lab-tiny", num_hidden_layers=2)


# ---------------------------------------------------------------------------
# Building the model: bf16 on the device, LoRA, then a quantized base
# ---------------------------------------------------------------------------
def _int8_layer(linear: torch.nn.Linear):
    """``bnb.nn.Linear8bitLt`` (LLM.int8, threshold 6.0) from a linear layer on any device."""
    import bitsandbytes as bnb

    w = linear.weight.detach()
    layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                has_fp16_weights=False, threshold=quant.LLM_INT8_THRESHOLD, device="meta")
    codes, row_absmax, _ = bnb.functional.int8_vectorwise_quant(w.to(torch.float16))
    param = bnb.nn.Int8Params(codes, requires_grad=False, has_fp16_weights=False)
    param.CB, param.SCB = codes, row_absmax
    layer.weight = param
    return layer


def _quantize_int8(model) -> None:
    names = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and not n.endswith("lm_head")]
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, _int8_layer(model.get_submodule(name)))


def build(cfg, base: str, r: int, device: torch.device):
    """Llama with random bf16 weights on ``device``, LoRA r on q/v (fp32 adapters), base as asked."""
    if base not in BASES:
        raise LabkitError(f"unknown base {base!r}; use one of {', '.join(BASES)}")
    model = models.build(cfg, device=device, dtype=torch.bfloat16, seed=0)
    lora.inject_lora(model, r=r, alpha=2 * r, target_modules=TARGETS)
    for layer in lora.lora_layers(model).values():      # peft keeps adapters in fp32 on a 16-bit base
        layer.lora_A.data = layer.lora_A.data.float()
        layer.lora_B.data = layer.lora_B.data.float()
    if base in ("nf4", "nf4-dq"):
        quant.quantize_model(model, backend="bnb", compute_dtype=torch.bfloat16, double_quant=base == "nf4-dq")
    elif base == "int8":
        _quantize_int8(model)
    _free(device)
    return model


def set_checkpointing(model, on: bool) -> None:
    """Activation checkpointing per decoder layer on or off (recent transformers renamed
    the methods; older ones, as on the GPU machine, have only the gradient_* names).
    The KV cache is off while it is on, as transformers does itself."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    model.config.use_cache = not on


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _allocated(device: torch.device, model, optimizer=None) -> int:
    """Bytes resident now: the allocator's count on CUDA; parameters, buffers and optimizer states on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    if model is None:
        return 0
    total = quant.model_nbytes(model)
    if optimizer is not None:
        total += sum(t.numel() * t.element_size() for st in optimizer.state.values()
                     for t in st.values() if isinstance(t, torch.Tensor))
    return total


def _optimizer(model, name: str, lr: float = 1e-4):
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "paged-adamw":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW(params, lr=lr)
    raise LabkitError(f"unknown optimizer {name!r}; use adamw or paged-adamw")


# ---------------------------------------------------------------------------
# One row: warm-up, then measured steps
# ---------------------------------------------------------------------------
def measure(model, batch: dict, optimizer, device: torch.device, steps: int = 3, warmup: int = 2) -> dict:
    """Peak memory and mean time of ``steps`` training steps after ``warmup`` steps.

    The step is `labkit.memory.training_step` (grads set to None, forward,
    backward, optimizer step) -- what the estimator models. On CUDA the peak is
    ``torch.cuda.max_memory_allocated``; on CPU, the bytes resident before the
    step plus the peak of tensors created during it (`memory.live_peak_bytes`).
    """
    for _ in range(warmup):
        memory.training_step(model, batch, optimizer, precision="bf16")
    optimizer.zero_grad(set_to_none=True)
    _free(device)
    start = _allocated(device, model, optimizer)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        if device.type == "cuda":
            losses.append(memory.training_step(model, batch, optimizer, precision="bf16"))
        else:
            box = []
            extra = memory.live_peak_bytes(lambda: box.append(
                memory.training_step(model, batch, optimizer, precision="bf16")))
            losses.append(box[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    if device.type == "cuda":
        peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        free, total = torch.cuda.mem_get_info()
        used = total - free
    else:
        peak, reserved, used = start + extra, None, None
    optimizer.zero_grad(set_to_none=True)
    return {"start": start, "peak": peak, "reserved": reserved, "device_used": used,
            "step_s": seconds, "loss": losses[-1]}


def estimate_row(cfg, base: str, r: int, batch: int, seq: int, ckpt: bool, optimizer: str, device: str):
    """`labkit.memory.estimate` for the same step, and a note where it models something differently."""
    quantization = {"bf16": None, "int8": "int8", "nf4": "nf4", "nf4-dq": "nf4"}[base]
    if quantization == "int8" and device != "cuda":
        return None, None, "no estimate: the estimator models LLM.int8 training on a GPU only"
    est = memory.estimate(cfg, batch_size=batch, seq_len=seq, precision="bf16", optimizer="adamw",
                          gradient_checkpointing=ckpt, lora_rank=r, quantization=quantization,
                          lora_targets=TARGETS, device=device if device == "cuda" else "cpu")
    weights, peak, notes = est.weights, est.peak_allocated, []
    if base == "nf4-dq":
        notes.append("estimate without double quantization (it saves 0.373 bit/param)")
    if optimizer == "paged-adamw":
        paged = sum(n for n in lora_numels(cfg, r) if n >= PAGED_MIN_NUMEL)
        peak -= 2 * 4 * paged                     # fp32 m and v of the paged tensors
        notes.append(f"estimate minus the AdamW states of tensors >= {PAGED_MIN_NUMEL:.0e} values "
                     f"({2 * 4 * paged / GB:.3f} GB): bitsandbytes pages only those, outside the allocator")
    return weights, peak, "; ".join(notes)


def _gb(nbytes):
    return None if nbytes is None else round(nbytes / GB, 6)


def lora_numels(cfg, r: int) -> list[int]:
    """numel of every LoRA matrix on q_proj and v_proj: A is r x in, B is out x r."""
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    outs = {"q_proj": heads * head_dim, "v_proj": kv * head_dim}
    return [n for t in TARGETS for n in (r * cfg.hidden_size, outs[t] * r)] * cfg.num_hidden_layers


_lora_numels = lora_numels   # the old private name (lab 05 §10 called it before it was public)


def run(rows, cfg, device: torch.device, steps: int = 3, warmup: int = 2) -> list[dict]:
    """Measure each ``(base, r, batch, seq, checkpointing, optimizer)`` row; rows of one
    ``(base, r)`` in a row share a model. Returns the CSV rows (and prints each)."""
    out = []
    current, model = None, None
    for base, r, batch_size, seq, ckpt, opt_name in rows:
        if opt_name == "paged-adamw" and device.type != "cuda":
            print(f"skip {base} r={r} {opt_name}: paged optimizers need CUDA unified memory", flush=True)
            continue
        if base == "int8" and device.type == "cpu":
            note_int8 = "CPU: bitsandbytes trains Linear8bitLt by dequantizing (no int8 matmul)"
        else:
            note_int8 = ""
        t_build = time.perf_counter()
        if current != (base, r):
            model = None
            _free(device)
            before_build = _allocated(device, None)     # e.g. cuBLAS workspaces kept from earlier rows
            model = build(cfg, base, r, device)
            current = (base, r)
        build_s = time.perf_counter() - t_build
        set_checkpointing(model, ckpt)
        model.train()
        weights = _allocated(device, model) - before_build
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, cfg.vocab_size, (batch_size, seq), generator=gen).to(device)
        optimizer = _optimizer(model, opt_name)
        m = measure(model, {"input_ids": ids, "labels": ids}, optimizer, device, steps=steps, warmup=warmup)
        del optimizer
        est_weights, est_peak, note = estimate_row(cfg, base, r, batch_size, seq, ckpt, opt_name, device.type)
        row = {
            "base": base, "lora_r": r, "targets": "+".join(TARGETS), "batch": batch_size, "seq": seq,
            "grad_ckpt": ckpt, "optimizer": opt_name,
            "weights_gb": _gb(weights), "weights_gb_est": _gb(est_weights),
            "peak_gb": _gb(m["peak"]), "peak_gb_est": _gb(est_peak),
            "reserved_gb": _gb(m["reserved"]), "device_used_gb": _gb(m["device_used"]),
            "step_s": round(m["step_s"], 4), "tokens_per_s": round(batch_size * seq / m["step_s"], 1),
            "loss": round(m["loss"], 4), "build_s": round(build_s, 1),
            "note": "; ".join(n for n in (note, note_int8) if n),
        }
        out.append(row)
        print(row, flush=True)
    return out


def main(argv=None) -> int:
    p = bench_cli.parser("qlora", __doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="a 2-layer model and short sequences (tests the code path)")
    p.add_argument("--model", default="llama-2-7b", help="architecture to measure (default llama-2-7b)")
    p.add_argument("--steps", type=int, default=3, help="measured steps per row (after 2 warm-up steps)")
    p.add_argument("--out", default=None,
                   help="CSV to write (default: data/results/qlora_gpu.csv on a full GPU run, else "
                        "data/results/local/qlora_<device>[_quick].csv)")
    args = bench_cli.parse(p, argv)
    path = results.bench_csv_path("qlora", device=args.device, quick=args.quick, out=args.out)  # a bad --out stops here, before measuring
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise LabkitError("the QLoRA benchmark needs bitsandbytes (pip install bitsandbytes)") from None
    if args.device == "cuda":
        env.require_cuda("the QLoRA benchmark")
    device = torch.device(args.device)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)   # a cast warning on every int8 forward
    cfg = quick_config() if args.quick else models.config(args.model)
    t0 = time.perf_counter()
    rows = run(QUICK_ROWS if args.quick else FULL_ROWS, cfg, device, steps=args.steps)
    print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    meta = results.run_metadata()
    meta["model"] = "quick (2-layer lab-tiny widths)" if args.quick else args.model
    import bitsandbytes

    meta["bitsandbytes"] = bitsandbytes.__version__
    written = results.write_bench_csv("qlora", rows, device=device, quick=args.quick, out=path, metadata=meta)
    bench_cli.emit(args, "qlora", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

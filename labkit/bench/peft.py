"""The PEFT family on fp16 / int8 / int4 bases: step time and peak memory on a GPU (lab 13).

    python -m labkit bench peft                          # on a GPU: writes data/results/peft_gpu.csv
    python -m labkit bench peft --quick --device cpu     # the same code path, tiny model, no GPU:
                                                         #   data/results/local/peft_cpu_quick.csv

Llama-2-7B's architecture with random bf16 weights (memory and speed do not depend on the
values). For each base -- ``bf16``, ``int8`` (bitsandbytes LLM.int8, ``Linear8bitLt``) or ``nf4``
(bitsandbytes ``Linear4bit``, bf16 compute) -- and each method of `labkit.soft_prompts` plus
LoRA (`labkit.lora`), the method is applied first and then every *frozen* ``nn.Linear`` except
the LM head is swapped for its quantized layer; trained tensors stay as they are (fp32 adapters,
prompts and vectors, as peft keeps them; Freeze's trained layers in bf16, unquantized). Each row
runs warm-up steps, then timed AdamW steps (``model(ids, labels=ids)``) and records the median
step time and ``torch.cuda.max_memory_allocated``. Lab 13 plots the CSV beside labkit.memory's
estimate.
"""
from __future__ import annotations

import gc
import sys

import torch

from .. import cli, env, lora, models, quant, results
from .. import bench as bench_cli
from .. import soft_prompts as sp
from . import lora as lora_bench   # the timing loop: one AdamW step, median over the timed steps
from ..errors import LabkitError

BASES = ("bf16", "int8", "nf4")
METHODS = {   # name: (labkit method, options) -- the 7B settings of lab 13, section 8
    "prompt tuning n=20": ("prompt_tuning", {"num_virtual_tokens": 20}),
    "P-tuning n=20": ("p_tuning", {"num_virtual_tokens": 20}),
    "prefix n=20": ("prefix_tuning", {"num_virtual_tokens": 20}),
    "(IA)3 k,v,down": ("ia3", {}),
    "LoRA r=8 q,v": ("lora", {"r": 8}),
    "Freeze last 2 layers": ("freeze", {"last_k": 2}),
}
SHAPE = (1, 512)          # batch x seq, as lab 13's estimator table
QUICK_SHAPE = (1, 64)


def quick_config():
    """A 2-layer Llama with lab-tiny's widths: the code path in seconds on a CPU."""
    return models.config("lab-tiny", num_hidden_layers=2)


def apply(model, method: str, options: dict):
    """``model`` with a labkit method applied (the wrapper for soft prompts, the model otherwise)."""
    if method == "prompt_tuning":
        return sp.PromptTuning(model, options["num_virtual_tokens"])
    if method == "p_tuning":
        return sp.PromptEncoder(model, options["num_virtual_tokens"])
    if method == "prefix_tuning":
        return sp.PrefixTuning(model, options["num_virtual_tokens"])
    if method == "ia3":
        return sp.inject_ia3(model)
    if method == "lora":
        lora.inject_lora(model, r=options["r"], alpha=2 * options["r"])
        for layer in lora.lora_layers(model).values():     # peft keeps adapters in fp32 on a 16-bit base
            layer.lora_A.data = layer.lora_A.data.float()
            layer.lora_B.data = layer.lora_B.data.float()
        return model
    if method == "freeze":
        return sp.freeze(model, last_k=options["last_k"])
    raise LabkitError(f"unknown method {method!r}")


def _int8_layer(linear: torch.nn.Linear):
    import bitsandbytes as bnb

    layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                has_fp16_weights=False, threshold=quant.LLM_INT8_THRESHOLD, device="meta")
    codes, row_absmax, _ = bnb.functional.int8_vectorwise_quant(linear.weight.detach().to(torch.float16))
    param = bnb.nn.Int8Params(codes, requires_grad=False, has_fp16_weights=False)
    param.CB, param.SCB = codes, row_absmax
    layer.weight = param
    return layer


def _nf4_layer(linear: torch.nn.Linear):
    import bitsandbytes as bnb

    device = linear.weight.device
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")
    layer.weight = bnb.nn.Params4bit(linear.weight.detach().to("cpu"), requires_grad=False, quant_type="nf4")
    return layer.to(device)


def quantize_frozen(model, base: str) -> int:
    """Swap every frozen ``nn.Linear`` (not the LM head) for a ``base`` layer; returns how many."""
    if base == "bf16":
        return 0
    if base not in BASES:
        raise LabkitError(f"unknown base {base!r}; use one of {', '.join(BASES)}")
    names = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and not n.endswith("lm_head")
             and not m.weight.requires_grad]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, (_int8_layer if base == "int8" else _nf4_layer)(getattr(owner, child)))
    gc.collect()
    return len(names)


def run(model_name: str = "llama-2-7b", bases=BASES, methods=tuple(METHODS), steps: int = 5, warmup: int = 2,
        device: str = "cuda", quick: bool = False) -> list[dict]:
    device = torch.device(device)
    if device.type == "cuda":
        env.require_cuda("the PEFT benchmark")
    cfg = quick_config() if quick else models.config(model_name)
    if quick:
        model_name, steps, warmup = "lab-tiny (2 layers)", 1, 1
    batch_size, seq_len = QUICK_SHAPE if quick else SHAPE
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch_size, seq_len), generator=g).to(device)
    batch = {"input_ids": ids, "labels": ids}
    rows = []
    for base in bases:
        for name in methods:
            method, options = METHODS[name]
            model = models.build(cfg, device=device, dtype=torch.bfloat16, seed=0)
            wrapped = apply(model, method, options)
            swapped = quantize_frozen(wrapped, base)
            m = lora_bench.measure(wrapped, batch, steps, warmup, lr=1e-5, autocast_dtype=torch.bfloat16)
            rows.append({"model": model_name, "base": base, "method": name, "trainable_params": m["trainable_params"],
                         "quantized_linears": swapped, "batch_size": batch_size, "seq_len": seq_len,
                         "step_ms": round(1000 * m["step_s"], 2),
                         "tokens_per_s": round(batch_size * seq_len / m["step_s"]),
                         "peak_mem_gb": None if m["peak_bytes"] is None else round(m["peak_bytes"] / 1e9, 3),
                         "loss": round(m["loss"], 4)})
            print(rows[-1], flush=True)
            del wrapped, model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    p = bench_cli.parser("peft", __doc__.splitlines()[0])
    p.add_argument("--out", default=None,
                   help="CSV to write (default: data/results/peft_gpu.csv on a full GPU run, else "
                        "data/results/local/peft_<device>[_quick].csv)")
    p.add_argument("--model", default="llama-2-7b", choices=models.names())
    p.add_argument("--bases", nargs="+", default=list(BASES), choices=BASES)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="a tiny random model and 1 step: checks the code path")
    args = bench_cli.parse(p, argv)
    path = results.bench_csv_path("peft", device=args.device, quick=args.quick, out=args.out)
    rows = run(args.model, bases=args.bases, steps=args.steps, device=args.device, quick=args.quick)
    written = results.write_bench_csv("peft", rows, device=args.device, quick=args.quick, out=path)
    bench_cli.emit(args, "peft", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

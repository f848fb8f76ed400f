"""The configurations `labkit.bench.memory` measures: one dict per training step (lab 01 §5).

`row` spells a configuration; `FULL_ROWS` is the GPU run behind data/results/memory_gpu.csv
(full fine-tuning, LoRA and QLoRA on Llama and Qwen models up to 7B), `QUICK_ROWS` the tiny CPU
run that tests the code path, `CALIBRATION` the small models whose saved tensors and op-by-op
step are profiled on a GPU (``--calibrate``). `_spec_from_csv` reads a row back from a measured
CSV (``--reestimate``). Kept apart so `labkit.bench.memory` reads as the measurement itself.
"""
from __future__ import annotations

__all__ = ["TARGETS", "row", "FULL_ROWS", "QUICK_ROWS", "CALIBRATION"]

TARGETS = ("q_proj", "v_proj")


def row(model, batch, seq, precision="bf16-mixed", ckpt=False, lora=None, quant=None, attn="sdpa",
        optimizer="adamw") -> dict:
    return {"model": model, "batch_size": batch, "seq_len": seq, "precision": precision, "optimizer": optimizer,
            "gradient_checkpointing": ckpt, "lora_rank": lora, "quantization": quant, "attn_implementation": attn}


FULL_ROWS = [
    # full fine-tuning
    row("lab-small", 8, 512, "fp32"),
    row("lab-small", 8, 512, "bf16-mixed"),
    row("lab-small", 8, 1024, "bf16-mixed", ckpt=True),
    row("lab-small", 8, 1024, "bf16"),
    row("lab-small", 8, 512, "fp16-mixed"),
    row("lab-small", 4, 1024, "bf16-mixed", attn="eager"),
    row("lab-small", 8, 512, "fp32", optimizer="sgd-momentum"),
    row("qwen2.5-0.5b", 4, 512, "bf16-mixed"),
    row("qwen2.5-0.5b", 4, 1024, "bf16-mixed", ckpt=True),
    row("qwen2.5-0.5b", 4, 1024, "bf16"),
    row("qwen2.5-0.5b", 2, 512, "fp32"),
    row("qwen2.5-0.5b", 4, 1024, "bf16-mixed", optimizer="adamw-8bit"),
    row("llama-3.2-1b", 2, 1024, "bf16-mixed"),
    row("llama-3.2-1b", 4, 2048, "bf16-mixed", ckpt=True),
    row("llama-3.2-1b", 4, 1024, "bf16"),
    row("llama-3.2-1b", 2, 1024, "bf16-mixed", attn="eager"),
    row("qwen2.5-1.5b", 2, 1024, "bf16-mixed", ckpt=True),
    row("qwen2.5-1.5b", 2, 2048, "bf16", ckpt=True),
    # LoRA (peft, r on q_proj and v_proj)
    row("qwen2.5-0.5b", 4, 1024, "bf16-mixed", lora=16),
    row("llama-3.2-1b", 4, 2048, "bf16-mixed", ckpt=True, lora=16),
    row("llama-3.2-1b", 4, 2048, "bf16", lora=16),
    row("qwen2.5-1.5b", 4, 2048, "bf16", ckpt=True, lora=16),
    row("llama-2-7b", 1, 2048, "bf16", lora=16),
    row("llama-2-7b", 2, 2048, "bf16", ckpt=True, lora=16),
    row("llama-2-7b", 1, 1024, "bf16-mixed", lora=16),
    # QLoRA (bitsandbytes NF4 base)
    row("llama-3.2-1b", 4, 2048, "bf16", lora=16, quant="nf4"),
    row("llama-3.2-1b", 4, 1024, "bf16-mixed", ckpt=True, lora=16, quant="nf4"),
    row("qwen2.5-1.5b", 2, 2048, "bf16", ckpt=True, lora=16, quant="nf4"),
    row("llama-2-7b", 1, 2048, "bf16", lora=16, quant="nf4"),
    row("llama-2-7b", 4, 2048, "bf16", ckpt=True, lora=16, quant="nf4"),
    row("llama-2-7b", 2, 1024, "bf16-mixed", ckpt=True, lora=16, quant="nf4"),
]

QUICK_ROWS = [
    row("lab-tiny", 2, 128, "fp32"),
    row("lab-tiny", 2, 128, "bf16-mixed", ckpt=True),
    row("lab-tiny", 2, 128, "bf16", attn="eager"),
    row("lab-tiny", 2, 128, "bf16-mixed", lora=8),
    row("lab-small", 1, 128, "bf16", lora=8, quant="nf4"),
]

CALIBRATION = [  # (name, config overrides, batch, seq, precision, attn, ckpt, lora)
    ("lab-small", {}, 2, 256, "bf16-mixed", "sdpa", False, None),
    ("lab-small", {}, 2, 256, "bf16", "sdpa", False, None),
    ("lab-small", {}, 2, 256, "fp32", "sdpa", False, None),
    ("lab-small", {"num_key_value_heads": 2}, 2, 256, "bf16-mixed", "sdpa", False, None),
    ("lab-small", {"num_key_value_heads": 2}, 2, 256, "fp32", "sdpa", False, None),
    ("lab-small", {}, 2, 256, "bf16-mixed", "eager", False, None),
    ("lab-small", {}, 2, 256, "bf16-mixed", "sdpa", True, None),
    ("lab-small", {}, 2, 256, "bf16-mixed", "sdpa", False, 8),
    ("qwen2.5-0.5b", {"num_hidden_layers": 2, "layer_types": ["full_attention"] * 2}, 2, 512, "bf16-mixed",
     "sdpa", False, None),
]


def _spec_from_csv(r: dict) -> dict:
    def opt_int(v):
        return int(v) if v not in ("", None, "None") else None

    return row(r["model"], int(r["batch_size"]), int(r["seq_len"]), r["precision"],
               r["gradient_checkpointing"] == "True", opt_int(r["lora_rank"]), r["quantization"] or None,
               r["attn_implementation"], r["optimizer"])

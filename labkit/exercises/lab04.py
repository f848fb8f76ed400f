"""Lab 04: LoRA from scratch -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise

def _lora_trainable(name: str, r: int, targets) -> int:
    from .. import lora, models

    model = lora.inject_lora(models.build(name, device="meta"), r=r, alpha=2 * r, target_modules=targets)
    return models.count_params(model, trainable_only=True)


def _zero_init_grad_sum() -> float:
    import torch

    from .. import lora

    layer = lora.LoRALinear(torch.nn.Linear(8, 4), r=2, alpha=4)
    with torch.no_grad():
        layer.lora_A.zero_()
    layer(torch.randn(3, 8)).square().sum().backward()
    return float(layer.lora_A.grad.abs().sum() + layer.lora_B.grad.abs().sum())


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "04.llama2_7b_qv_r16_params": Exercise(
        "trainable parameters of LoRA r=16 on q_proj and v_proj of Llama-2-7B",
        lambda: float(_lora_trainable("llama-2-7b", 16, ("q_proj", "v_proj"))), 0.0,
        "per layer and matrix r x (d_in + d_out); 32 layers, q and v are 4096 -> 4096"),
    "04.llama3_8b_all_linear_r8_params": Exercise(
        "trainable parameters of LoRA r=8 on every linear layer of Llama-3-8B's blocks",
        lambda: float(_lora_trainable("llama-3-8b", 8, "all-linear")), 0.0,
        "r x (d_in + d_out) for q, k, v, o, gate, up, down; k and v are 4096 -> 1024, the MLP 4096 <-> 14336; "
        "the LM head is not adapted"),
    "04.adamw_bytes_llama2_7b_qv_r16": Exercise(
        "bytes of AdamW state (two fp32 moments) for LoRA r=16 on q,v of Llama-2-7B",
        lambda: 8.0 * _lora_trainable("llama-2-7b", 16, ("q_proj", "v_proj")), 0.0,
        "exp_avg and exp_avg_sq: 2 x 4 bytes per trainable parameter"),
    "04.qwen25_7b_qv_r8_bf16_mb": Exercise(
        "MB (1e6 bytes) of the tensors of a bf16 LoRA r=8 adapter on q,v of Qwen2.5-7B",
        lambda: 2 * _lora_trainable("qwen2.5-7b", 8, ("q_proj", "v_proj")) / 1e6, 0.01,
        "28 layers x r x ((3584 + 3584) + (3584 + 512)) parameters, 2 bytes each"),
    "04.zero_init_grad_sum": Exercise(
        "sum of |grad A| + |grad B| after one backward pass when both A and B start at zero",
        _zero_init_grad_sum, 0.0, "write out dL/dA and dL/dB for y = W x + s B A x: which factors does each contain?"),
}

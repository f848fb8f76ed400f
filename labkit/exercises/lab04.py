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


# ----------------------------------------------------------------------------- code exercises
def _dims(gen):
    """d_in, d_out, r and the leading (batch) shape of one random LoRA input; sometimes tiny."""
    import torch

    def pick(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    lead = [(5,), (2, 3), (1,), (3, 1, 2)][pick(0, 3)]
    return pick(1, 24), pick(1, 24), pick(1, 8), lead


def _scaling(gen, r: int) -> float:
    """alpha / r or rsLoRA's alpha / sqrt(r) for a random alpha."""
    import torch

    alpha = float(torch.randint(1, 33, (1,), generator=gen))
    return alpha / math.sqrt(r) if bool(torch.randint(0, 2, (1,), generator=gen)) else alpha / r


def _maybe_zero(t, gen, p: float = 0.2):
    """``t``, or all zeros with probability ``p`` (B = 0 at init, a zero gradient...)."""
    import torch

    return torch.zeros_like(t) if float(torch.rand((), generator=gen)) < p else t


def _labkit_layer(W, b, A, B, scaling):
    """labkit's LoRALinear holding exactly W, b, A, B and scaling (global RNG left untouched)."""
    import torch

    from .. import lora

    with torch.random.fork_rng(devices=[]):
        lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=b is not None, dtype=W.dtype)
        layer = lora.LoRALinear(lin, r=A.shape[0], alpha=1.0)
    layer.scaling = scaling
    with torch.no_grad():
        lin.weight.copy_(W)
        if b is not None:
            lin.bias.copy_(b)
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    return layer


def _forward_inputs(gen) -> tuple:
    import torch

    d_in, d_out, r, lead = _dims(gen)
    x = _maybe_zero(torch.randn(*lead, d_in, generator=gen), gen, 0.1)
    b = torch.randn(d_out, generator=gen) if bool(torch.randint(0, 2, (1,), generator=gen)) else None
    B = _maybe_zero(torch.randn(d_out, r, generator=gen), gen)
    return (x, torch.randn(d_out, d_in, generator=gen), b, torch.randn(r, d_in, generator=gen), B, _scaling(gen, r))


def _forward_reference(x, W, b, A, B, scaling):
    import torch

    with torch.no_grad():
        return _labkit_layer(W, b, A, B, scaling)(x)


def _b_grad_inputs(gen) -> tuple:
    import torch

    d_in, d_out, r, lead = _dims(gen)
    return (torch.randn(*lead, d_in, generator=gen), torch.randn(r, d_in, generator=gen),
            _maybe_zero(torch.randn(*lead, d_out, generator=gen), gen, 0.1), _scaling(gen, r))


def _b_grad_reference(x, A, grad_h, scaling):
    """Autograd through labkit's layer (W and B zeros, as at init: dL/dB depends on neither)."""
    import torch

    d_out, r = grad_h.shape[-1], A.shape[0]
    layer = _labkit_layer(torch.zeros(d_out, x.shape[-1]), None, A, torch.zeros(d_out, r), scaling)
    layer(x).backward(grad_h)
    return layer.lora_B.grad


def _a_grad_inputs(gen) -> tuple:
    import torch

    d_in, d_out, r, lead = _dims(gen)
    return (torch.randn(*lead, d_in, generator=gen), _maybe_zero(torch.randn(d_out, r, generator=gen), gen),
            torch.randn(*lead, d_out, generator=gen), _scaling(gen, r))


def _a_grad_reference(x, B, grad_h, scaling):
    """Autograd through labkit's layer (W and A zeros: dL/dA depends on neither)."""
    import torch

    r = B.shape[1]
    layer = _labkit_layer(torch.zeros(B.shape[0], x.shape[-1]), None, torch.zeros(r, x.shape[-1]), B, scaling)
    layer(x).backward(grad_h)
    return layer.lora_A.grad


def _unmerge_inputs(gen) -> tuple:
    import torch

    d_in, d_out, r, _ = _dims(gen)
    dtype = torch.float64 if bool(torch.randint(0, 2, (1,), generator=gen)) else torch.float32
    W0 = torch.randn(d_out, d_in, generator=gen, dtype=dtype)
    A = torch.randn(r, d_in, generator=gen, dtype=dtype)
    B = _maybe_zero(torch.randn(d_out, r, generator=gen, dtype=dtype), gen)
    scaling = _scaling(gen, r)
    return (W0 + (B @ A) * scaling, A, B, scaling)


def _unmerge_reference(merged_weight, A, B, scaling):
    """labkit's LoRALinear.unmerge on a layer marked as merged."""
    layer = _labkit_layer(merged_weight, None, A, B, scaling)
    layer.merged = True
    layer.unmerge()
    return layer.base.weight.detach()


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
    "04.lora_forward": CodeExercise(
        question="write lora_forward(x, W, b, A, B, scaling): the output of a LoRA layer, x W^T + b plus the "
                 "scaled low-rank update, without forming B @ A",
        reference=_forward_reference, inputs=_forward_inputs, solution="lora_forward", rtol=1e-5, atol=1e-5,
        hint="two thin matmuls: first what A makes of every input row (r numbers per token), then B of that; the "
             "bias belongs to the frozen part and may be None; x may have several leading dimensions"),
    "04.lora_b_grad": CodeExercise(
        question="write lora_b_grad(x, A, grad_h, scaling): dL/dB (d_out x r) of the LoRA layer, given the "
                 "input x and dL/dh",
        reference=_b_grad_reference, inputs=_b_grad_inputs, solution="lora_b_grad", rtol=1e-4, atol=1e-5,
        hint="h depends on B only through u = x A^T; flatten the leading dimensions into one token axis and sum "
             "the contribution of every token; the result has B's shape and does not contain B"),
    "04.lora_a_grad": CodeExercise(
        question="write lora_a_grad(x, B, grad_h, scaling): dL/dA (r x d_in) of the LoRA layer, given the "
                 "input x and dL/dh",
        reference=_a_grad_reference, inputs=_a_grad_inputs, solution="lora_a_grad", rtol=1e-4, atol=1e-5,
        hint="first find the gradient that reaches u = A x (it passes back through B and the scale); from there A "
             "is an ordinary linear layer on x; sum over every token"),
    "04.unmerge": CodeExercise(
        question="write unmerge(merged_weight, A, B, scaling): the base weight again from one with the LoRA "
                 "update merged in",
        reference=_unmerge_reference, inputs=_unmerge_inputs, solution="unmerge", rtol=1e-6, atol=1e-6,
        check_dtype=True,
        hint="undo exactly what merging did to the weight, and keep the merged weight's dtype (fp32 or fp64)"),
}

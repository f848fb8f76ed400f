"""fp16 autocast emulated on any CPU: `emulate_fp16_autocast`.

Why a module of its own: a CPU without fp16 arithmetic emulates a real fp16 matmul in software, about
100x slower, so lab 02 could not show fp16's underflow on a laptop. `emulate_fp16_autocast` makes every
``nn.Linear`` round its input, weight, bias, output and gradients to fp16 -- fp16's range and precision
-- while the matmul runs in fp32 at fp32 speed.

Built in lab 02 §7 (``Fp16Linear`` and ``emulate_fp16``, proven equal to it there and to
``torch.autocast("cpu", torch.float16)`` on one linear layer): fp16 without loss scaling, gradients
underflow and training stalls.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["emulate_fp16_autocast"]


class _Fp16Linear(torch.autograd.Function):
    """``x @ weight.T (+ bias)`` with the roundings fp16 autocast makes, computed in fp32."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        """Round input, weight and bias to fp16, multiply (fp32 accumulation), round the output."""
        x16, w16 = x.half().float(), weight.half().float()
        ctx.save_for_backward(x16, w16)
        ctx.has_bias = bias is not None
        y = x16 @ w16.T
        if bias is not None:
            y = y + bias.half().float()
        return y.half().float()

    @staticmethod
    def backward(ctx, grad):
        """The gradient arrives in fp16 (it belongs to an fp16 tensor); each gradient leaves in fp16."""
        x16, w16 = ctx.saved_tensors
        g16 = grad.half().float()
        grad_x = (g16 @ w16).half().float()
        g2, x2 = g16.reshape(-1, g16.shape[-1]), x16.reshape(-1, x16.shape[-1])
        grad_w = (g2.T @ x2).half().float()
        grad_b = g2.sum(0).half().float() if ctx.has_bias else None
        return grad_x, grad_w, grad_b


@contextmanager
def emulate_fp16_autocast(model: torch.nn.Module):
    """Inside the block, every ``nn.Linear`` of ``model`` computes as under fp16 autocast, in fp32.

    Built in lab 02, section 7 (``Fp16Linear`` and ``emulate_fp16``), and proven equal to it
    there and, to the last bit for all but summation-order ties, to ``torch.autocast("cpu",
    torch.float16)`` on one linear layer. Inputs, weights and outputs are rounded to fp16 and so
    are the gradients that flow through the layer -- fp16's range (underflow below 2^-24,
    overflow above 65,504) and precision -- while the matmul itself runs at fp32 speed: on a CPU
    without fp16 arithmetic a real fp16 matmul is emulated in software and ~100x slower. Ops
    outside the linear layers stay fp32 (autocast keeps norms, softmax and the loss in fp32 too,
    but runs the attention's own matmuls in fp16: those are not emulated)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for lin in linears:
        lin.forward = (lambda x, lin=lin: _Fp16Linear.apply(x, lin.weight, lin.bias))
    try:
        yield model
    finally:
        for lin in linears:
            del lin.forward                                # back to the class's forward

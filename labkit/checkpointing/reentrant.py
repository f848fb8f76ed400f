"""The reentrant design of `checkpoint`: `Recompute`, an ``autograd.Function`` that reruns and backprops.

Its forward runs the function under ``torch.no_grad()`` (nothing inside is saved, only the inputs); its
backward reruns it with autograd on -- same random numbers, same autocast (`replay`) -- and differentiates
the recomputed sub-graph with a nested ``torch.autograd.backward``. Built in lab 03 §3 (``MyRecompute``,
``my_checkpoint``); lab 03 §4 checks it bit for bit against torch's ``use_reentrant=True``.
`CheckpointError` lives here because this design is the one that raises it first (``.grad()``,
``backward(inputs=...)``); the non-reentrant one reuses it.
"""
from __future__ import annotations

import torch

from ..errors import LabkitError
from .replay import _autocast_snapshot, _replayed_autocast, _replayed_rng, _rng_snapshot

__all__ = ["CheckpointError", "Recompute"]


# ---------------------------------------------------------------------------
# The reentrant design: an autograd.Function that reruns and backprops
# ---------------------------------------------------------------------------
class CheckpointError(LabkitError, RuntimeError):
    """A checkpoint used in a way it cannot support (torch raises RuntimeError for the same cases)."""


class Recompute(torch.autograd.Function):
    """``Recompute.apply(function, preserve_rng_state, *args)`` = ``function(*args)``, saving only the inputs.

    ``args`` may mix tensors (some requiring grad, some not) and other Python
    values; ``function`` returns a tensor or a tuple of tensors (and other
    Python values, which get no gradient).

    Built in lab 03, section 3 (the recompute ``autograd.Function``, ``MyRecompute``).
    """

    @staticmethod
    def forward(ctx, function, preserve_rng_state, *args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        ctx.function = function
        ctx.rng = _rng_snapshot(tensors) if preserve_rng_state else None
        ctx.autocast = _autocast_snapshot()
        # keep the non-tensor arguments in ctx, the tensors in save_for_backward
        # (which guards against in-place changes between forward and backward)
        ctx.is_tensor = [isinstance(a, torch.Tensor) for a in args]
        ctx.others = [None if t else a for a, t in zip(args, ctx.is_tensor)]
        ctx.save_for_backward(*tensors)
        with torch.no_grad():          # <- the point: no op inside saves anything
            return function(*args)

    @staticmethod
    def backward(ctx, *grad_outputs):
        if not torch.autograd._is_checkpoint_valid():
            raise CheckpointError("labkit checkpoint with use_reentrant=True is incompatible with .grad() or "
                                  "passing an `inputs` parameter to .backward(); pass use_reentrant=False, "
                                  "or call .backward() without `inputs`")
        needs_grad = ctx.needs_input_grad[2:]        # skip `function` and `preserve_rng_state`
        saved = iter(ctx.saved_tensors)
        inputs = []
        for is_tensor, other, wants in zip(ctx.is_tensor, ctx.others, needs_grad):
            if is_tensor:   # a fresh leaf: the recomputed graph starts here
                inputs.append(next(saved).detach().requires_grad_(wants))
            else:
                inputs.append(other)
        with _replayed_rng(ctx.rng), torch.enable_grad(), _replayed_autocast(ctx.autocast):
            outputs = ctx.function(*inputs)      # the second forward: this time autograd records
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        pairs = [(out, grad) for out, grad in zip(outputs, grad_outputs)
                 if isinstance(out, torch.Tensor) and out.requires_grad and grad is not None]
        if not pairs:   # torch's words: the inputs that need a gradient do not reach the outputs
            raise CheckpointError("none of output has requires_grad=True, this checkpoint() is not necessary "
                                  "(no output depends on an input or parameter that needs a gradient)")
        # also accumulates .grad of the parameters `function` used
        torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
        grads = [inp.grad if isinstance(inp, torch.Tensor) and wants else None
                 for inp, wants in zip(inputs, needs_grad)]
        return (None, None, *grads)

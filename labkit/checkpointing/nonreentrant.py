"""The non-reentrant design of `checkpoint`: ``saved_tensors_hooks`` that forget, then recompute.

``f`` runs with autograd on, but every tensor its ops save is swapped for a ticket (`_Frame.pack`); the
first backward node that hands in a ticket reruns ``f`` -- same random numbers and autocast (`replay`) --
and gets the real tensor back. Nothing nests, so ``torch.autograd.grad``, keyword tensors and dict
inputs/outputs work, and it is what `checkpoint` runs when no input needs a gradient (lab 03 §4: the
frozen-embeddings case that torch's reentrant checkpoint gets wrong). Lab 03 does not write this design
out; §4 checks labkit's `checkpoint` against torch's ``use_reentrant=False``.
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from .reentrant import CheckpointError
from .replay import _autocast_snapshot, _replayed_autocast, _replayed_rng, _rng_snapshot

__all__: list[str] = []     # private: `checkpoint(..., use_reentrant=False)` is the public way in


# ---------------------------------------------------------------------------
# The non-reentrant design: saved_tensors_hooks that forget and recompute
# ---------------------------------------------------------------------------
class _SaveInputs(torch.autograd.Function):
    """Keeps the tensor inputs of a non-reentrant checkpoint for its recomputation.

    Saving them with ``save_for_backward`` (rather than holding references) means autograd
    guards them against in-place changes, and outer ``saved_tensors_hooks`` -- lab 01's
    saved-bytes counter, CPU offloading, an enclosing checkpoint -- see them like any saved
    tensor. Its output is never used: nothing backpropagates through it."""

    @staticmethod
    def forward(ctx, dummy, *tensors):
        ctx.save_for_backward(*tensors)
        return torch.empty(0)

    @staticmethod
    def backward(ctx, grad):
        return (None,) * len(ctx.needs_input_grad)


class _Frame:
    """One non-reentrant checkpoint call: what its forward saved (only the shapes) and how to redo it."""

    def __init__(self, function, args, kwargs, preserve_rng_state):
        leaves, self.spec = tree_flatten((args, kwargs))
        self.is_tensor = [isinstance(x, torch.Tensor) for x in leaves]
        self.others = [None if t else x for x, t in zip(leaves, self.is_tensor)]
        tensors = [x for x, t in zip(leaves, self.is_tensor) if t]
        self.function = function
        self.rng = _rng_snapshot(tensors) if preserve_rng_state else None
        self.autocast = _autocast_snapshot()
        self.inputs = _SaveInputs.apply(torch.empty(0, requires_grad=True), *tensors)
        self.metadata = []       # (shape, dtype, device) of each tensor the forward saved, in order
        self.recomputed = {}     # index -> recomputed tensor, until its backward node takes it

    def pack(self, t):
        """Forward: instead of the tensor, keep a ticket to get it back."""
        self.metadata.append((t.shape, t.dtype, t.device))
        return self, len(self.metadata) - 1

    def recompute(self):
        """Rerun the function (same RNG, same autocast, autograd on) and keep the tensors its ops save."""
        tensors = iter(self.inputs.grad_fn.saved_tensors)
        leaves = [next(tensors) if t else x for x, t in zip(self.others, self.is_tensor)]
        args, kwargs = tree_unflatten(leaves, self.spec)
        recorded = []

        def record(t):
            i = len(recorded)
            if (t.shape, t.dtype, t.device) != self.metadata[i]:
                raise CheckpointError(f"Recomputed values for the following tensors have different metadata "
                                      f"than during the forward pass: tensor {i}, {tuple(t.shape)} {t.dtype} "
                                      f"now vs {tuple(self.metadata[i][0])} {self.metadata[i][1]} then; the "
                                      "checkpointed function must run the same ops on each call")
            recorded.append(t.detach())
            if len(recorded) == len(self.metadata):
                raise _AllRecomputed        # the rest of the function is not needed: stop early

        try:
            with _replayed_rng(self.rng), torch.enable_grad(), _replayed_autocast(self.autocast), \
                    torch.autograd.graph.saved_tensors_hooks(record, _never_unpacked):
                self.function(*args, **kwargs)
        except _AllRecomputed:
            pass
        if len(recorded) != len(self.metadata):
            raise CheckpointError(f"A different number of tensors was saved during the original forward and "
                                  f"recomputation ({len(self.metadata)} vs {len(recorded)}); the checkpointed "
                                  "function must run the same ops on each call")
        self.recomputed = dict(enumerate(recorded))

    @staticmethod
    def unpack(ticket):
        """Backward: an op asks for a saved tensor; recompute the whole function the first time."""
        frame, i = ticket
        if i not in frame.recomputed:
            frame.recompute()
        return frame.recomputed.pop(i)   # popped: each recomputed tensor is freed once its node used it


class _AllRecomputed(Exception):
    pass


def _never_unpacked(t):
    raise AssertionError("the recomputed graph is never differentiated")


def _checkpoint_non_reentrant(function, args, kwargs, preserve_rng_state):
    frame = _Frame(function, args, kwargs, preserve_rng_state)
    with torch.autograd.graph.saved_tensors_hooks(frame.pack, _Frame.unpack):
        return function(*args, **kwargs)

"""Replaying a training step with sizes only: symbolic tensors, a tape of ops, and the peaks.

The forward pass is written out op by op (`labkit.memory.ops`) on symbolic tensors (`_T`: a
size, a dtype, whether autograd tracks it); each op records on a `_Tape` the tensors autograd
saves for its backward. This module holds that machinery and the two walks over a tape:
`_forward_peak` (tensors freed after their last use) and `_Backward` (autograd's reverse order:
saved tensors freed, gradients created). Lab 01 §4 shows the layer model that records on it;
§5 holds the peaks it gives against a GPU's ``max_memory_allocated``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from itertools import count

from .constants import BYTES

__all__: list[str] = []   # the replay's internals; re-exported by the package under their old names


# The forward pass is written out op by op, the way transformers runs it, on
# symbolic tensors (`_T`: a size, a dtype, whether autograd tracks it). Each op
# records the tensors autograd saves for its backward. Three questions then
# have exact answers without running anything:
#
# * activations: the bytes of all saved tensors (each storage once);
# * forward peak: saved tensors + the ones still in use + the logits and KV cache;
# * backward peak: walk the ops in reverse, as autograd does: each op frees its
#   saved tensors and its output's gradient, and allocates its inputs' gradients;
#   parameters' gradients stay.
@dataclass(eq=False)
class _T:
    """A symbolic tensor. ``base`` is set for views, which share their base's memory."""

    numel: int
    dtype: str
    grad: bool
    param: bool = False
    base: "_T | None" = None

    @property
    def nbytes(self) -> int:
        return self.numel * BYTES[self.dtype]

    @property
    def storage(self) -> "_T":
        return self.base or self


@dataclass(eq=False)
class _Op:
    name: str
    inputs: list
    out: _T
    saved: list
    shares_grad: bool = False     # backward hands its output's gradient on unchanged (add, cat)
    scratch: int = 0              # bytes its backward needs briefly, besides the gradients
    segment: list | None = None   # a checkpointed layer: its ops, recomputed during backward


def _promote(a: str, b: str) -> str:
    """Result dtype of an elementwise op on two float tensors (fp32 wins)."""
    return a if a == b else "fp32"


class _Tape:
    """Records ops on symbolic tensors. ``autocast``: the dtype autocast casts matmuls to."""

    def __init__(self, autocast: str | None):
        self.autocast = autocast
        self.ops: list[_Op] = []
        self.keep: list[_T] = []        # held by the model's output until forward returns (logits, KV cache)
        self.held: list[_T] = []        # held by the graph until backward ends, though not "saved"

    @staticmethod
    def param(numel: int, dtype: str, trainable: bool) -> _T:
        return _T(int(numel), dtype, trainable, param=True)

    def op(self, name: str, inputs, numel: int, dtype: str, saved=(), shares_grad=False,
           view=False, scratch=0) -> _T:
        grad = any(t.grad for t in inputs)
        out = _T(int(numel), dtype, grad, base=inputs[0].storage if view else None)
        # autograd saves only for ops it records, i.e. when the output needs a gradient
        kept = [t for t in saved if not t.param] if grad else []
        self.ops.append(_Op(name, list(inputs), out, kept, shares_grad, scratch))
        return out

    def cast(self, t: _T, dtype: str) -> _T:
        """``t.to(dtype)``: a new tensor unless the dtype already matches."""
        return t if t.dtype == dtype else self.op("to", [t], t.numel, dtype)

    def for_matmul(self, t: _T) -> _T:
        """Autocast casts a matmul's operands (weights too) to the low-precision dtype."""
        return self.cast(t, self.autocast) if self.autocast else t

    @contextlib.contextmanager
    def checkpoint(self, x: _T):
        """Record a checkpointed layer: in forward only its input is saved; its ops are kept
        aside and recomputed in backward."""
        outer, self.ops = self.ops, []
        try:
            yield
        finally:
            segment, self.ops = self.ops, outer
            out = segment[-1].out
            self.ops.append(_Op("checkpoint", [x], out, [x], segment=segment))


def _saved_storages(ops) -> dict:
    return {t.storage: t.storage.nbytes for op in ops for t in op.saved}


def _external(ops) -> set:
    """Storages ``ops`` use but did not create (a layer's input, cos/sin)."""
    born = {op.out.storage for op in ops}
    return {t.storage for op in ops for t in op.inputs} - born


def _forward_peak(ops, keep=(), keep_saved=True) -> tuple[int, int]:
    """(peak, bytes alive at the end) of running ``ops``, counting only tensors they create.

    A tensor is freed after its last use unless it is saved for backward (and
    ``keep_saved``) or kept by the model output. Checkpointed segments run with
    their saves dropped."""
    last = {}
    for i, op in enumerate(ops):
        for t in op.inputs:
            last[t.storage] = i
    stay = set(_saved_storages(ops)) if keep_saved else set()
    stay |= {t.storage for t in keep}
    alive: dict = {}
    current = peak = 0
    for i, op in enumerate(ops):
        if op.segment is not None:
            inner, _ = _forward_peak(op.segment, keep=[op.out], keep_saved=False)
            peak = max(peak, current + inner)
        born = [op.out] if op.out.base is None else []
        born += [t for t in op.saved if t.storage not in last and t is not op.out]   # e.g. the logsumexp
        for t in born:
            if t.storage not in alive:
                alive[t.storage] = t.storage.nbytes
                current += t.storage.nbytes
        peak = max(peak, current)
        for t in [*op.inputs, op.out]:
            st = t.storage
            if st in alive and last.get(st, -1) <= i and st not in stay:
                current -= alive.pop(st)
    return peak, current


class _Backward:
    """Autograd's backward pass, sizes only: ops run in reverse order of the forward."""

    def __init__(self, alive: int):
        self.current = self.peak = alive      # bytes above the resident weights/optimizer states
        self.buffers: dict[int, list] = {}    # gradient buffer id -> [bytes, number of tensors sharing it]
        self.grad_of: dict = {}               # tensor storage -> gradient buffer id
        self.param_grads: set = set()
        self._ids = count()

    def _alloc(self, nbytes: int) -> int:
        bid = next(self._ids)
        self.buffers[bid] = [nbytes, 0]
        self.current += nbytes
        return bid

    def _release(self, bid: int) -> None:
        self.buffers[bid][1] -= 1
        if self.buffers[bid][1] <= 0:
            self.current -= self.buffers.pop(bid)[0]

    def _attach(self, t: _T, bid: int) -> None:
        """Hand gradient buffer ``bid`` to tensor ``t``."""
        fresh = self.buffers[bid][1] == 0
        if t.param and t not in self.param_grads:
            self.param_grads.add(t)        # becomes .grad: stays until the optimizer step
            self.buffers.pop(bid)          # (still counted in `current`)
        elif t.param or t.storage in self.grad_of:
            if fresh:                      # added into the existing gradient, then freed
                self.current -= self.buffers.pop(bid)[0]
        else:
            self.grad_of[t.storage] = bid
            self.buffers[bid][1] += 1

    def run(self, ops, external=frozenset(), seed: _T | None = None) -> None:
        """Backward through ``ops``, starting from ``seed``'s gradient (``loss.backward()``);
        ``external`` storages are owned (and freed) by someone else."""
        if seed is not None:               # the gradient of the loss: a 1-element tensor of ones
            self._attach(seed, self._alloc(seed.nbytes))
        refs: dict = {}
        for op in ops:
            for t in op.saved:
                refs[t.storage] = refs.get(t.storage, 0) + 1
        for op in reversed(ops):
            if not op.out.grad:
                continue
            if op.segment is not None:     # checkpointed layer: recompute it, then backprop through it
                outside = _external(op.segment)
                inner, _ = _forward_peak(op.segment, keep=[op.out])
                self.peak = max(self.peak, self.current + inner)
                self.current += sum(n for st, n in _saved_storages(op.segment).items() if st not in outside)
                self.run(op.segment, external=outside)
            else:
                self._step(op)
            for t in op.saved:
                refs[t.storage] -= 1
                if refs[t.storage] == 0 and t.storage not in external:
                    self.current -= t.storage.nbytes

    def _step(self, op: _Op) -> None:
        bid = self.grad_of.pop(op.out.storage, None)
        if bid is None:
            return
        # each input's gradient: a new tensor, or (add, cat) the output's gradient itself
        new = [(t, bid if op.shares_grad and t.dtype == op.out.dtype else self._alloc(t.nbytes))
               for t in op.inputs if t.grad]
        # an op that promoted a bf16 input to fp32 (bf16 q times fp32 cos) computes that
        # input's gradient in fp32 first, then casts it down: one fp32 temporary
        promoted = max([t.numel * BYTES[op.out.dtype] for t in op.inputs if t.grad and not op.shares_grad
                        and op.name != "to" and BYTES[t.dtype] < BYTES[op.out.dtype]], default=0)
        self.peak = max(self.peak, self.current + op.scratch + promoted)
        for t, b in new:
            self._attach(t, b)
        self._release(bid)

    @property
    def param_grad_bytes(self) -> int:
        return sum(t.nbytes for t in self.param_grads)


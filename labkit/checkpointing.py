"""Activation (gradient) checkpointing from scratch: forget, then recompute.

A normal forward pass keeps every tensor that some op needs for its backward
(the *saved activations*, lab 01). Checkpointing a function ``f`` keeps only
its **inputs**: ``f`` runs under ``torch.no_grad()`` so nothing inside is
saved, and during backward ``f`` runs a second time -- now with autograd
recording -- to rebuild exactly the tensors its gradient needs. Memory for
the inner activations is traded for one extra forward of ``f``.

Two details make the recomputation *identical* to the original forward:

* **randomness** -- dropout draws new masks on every call, so we snapshot the
  CPU and CUDA random-number generators before the forward and replay them
  (inside `torch.random.fork_rng`, so the caller's RNG is untouched);
* **autocast** -- backward runs outside the caller's ``torch.autocast``
  block, so we record whether autocast was on (and its dtype) and turn it
  back on for the recomputation.

`checkpoint` has torch's two designs, chosen by ``use_reentrant``:

* ``use_reentrant=True`` (the default, as in torch; lab 03, section 3 builds it): `Recompute`,
  an ``autograd.Function`` whose backward differentiates the recomputed sub-graph with a
  nested ``torch.autograd.backward`` call, which also accumulates ``.grad`` of the
  parameters ``f`` uses. So use ``loss.backward()``, not ``torch.autograd.grad`` /
  ``backward(inputs=...)`` (those raise `CheckpointError`).
* ``use_reentrant=False``: ``f`` runs with autograd on, but ``saved_tensors_hooks`` swap each
  tensor its ops save for a ticket; the first backward that hands in a ticket reruns ``f``
  and gets the real tensor back. Nothing nests, so ``torch.autograd.grad``, keyword tensors
  and dict inputs/outputs all work. When no input needs a gradient, the default uses this
  design too (see `checkpoint`).

`apply_checkpointing` wraps the decoder layers of a `transformers` Llama-family
model with it -- every k-th layer, or Chen et al.'s (2016) sqrt(n) segments --
and `remove_checkpointing` undoes it.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .errors import LabkitError

__all__ = ["checkpoint", "Recompute", "CheckpointError", "apply_checkpointing", "remove_checkpointing",
           "checkpointed_layers", "decoder_layers", "sqrt_segment"]


# ---------------------------------------------------------------------------
# The state a recomputation must replay: random numbers and autocast
# ---------------------------------------------------------------------------
def _cuda_devices(tensors) -> list[int]:
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def _rng_snapshot(tensors) -> dict:
    """The CPU generator's state and that of every CUDA device the inputs live on."""
    devices = _cuda_devices(tensors)
    return {"cpu": torch.get_rng_state(), "devices": devices,
            "cuda": [torch.cuda.get_rng_state(d) for d in devices]}


@contextlib.contextmanager
def _replayed_rng(snapshot: dict | None):
    """Run the block with the generators as they were at `snapshot`, then put them back."""
    if snapshot is None:
        yield
        return
    with torch.random.fork_rng(devices=snapshot["devices"]):
        torch.set_rng_state(snapshot["cpu"])
        for device, state in zip(snapshot["devices"], snapshot["cuda"]):
            torch.cuda.set_rng_state(state, device)
        yield


def _autocast_snapshot() -> dict:
    """Which autocast regions are active now (device type -> dtype)."""
    active = {}
    for device_type in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device_type):
            active[device_type] = torch.get_autocast_dtype(device_type)
    return active


def _replayed_autocast(active: dict) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for device_type, dtype in active.items():
        stack.enter_context(torch.autocast(device_type, dtype=dtype))
    return stack


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


# ---------------------------------------------------------------------------
# The call
# ---------------------------------------------------------------------------
def checkpoint(function, *args, use_reentrant: bool = True, preserve_rng_state: bool = True, **kwargs):
    """``function(*args, **kwargs)``, keeping only the inputs for backward and recomputing the rest.

    Gradients equal the plain call's and ``torch.utils.checkpoint.checkpoint``'s; dropout gets
    the same masks in both passes. Without grad mode (``torch.no_grad()``, inference) it is a
    plain call.

    * ``use_reentrant=True`` (the default, as in torch): `Recompute`, the design lab 03,
      section 3 builds (``my_checkpoint``). Train with ``loss.backward()``; ``torch.autograd.grad``
      and ``backward(inputs=...)`` raise. Tensors that need a gradient must be positional
      arguments (inside a list/dict or as a keyword they are refused: their gradient would be
      lost or computed twice); keyword arguments are for constants. ``function`` returns tensors
      or a tuple of them.
    * ``use_reentrant=False``: ``saved_tensors_hooks`` replace each tensor an op inside saves by a
      ticket, and the first backward that needs one reruns ``function`` and hands the recomputed
      tensors out (torch's recommended design, written plainly). Works with ``torch.autograd.grad``,
      keyword and nested (list/dict) tensor arguments and any output structure.

    When no input needs a gradient (frozen embeddings in front of LoRA layers), torch's
    reentrant checkpoint warns "None of the inputs have requires_grad=True. Gradients will be
    None" and the parameters inside get no gradient (lab 03, section 4 shows it fail). labkit
    runs the non-reentrant design then, so the output requires grad exactly when the plain
    call's does and the parameters inside get theirs; torch's warning comes only when nothing
    at all will get a gradient.
    """
    if not torch.is_grad_enabled():
        return function(*args, **kwargs)
    if not use_reentrant:
        return _checkpoint_non_reentrant(function, args, kwargs, preserve_rng_state)
    hidden = tree_flatten(([a for a in args if not isinstance(a, torch.Tensor)], kwargs))[0]
    if any(isinstance(x, torch.Tensor) and x.requires_grad for x in hidden):
        raise LabkitError("checkpoint (use_reentrant=True) takes tensors that need a gradient as positional "
                          "arguments only, not as keywords or inside lists/dicts; pass use_reentrant=False")
    if not any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        out = _checkpoint_non_reentrant(function, args, kwargs, preserve_rng_state)
        if not any(isinstance(x, torch.Tensor) and x.requires_grad for x in tree_flatten(out)[0]):
            warnings.warn("None of the inputs have requires_grad=True. Gradients will be None", stacklevel=2)
        return out
    if kwargs:
        inner = function

        def function(*a):
            return inner(*a, **kwargs)
    out = Recompute.apply(function, preserve_rng_state, *args)
    nested = [o for o in (out if isinstance(out, tuple) else (out,)) if not isinstance(o, torch.Tensor)]
    if any(isinstance(x, torch.Tensor) for x in tree_flatten(nested)[0]):
        raise LabkitError("checkpoint (use_reentrant=True) returns tensors or a flat tuple of them; for tensors "
                          "inside lists/dicts (they would get no gradient) pass use_reentrant=False")
    return out


# ---------------------------------------------------------------------------
# Decoder layers of a transformers model
# ---------------------------------------------------------------------------
_ORIGINAL = "_labkit_original_forward"
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


def decoder_layers(model) -> nn.ModuleList:
    """The list of decoder layers of a Llama-family causal LM (``model.model.layers``)."""
    for path in ("model.layers", "model.model.layers", "base_model.model.model.layers", "transformer.h"):
        obj = model
        try:
            for name in path.split("."):
                obj = getattr(obj, name)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList) and len(obj):
            return obj
    raise LabkitError(f"cannot find the decoder layers of {type(model).__name__}; "
                      "expected a transformers Llama-family model (model.model.layers)")


def sqrt_segment(n_layers: int) -> int:
    """Segment length of Chen et al.'s layout: about sqrt(n) segments of about sqrt(n) layers.

    Built in lab 03, section 5 (the segment layout)."""
    return max(1, round(math.sqrt(n_layers)))


def _no_cache(kwargs: dict) -> dict:
    """A layer that runs twice must not write its KV cache twice: training needs no cache."""
    kwargs = dict(kwargs)
    for name in _CACHE_KWARGS:
        if kwargs.get(name) is not None:
            kwargs[name] = None
    if kwargs.get("use_cache"):
        kwargs["use_cache"] = False
    return kwargs


def _segment_forward(forwards: list, shape: dict):
    """A forward that runs layers ``forwards[0], forwards[1], ...`` as ONE checkpointed function.

    The model calls the first layer of the segment as
    ``layer(hidden_states, attention_mask=..., position_embeddings=(cos, sin),
    position_ids=..., cache=..., use_cache=...)``. We flatten all arguments
    with pytree (so the (cos, sin) tuple is seen too): tensors that require
    grad go to `checkpoint` positionally, everything else is closed over. Every
    layer of the segment gets the same keyword arguments, as in the model's own
    loop. ``shape`` records whether a layer returns a tensor or a tuple (older
    transformers), for the pass-through layers after the first.
    """
    def run_layers(args, kwargs):
        hidden, rest = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
        for f in forwards:
            out = f(hidden, *rest, **kwargs)
            hidden = out if isinstance(out, torch.Tensor) else out[0]
        shape["tuple"] = not isinstance(out, torch.Tensor)
        return out

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():     # inference/generation: run as usual, cache and all
            return run_layers(args, dict(kwargs))
        leaves, spec = tree_flatten((args, _no_cache(kwargs)))
        # Tensors that need a gradient (the hidden states) go in positionally;
        # the rest (rotary cos/sin, position ids, masks, flags) is closed over.
        # The closure lives as long as the autograd graph, so it must not hold the
        # hidden states: that would keep every layer's input alive through backward.
        where = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor) and x.requires_grad]
        tensors_in = [leaves[i] for i in where]
        constants = [None if i in where else x for i, x in enumerate(leaves)]
        outputs = {}

        def run(*tensors):
            full = list(constants)
            for i, t in zip(where, tensors):
                full[i] = t
            a, kw = tree_unflatten(full, spec)
            flat, outputs["spec"] = tree_flatten(run_layers(a, kw))
            outputs["constants"] = [None if isinstance(x, torch.Tensor) else x for x in flat]
            outputs["where"] = [i for i, x in enumerate(flat) if isinstance(x, torch.Tensor)]
            return tuple(x for x in flat if isinstance(x, torch.Tensor))

        tensors_out = checkpoint(run, *tensors_in)
        # put the tensors back among the non-tensor outputs (None, ...) of the layer
        flat = list(outputs["constants"])
        for i, t in zip(outputs["where"], tensors_out):
            flat[i] = t
        return tree_unflatten(flat, outputs["spec"])

    return forward


def _pass_through(shape: dict):
    """Forward of a layer that its segment's first layer has already run: hand the input on."""
    def forward(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden,) if shape.get("tuple") else hidden
    return forward


def apply_checkpointing(model, every: int = 1, *, segment: int | None = None) -> list[list[int]]:
    """Checkpoint decoder layers of ``model`` with labkit's `checkpoint`; returns the checkpointed groups.

    * ``every=k``: layers 0, k, 2k, ... are checkpointed one by one (``k=1``: all
      of them, what ``model.gradient_checkpointing_enable()`` does); the others
      keep their activations.
    * ``segment=s``: *all* layers, in groups of ``s`` consecutive layers, each
      group one checkpoint: only the input of each group is kept, and backward
      recomputes a whole group at once. ``segment=sqrt_segment(n)`` is Chen
      et al.'s sqrt(n) layout.

    Outputs and gradients are those of the plain model. Undo with `remove_checkpointing`.

    Built in lab 03: the layout (the returned groups) in section 5 (``every_plan``,
    ``segment_plan``), the layer wrapping in section 6 (``checkpoint_layers``).
    """
    layers = decoder_layers(model)
    if any(getattr(layer, "gradient_checkpointing", False) for layer in layers):
        raise LabkitError("transformers' own gradient checkpointing is on; call "
                          "model.gradient_checkpointing_disable() before apply_checkpointing")
    n = len(layers)
    if segment is not None:
        if not isinstance(segment, int) or segment < 1:
            raise LabkitError(f"segment must be a positive integer, got {segment!r}")
        groups = [list(range(i, min(i + segment, n))) for i in range(0, n, segment)]
    else:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise LabkitError(f"every must be a positive integer, got {every!r}")
        groups = [[i] for i in range(0, n, every)]
    remove_checkpointing(model)
    for group in groups:
        originals = [layers[i].forward for i in group]
        shape: dict = {}
        for i in group:
            setattr(layers[i], _ORIGINAL, layers[i].__dict__.get("forward"))
        layers[group[0]].forward = _segment_forward(originals, shape)
        for i in group[1:]:
            layers[i].forward = _pass_through(shape)
    return groups


def remove_checkpointing(model) -> None:
    """Give every decoder layer its own forward back (undoes `apply_checkpointing`)."""
    for layer in decoder_layers(model):
        if _ORIGINAL in layer.__dict__:
            original = layer.__dict__.pop(_ORIGINAL)
            if original is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = original


def checkpointed_layers(model) -> list[int]:
    """Indices of the layers whose forward labkit has replaced (checkpointed or run by their segment)."""
    return [i for i, layer in enumerate(decoder_layers(model)) if _ORIGINAL in layer.__dict__]

"""Checkpointing the decoder layers of a `transformers` Llama-family model.

`apply_checkpointing` replaces the forward of layers 0, k, 2k, ... (``every=k``) or of the first layer
of each group of ``segment`` consecutive layers (Chen et al.'s sqrt(n) layout: `sqrt_segment`) with
`segment_forward`, which runs the whole group as one `checkpoint`; the group's other layers pass their
input on (`_pass_through`). `remove_checkpointing` undoes it. Built in lab 03 §5 (the layouts, i.e. the
returned groups: ``every_plan``, ``segment_plan``, ``sqrt_segment``) and §6 (the layer wrapping,
``checkpoint_layers``); §7 measures each layout's memory and time.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..errors import LabkitError
from .call import checkpoint

__all__ = ["apply_checkpointing", "remove_checkpointing", "checkpointed_layers", "decoder_layers", "sqrt_segment",
           "segment_forward"]


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


def segment_forward(forwards: list, shape: dict):
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


_segment_forward = segment_forward   # the old private name (issue 24 named it as one a notebook might use)


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
        layers[group[0]].forward = segment_forward(originals, shape)
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

"""Freeze tuning: train only the last ``k`` decoder layers, or chosen modules of them (built in lab 13 §3).

No new parameters -- LLaMA-Factory's "freeze" (peft has none): the top layers are the most
task-specific, so they alone train and everything else is frozen.
"""
from __future__ import annotations

from torch import nn

from ..errors import LabkitError
from .checks import _freeze_all, _positive_int
from .ia3 import _as_names

__all__ = ["freeze", "_decoder_layers"]

def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers: the ``nn.ModuleList`` as long as ``num_hidden_layers``."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise LabkitError(f"found no list of {count} decoder layers in this {type(model).__name__}; "
                      "freeze() needs a transformers decoder (model.model.layers, transformer.h, ...)")


def freeze(model: nn.Module, last_k: int | None = None, modules=None) -> nn.Module:
    """Freeze tuning: everything frozen except the last ``last_k`` decoder layers -- or, with
    ``modules`` (e.g. ``["mlp"]``, ``["self_attn.v_proj"]``), only those modules of them. Returns
    ``model``. Built in lab 13, section 3.

    ``last_k=None`` means every layer (then ``modules`` picks what trains), like LLaMA-Factory's
    ``freeze_trainable_layers`` / ``freeze_trainable_modules``. Embeddings, the final norm and the
    LM head stay frozen. The idea: the top layers are the most task-specific, the bottom ones the
    most general; no new parameters, but also no memory saved on the weights themselves.
    """
    layers = _decoder_layers(model)
    if last_k is None and modules is None:
        raise LabkitError("freeze() needs last_k=<number of top layers to train> and/or modules=['mlp', ...]")
    if last_k is not None:
        _positive_int(last_k, "last_k")
        if last_k > len(layers):
            raise LabkitError(f"last_k={last_k} but the model has {len(layers)} layers")
    names = None if modules is None else ([modules] if isinstance(modules, str) else _as_names(modules, "modules"))
    if names is not None and not names:
        raise LabkitError("modules must name at least one module, e.g. ['mlp']")
    chosen = list(layers)[len(layers) - (last_k or len(layers)):]
    _freeze_all(model)
    matched = set()
    for layer in chosen:
        for pname, p in layer.named_parameters():
            hits = [m for m in (names or [""]) if not m or f".{m}." in f".{pname}"]
            if hits:
                p.requires_grad_(True)
                matched.update(hits)
    missing = [m for m in (names or []) if m not in matched]
    if missing:
        inside = sorted({pname.split(".")[0] for pname, _ in chosen[0].named_parameters()})
        raise LabkitError(f"module {missing[0]!r} is in none of the chosen layers; a layer holds: {', '.join(inside)}")
    return model

"""Copying trained weights between labkit's methods and peft's models, either way (lab 13 §4).

Lab 13 §4 proves each method equal to peft bit for bit: the same weights in both, the same logits.
`load_from_peft` and `copy_to_peft` pair every trained tensor with peft's and check the shapes
first, so a mismatched configuration is an error that names what differs, not a silent copy.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import LabkitError
from .ia3 import ia3_layers
from .prefix import PrefixTuning
from .prompts import _VirtualTokens

__all__ = ["load_from_peft", "copy_to_peft", "_own_state", "_pairs"]

def _own_state(ours: nn.Module) -> dict[str, torch.Tensor]:
    """A soft-prompt module's trainable tensors, named as in peft's prompt encoder (``embedding.weight``,
    ``mlp_head.0.weight``, ``lstm_head.weight_ih_l0``, ``transform.2.bias`` ...)."""
    return {k: v for k, v in ours.state_dict(keep_vars=True).items() if not k.startswith("model.")}


def _pairs(ours: nn.Module, peft_model):
    """(our tensor, peft's tensor, name) for every trained tensor, checked to correspond."""
    adapter = getattr(peft_model, "active_adapter", "default")
    if isinstance(ours, (_VirtualTokens, PrefixTuning)):
        encoders = getattr(peft_model, "prompt_encoder", None)
        if encoders is None or adapter not in encoders:
            raise LabkitError(f"{type(ours).__name__} copies a peft prompt-learning model "
                              f"(PromptTuning/PromptEncoder/PrefixTuningConfig), got {type(peft_model).__name__}")
        theirs = encoders[adapter].state_dict(keep_vars=True)
        mine = _own_state(ours)
        if set(mine) != set(theirs) or any(mine[k].shape != theirs[k].shape for k in mine):
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in theirs.items())
            raise LabkitError(f"the peft model's prompt encoder ({shapes}) does not match this "
                              f"{type(ours).__name__} (num_virtual_tokens, encoder type/size and "
                              "prefix_projection must be the same)")
        return [(mine[k], theirs[k], k) for k in mine]
    layers = ia3_layers(ours)
    if not layers:
        raise LabkitError("nothing to copy: pass a PromptTuning, PromptEncoder, PrefixTuning, "
                          "or a model after inject_ia3")
    inner = peft_model.get_base_model()
    pairs = []
    for name, layer in layers.items():
        try:
            theirs = inner.get_submodule(name).ia3_l[adapter]
        except (AttributeError, KeyError):
            raise LabkitError(f"the peft model has no (IA)^3 vector at {name!r}; use the same target_modules") from None
        if theirs.numel() != layer.ia3_l.numel():
            raise LabkitError(f"{name}: peft's (IA)^3 vector has {theirs.numel()} entries, ours {layer.ia3_l.numel()}")
        pairs.append((layer.ia3_l, theirs, name))
    return pairs


@torch.no_grad()
def load_from_peft(ours: nn.Module, peft_model) -> nn.Module:
    """Copy a peft model's trained weights into ours (a `PromptTuning`, `PromptEncoder`,
    `PrefixTuning`, or a model after `inject_ia3`); returns ``ours``. The configurations must
    match (same virtual tokens, encoder, targets), or a `LabkitError` says what differs."""
    for mine, theirs, _ in _pairs(ours, peft_model):
        mine.copy_(theirs.reshape(mine.shape))
    return ours


@torch.no_grad()
def copy_to_peft(ours: nn.Module, peft_model):
    """The reverse of `load_from_peft`: our weights into the peft model; returns ``peft_model``."""
    for mine, theirs, _ in _pairs(ours, peft_model):
        theirs.copy_(mine.reshape(theirs.shape))
    return peft_model

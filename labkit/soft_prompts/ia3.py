"""(IA)^3: one learned vector per chosen linear layer that rescales its output or input (built in lab 13 §3).

The vectors start at ones, so step 0 is the pretrained model. Which layers are wrapped, and which
of them count as feedforward (scaled on the input), follows peft's ``IA3Config`` matching rules
and defaults (`IA3_TARGETS`, `IA3_FEEDFORWARD`), so labkit and peft wrap the same layers. The
name matching (`_as_names`) is shared with `freeze`.
"""
from __future__ import annotations

import re

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import LabkitError
from .checks import _freeze_all

__all__ = ["IA3Linear", "ia3_layers", "inject_ia3", "IA3_TARGETS", "IA3_FEEDFORWARD", "_features", "_as_names",
           "_is_target", "_is_feedforward", "_ia3_targets"]

# peft's defaults when target_modules / feedforward_modules are not given (peft.utils.constants)
IA3_TARGETS = {"llama": ["k_proj", "v_proj", "down_proj"], "qwen2": ["q_proj", "v_proj", "down_proj"],
               "mistral": ["k_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "mlp.c_proj"],
               "gpt_neox": ["query_key_value", "dense_4h_to_h"]}
IA3_FEEDFORWARD = {"llama": ["down_proj"], "qwen2": ["down_proj"], "mistral": ["down_proj"],
                   "gpt2": ["mlp.c_proj"], "gpt_neox": ["dense_4h_to_h"]}


def _features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):             # GPT-2's "linear": weight stored (in, out)
        return tuple(module.weight.shape)
    raise LabkitError(f"(IA)^3 rescales nn.Linear or Conv1D layers, not {type(module).__name__}")


class IA3Linear(nn.Module):
    """A frozen linear layer with a learned vector ``ia3_l`` (all ones at the start). Built in
    lab 13, section 3.

    ``is_feedforward=False`` (keys, values): ``y = base(x) * l`` -- one scale per output feature;
    ``is_feedforward=True`` (the MLP's down projection): ``y = base(x * l)`` -- one scale per
    input feature, i.e. per MLP hidden unit. peft stores ``l`` as ``(out, 1)`` / ``(1, in)``;
    here it is a plain vector (the same numbers).
    """

    def __init__(self, base: nn.Module, is_feedforward: bool = False):
        super().__init__()
        d_in, d_out = _features(base)
        self.base = base
        self.is_feedforward = bool(is_feedforward)
        self.ia3_l = nn.Parameter(torch.ones(d_in if self.is_feedforward else d_out, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_feedforward:                # scale in the vector's dtype (fp32), run the layer in x's
            return self.base((x.to(self.ia3_l.dtype) * self.ia3_l).to(x.dtype))
        y = self.base(x)
        return (y * self.ia3_l).to(y.dtype)


def ia3_layers(model: nn.Module) -> dict[str, IA3Linear]:
    """Every `IA3Linear` in ``model``, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, IA3Linear)}


def _as_names(value, what: str):
    if value is None or isinstance(value, str):
        return value
    names = list(value) if isinstance(value, (list, tuple, set, frozenset)) else None
    if names is None or not all(isinstance(t, str) and t for t in names):
        raise LabkitError(f"{what} must be a regex string or module names like ['k_proj', 'v_proj'], got {value!r}")
    return names


def _is_target(name: str, targets) -> bool:
    """peft's rule: a string is a regex that must match the full name; a list matches a full name
    or a ``"." + entry`` suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return name in targets or any(name.endswith("." + t) for t in targets)


def _is_feedforward(name: str, feedforward) -> bool:
    """peft's rule for feedforward_modules: a full-match regex, or a plain suffix (no dot needed)."""
    if isinstance(feedforward, str):
        return re.fullmatch(feedforward, name) is not None
    return any(name.endswith(t) for t in feedforward)


def _ia3_targets(model: nn.Module, target_modules, feedforward_modules) -> dict[str, bool]:
    """``{module name: is_feedforward}`` for the layers `inject_ia3` would wrap."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = _as_names(target_modules, "target_modules")
    feedforward = _as_names(feedforward_modules, "feedforward_modules")
    if targets is None:
        if model_type not in IA3_TARGETS:
            raise LabkitError(f"no default (IA)^3 targets for model type {model_type!r}; pass target_modules=[...]")
        targets = IA3_TARGETS[model_type]
    if feedforward is None:
        if model_type not in IA3_FEEDFORWARD:
            raise LabkitError(f"no default feedforward modules for model type {model_type!r}; pass "
                              "feedforward_modules=[...] (or [] for none)")
        feedforward = IA3_FEEDFORWARD[model_type]
    elif not isinstance(targets, str) and not isinstance(feedforward, str) and not set(feedforward) <= set(targets):
        raise LabkitError(f"feedforward_modules {sorted(feedforward)} must be a subset of target_modules "
                          f"{sorted(targets)}")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    modules = [(n, m) for n, m in model.named_modules() if n and not isinstance(m, IA3Linear)
               and not any(n.startswith(w + ".") for w in ia3_layers(model))]
    if isinstance(targets, str) and targets.lower() == "all-linear":
        chosen = [n for n, m in modules if isinstance(m, (nn.Linear, Conv1D)) and m is not head]
    else:
        chosen = [n for n, _ in modules if _is_target(n, targets)]
    if not chosen:
        linear = sorted({n.rpartition(".")[2] for n, m in modules if isinstance(m, (nn.Linear, Conv1D))})
        raise LabkitError(f"target_modules {targets!r} match no module of this model; its linear layers are: "
                          f"{', '.join(linear) or 'none'}")
    for n in chosen:
        _features(model.get_submodule(n))   # a one-line error for a norm or an embedding
    return {n: _is_feedforward(n, feedforward) for n in chosen}


def inject_ia3(model: nn.Module, target_modules=None, feedforward_modules=None) -> nn.Module:
    """Wrap the chosen linear layers of ``model`` in `IA3Linear` (in place), freeze everything
    else, return ``model``. Built in lab 13, section 3.

    Options and matching are peft's ``IA3Config``'s: ``target_modules`` names (a full name or a
    ``"." + name`` suffix), a full-match regex, or ``"all-linear"``; ``feedforward_modules`` (a
    subset) are scaled on their input, the others on their output. Left out, both default to
    peft's choice for the model type (Llama: ``k_proj, v_proj, down_proj``, with ``down_proj``
    feedforward).
    """
    chosen = _ia3_targets(model, target_modules, feedforward_modules)
    _freeze_all(model)
    for name, is_ff in chosen.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, IA3Linear(getattr(parent, child), is_feedforward=is_ff))
    return model

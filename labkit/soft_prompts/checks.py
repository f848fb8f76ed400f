"""The checks and small helpers every soft-prompt method shares (built in lab 13 §3).

Each wrapper starts the same way: is this a transformers causal LM, is that a positive integer,
freeze every weight; and each counts what trains the way peft's ``get_nb_trainable_parameters``
does. `_dims` reads hidden size, layers, key/value heads and head size as peft reads them, so the
prefix and the counts agree with peft on grouped-query models too.
"""
from __future__ import annotations

from torch import nn

from ..errors import LabkitError

__all__ = ["trainable_parameters", "_positive_int", "_check_model", "_freeze_all", "_dims"]

def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LabkitError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_model(model) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "get_input_embeddings") or \
            getattr(model, "config", None) is None:
        raise LabkitError(f"expected a transformers causal LM (e.g. labkit.models.load(...)[0]), "
                          f"got {type(model).__name__}")


def _freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def trainable_parameters(model: nn.Module) -> int:
    """Parameters with ``requires_grad`` (a tensor shared by two modules counted once), i.e. peft's
    ``get_nb_trainable_parameters()[0]``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _dims(config) -> dict:
    """The sizes the methods need, read the way peft reads them (``_prepare_prompt_learning_config``)."""
    hidden, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None)
    if kv_heads is None:                       # no grouped-query attention (GPT-2, GPT-NeoX): all heads
        kv_heads, head_dim = heads, hidden // heads
    else:
        head_dim = getattr(config, "head_dim", None) or hidden // heads
    return {"hidden": hidden, "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim}

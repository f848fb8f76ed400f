"""The argument checks the preference losses share: one line that says what to pass (lab 14 §4-6).

The reward loss, DPO and GRPO's advantage all take one float per pair (or per completion) and
token-id batches; each check turns a wrong type or shape into a `LabkitError` that names it.
"""
from __future__ import annotations

import math

import torch

from ..errors import LabkitError

__all__ = ["_positive_number", "_float_tensor", "_same_shape", "_id_tensor"]

def _positive_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise LabkitError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _float_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        what = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise LabkitError(f"{name} must be a float tensor (one value per pair), got {what}")
    return x


def _same_shape(tensors: dict) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise LabkitError("these must have the same shape (one value per pair): "
                          + ", ".join(f"{n} {s}" for n, s in shapes.items()))


def _id_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point() or x.dtype == torch.bool:
        shape = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise LabkitError(f"{name} must be an integer tensor of shape (batch, length), got {shape}")
    return x

"""The one-line argument checks every decoding piece shares.

Why a module of its own: the processors, `generate` and ``python -m labkit decode`` all refuse a bad
logits tensor, a bad ``input_ids`` or a non-positive setting the same way -- one line that says what to
pass -- so they read these four checks. Built with the processors in lab 10 §3.
"""
from __future__ import annotations

import math

import torch

from ..errors import LabkitError

__all__: list[str] = []


def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise LabkitError(f"logits must be a float tensor of shape (batch, vocab), got {shape}")


def _check_ids(input_ids, logits) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise LabkitError(f"input_ids must be an integer tensor of shape (batch, length), got {shape}")
    if input_ids.shape[0] != logits.shape[0]:
        raise LabkitError(f"input_ids has {input_ids.shape[0]} rows but logits has {logits.shape[0]}")


def _positive_number(value, name: str, hint: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise LabkitError(f"{name} must be a positive number, got {value!r}{hint}")
    return float(value)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LabkitError(f"{name} must be a positive integer, got {value!r}")
    return value

"""Argument checks shared by the retrieval pieces of lab 15: one line that says what to pass.

Why a module: chunking, search, the LangChain pieces and the CLI all refuse a bad size or a
non-text input the same way (a `LabkitError` naming the argument), so the checks live once.
"""
from __future__ import annotations

import math

import torch

from ..errors import LabkitError

__all__: list[str] = []     # private helpers: imported by name from the sibling modules


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LabkitError(f"{name} must be a positive integer, got {value!r}")
    return value


def _number(value, name: str, low: float = -math.inf, positive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < low or (positive and value <= 0):
        need = "a positive number" if positive else f"a number >= {low}"
        raise LabkitError(f"{name} must be {need}, got {value!r}")
    return value


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_text(text, name: str = "text") -> None:
    if not isinstance(text, str):
        raise LabkitError(f"{name} must be a str, got {type(text).__name__}")

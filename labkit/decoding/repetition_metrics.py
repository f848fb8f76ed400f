"""Repetition metrics of one generated sequence: `distinct_n` and `repetition_rate`.

Why a module of its own: they measure tokens, not models -- Li et al. 2016's distinct-n (the share of
n-grams that are distinct) and its complement, the share of n-gram occurrences that repeat an earlier
one (Holtzman et al. 2020 on degeneration) -- and the repetition grid, the exercises and the benches
read them on any list of ids.

Built in lab 10 §3 ("two repetition metrics"), checked in lab 10 §4, measured on every decoding
setting in lab 10 §5.
"""
from __future__ import annotations

import torch

from ..errors import LabkitError
from .checks import _positive_int

__all__ = ["distinct_n", "repetition_rate"]


def _ngrams(tokens, n: int) -> list[tuple]:
    n = _positive_int(n, "n")
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 1:
            raise LabkitError(f"tokens must be one sequence (1-D), got shape {tuple(tokens.shape)}; "
                              "call once per generated sequence")
        tokens = tokens.tolist()
    tokens = list(tokens)
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens, n: int) -> float:
    """Distinct n-grams / all n-grams of one sequence (Li et al. 2016); 0.0 if it has none."""
    grams = _ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(tokens, n: int) -> float:
    """Share of n-gram occurrences that repeat an earlier one: ``1 - distinct_n``; 0.0 if none."""
    grams = _ngrams(tokens, n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0

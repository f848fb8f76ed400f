"""Checkers for the exercises at the end of each lab.

A learner writes an answer in the notebook and calls ``check("00.fp16_max", answer)``.
Each checker computes the expected value *independently* (from torch, or
from a model built on ``meta``), so the notebook never shows the answer.
An unanswered exercise (``None``) just prints a reminder: notebooks still
run top to bottom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .errors import LabkitError


@dataclass(frozen=True)
class Exercise:
    question: str
    expected: Callable[[], float]
    rel_tol: float
    hint: str


def _fp16_max() -> float:
    import torch

    return float(torch.finfo(torch.float16).max)


def _tf32_eps() -> float:
    return 2.0 ** -10  # 10 mantissa bits, like fp16, with fp32's 8 exponent bits


def _llama2_13b_params() -> float:
    from . import models

    return float(models.count_params(models.build("llama-2-13b", device="meta")))


def _llama3_8b_bf16_gb() -> float:
    from . import models

    return 2 * models.count_params(models.build("llama-3-8b", device="meta")) / 1e9


EXERCISES: dict[str, Exercise] = {
    "00.fp16_max": Exercise("largest finite fp16 value", _fp16_max, 0.0,
                            "the largest exponent field that is not all ones is 30: 2^(30-15) x (2 - 2^-10)"),
    "00.tf32_eps": Exercise("machine epsilon of tf32", _tf32_eps, 0.0,
                            "epsilon is 2^-(mantissa bits); tf32 keeps fp16's mantissa"),
    "00.llama2_13b_params": Exercise("parameters of Llama-2-13B", _llama2_13b_params, 0.0,
                                     "per layer: 4 h^2 (attention) + 3 h i (MLP) + 2 h (norms); plus 2 V h + h"),
    "00.llama3_8b_bf16_gb": Exercise("size in GB (1e9 bytes) of Llama-3-8B's weights in bf16",
                                     _llama3_8b_bf16_gb, 0.01, "2 bytes per parameter; count on `meta`"),
}


def check(name: str, answer) -> bool:
    """Print whether ``answer`` is right (within the exercise's tolerance) and return it."""
    if name not in EXERCISES:
        raise LabkitError(f"unknown exercise {name!r}; known: {', '.join(EXERCISES)}")
    ex = EXERCISES[name]
    if answer is None:
        print(f"[ ] {name}: not answered yet -- {ex.question}")
        return False
    expected = ex.expected()
    try:
        ok = math.isclose(float(answer), expected, rel_tol=ex.rel_tol, abs_tol=0.0)
    except (TypeError, ValueError):
        raise LabkitError(f"{name}: the answer must be a number, got {answer!r}") from None
    if ok:
        print(f"[x] {name}: correct ({answer:g})")
    else:
        print(f"[ ] {name}: not yet ({answer:g}). Hint: {ex.hint}")
    return ok

"""Exercises at the end of each lab: ``check(name, answer)`` and ``names(lab)``.

A learner answers in the notebook and calls ``check("00.fp16_max", answer)`` for a number or
``check("02.scaler_update", scaler_update)`` for a function they wrote; it prints one line and
returns ``True`` or ``False``. How answers are judged is in ``checker``; each lab's exercises
live in ``labNN`` (the number in the exercise's name).
"""
from __future__ import annotations

import difflib

from ..errors import LabkitError
from . import (lab00, lab01, lab02, lab03, lab04, lab05, lab06, lab07, lab08, lab09, lab10, lab11, lab12, lab13,
               lab14, lab15, lab16)
from .checker import CodeExercise, Exercise, check_code, check_number

EXERCISES: dict[str, Exercise | CodeExercise] = {}
for _module in (lab00, lab01, lab02, lab03, lab04, lab05, lab06, lab07, lab08, lab09, lab10, lab11, lab12, lab13, lab14,
                lab15, lab16):
    EXERCISES.update(_module.EXERCISES)


def check(name: str, answer, *, trials: int | None = None, seed: int | None = None) -> bool:
    """Print whether ``answer`` is right and return it.

    For a number: right if it matches to the precision you wrote it (at least 3 significant
    digits) or exactly. For a function: run on ``trials`` fresh random inputs (``seed`` fixes them)
    against the reference; the first input where it differs is printed."""
    ex = _get(name)
    if isinstance(ex, CodeExercise):
        return check_code(name, ex, answer, trials=trials, seed=seed)
    return check_number(name, ex, answer)


def names(lab=None) -> dict[str, str]:
    """``{name: kind}`` for every exercise (kind ``"number"`` or ``"code"``), or those of one lab
    (``names(2)`` or ``names("02")``)."""
    if lab is None:
        return {n: ex.kind for n, ex in EXERCISES.items()}
    try:
        prefix = f"{int(lab):02d}."
    except (TypeError, ValueError):
        raise LabkitError(f"lab must be a lab number such as 2 or '02', got {lab!r}") from None
    found = {n: ex.kind for n, ex in EXERCISES.items() if n.startswith(prefix)}
    if not found:
        labs = sorted({n[:2] for n in EXERCISES})
        raise LabkitError(f"no exercises for lab {prefix[:-1]}; labs with exercises: {', '.join(labs)}")
    return found


def _get(name: str) -> Exercise | CodeExercise:
    if name not in EXERCISES:
        close = difflib.get_close_matches(str(name), EXERCISES, n=3, cutoff=0.5)
        same_lab = [n for n in EXERCISES if isinstance(name, str) and n[:3] == name[:3]]
        known = close or same_lab or list(EXERCISES)[:6]
        raise LabkitError(f"unknown exercise {name!r}; did you mean: {', '.join(known)}? "
                          f"(exercises.names() lists them all)")
    return EXERCISES[name]


__all__ = ["CodeExercise", "EXERCISES", "Exercise", "check", "names"]

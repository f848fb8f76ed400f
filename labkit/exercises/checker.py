"""How an answer is checked: numbers at the precision the learner gave, functions on random inputs.

Two kinds of exercise end every lab:

* ``Exercise`` asks for a number. Its expected value is computed independently (torch, a model
  built on ``meta``, a hand formula), so the notebook never shows it. An answer counts as right
  when it agrees with the expected value to the digits the learner wrote, given at least
  ``digits`` significant digits (``0.179`` for 7/39), or when it is the exact value (``2``).
* ``CodeExercise`` asks for a function. ``check`` calls it on fresh random inputs beside a
  reference (torch, peft, bitsandbytes, or labkit's canonical copy, which the labs prove equal
  to the library) and reports the first input where the two differ, and by how much.

Either way ``check`` prints one line and returns ``True`` or ``False``; an unanswered exercise
(``None``, or a student-edition stub that raises ``NotImplementedError``) prints a reminder, so
a notebook still runs top to bottom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from ..errors import LabkitError


@dataclass(frozen=True)
class Exercise:
    """A question whose answer is one number."""

    question: str
    expected: Callable[[], float]
    rel_tol: float
    hint: str
    digits: int = 3          # fewest significant digits accepted for a rounded answer
    kind = "number"


@dataclass(frozen=True)
class CodeExercise:
    """A function to write, checked on fresh random inputs against ``reference``.

    ``inputs(gen)`` draws one input (a tuple of positional arguments) from the torch Generator
    ``gen``; ``run(answer, args)`` calls the learner's function (default ``answer(*args)``), and
    ``reference(*args)`` gives the value it must match within ``rtol``/``atol``. ``solution``
    names the function the lab's ``solution`` cells define for it (the instructor's key).
    """

    question: str
    reference: Callable[..., Any]
    inputs: Callable[[Any], tuple]
    hint: str
    solution: str
    trials: int = 10
    rtol: float = 1e-5
    atol: float = 1e-6
    run: Callable[[Callable, tuple], Any] | None = None
    check_dtype: bool = False
    compare: Callable[[Any, Any], str | None] | None = field(default=None, repr=False)
    kind = "code"


def draw_int(gen, low: int, high: int) -> int:
    """A random integer in [low, high] from the torch Generator ``gen`` (the code exercises' inputs)."""
    import torch

    return int(torch.randint(low, high + 1, (1,), generator=gen))


# ----------------------------------------------------------------------------- numbers
def check_number(name: str, ex: Exercise, answer) -> bool:
    if answer is None:
        print(f"[ ] {name}: not answered yet -- {ex.question}")
        return False
    value, unit = as_number(name, answer)   # before computing the expected value: a typo fails fast
    expected = float(ex.expected())
    ok = accepts(value, unit, expected, ex.rel_tol, ex.digits)
    if ok:
        print(f"[x] {name}: correct ({show(value)})")
    else:
        print(f"[ ] {name}: not yet ({show(value)}). Hint: {ex.hint}")
    return ok


def accepts(value: float, unit: float | None, expected: float, rel_tol: float, digits: int) -> bool:
    """Right if within the exercise's tolerance (never tighter than float noise), if it is the integer
    the expected value is up to float noise, or if it is the expected value correctly rounded to the
    last digit the learner wrote (``unit``: the value of that digit). Fewer than ``digits``
    significant digits read as if padded with zeros (a float cannot keep the zeros of 1.30e10), so
    0.18 for 7/39 = 0.17949 is wrong while 0.179 is right."""
    if math.isclose(value, expected, rel_tol=max(rel_tol, 1e-9), abs_tol=1e-15):
        return True
    nearest = round(expected)
    if value == nearest and abs(expected - nearest) <= 1e-6 * max(1.0, abs(expected)):
        return True
    if value == 0 or not math.isfinite(value):
        return False
    coarsest = 10.0 ** (math.floor(math.log10(abs(value))) - digits + 1)
    unit = coarsest if unit is None else min(unit, coarsest)
    return abs(value - expected) <= 0.5 * unit * (1 + 1e-9)


def as_number(name: str, answer) -> tuple[float, float | None]:
    """The learner's answer as a float and the value of its last written digit (None if unknown).

    Accepts an int, float, numeric string ("65504", "6.5e4", "65,504") or a one-element tensor /
    array; anything else (True, a list, "2^15", a complex) is a one-line LabkitError."""
    shown = " ".join(repr(answer).split())             # one line, even for a matrix
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    why = "a number"
    value, text = None, None
    if isinstance(answer, bool):   # float(True) == 1.0: almost certainly a comparison typed by mistake
        why = "a number, not a bool (did you type a comparison?)"
    elif isinstance(answer, str):
        text = answer.strip().replace(",", "").replace("_", "")
        try:
            value = float(text)
        except ValueError:
            why = "a number (a string must hold a plain number, e.g. '65504' or '6.1e-05'; compute 2**-14 in Python)"
        if value is not None and math.isinf(value) and "inf" not in text.lower():
            value, why = None, "a number that fits in a float (this one overflows to inf)"
    else:
        numel = getattr(answer, "numel", None) or getattr(answer, "size", None)
        numel = numel() if callable(numel) else numel
        if isinstance(numel, int) and numel != 1:
            why = f"one number, not {numel} values"
        else:
            try:
                value = float(answer.item() if hasattr(answer, "item") else answer)
            except (TypeError, ValueError, OverflowError, RuntimeError):
                value = None
            if value is not None:
                text = _shortest_text(answer, value)
    if value is None:
        raise LabkitError(f"{name}: the answer must be {why}, got {shown} ({type(answer).__name__})")
    return value, _last_digit_unit(text)


def _shortest_text(answer, value: float) -> str:
    """How the number reads: an int as typed, a float by its shortest repr at its own precision
    (a float32 tensor holding 0.179 reads '0.179', not '0.17900000512599945')."""
    if isinstance(answer, int):
        return str(answer)
    dtype = str(getattr(answer, "dtype", "float64"))
    if any(t in dtype for t in ("float32", "float16", "bfloat16")):
        import numpy as np

        return str(np.float32(value)) if "float32" in dtype else str(np.float16(value))
    return repr(value)


def _last_digit_unit(text: str | None) -> float | None:
    """0.001 for '0.179', 100 for '65500' (trailing zeros of an integer are not significant),
    1e-08 for '5.96e-8'; None for inf/nan or text that is not a plain decimal."""
    if text is None:
        return None
    if text.endswith(".0") and "e" not in text.lower():   # 65500.0 typed as a float reads like 65500
        text = text[:-2]
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if not d.is_finite() or d == 0:
        return None
    if "." not in text and "e" not in text.lower():
        d = d.normalize()
    return float(Decimal(1).scaleb(d.as_tuple().exponent))


def show(value: float) -> str:
    """An answer as the learner would read it: integers in full (13015864320), others with %g."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}"


# ----------------------------------------------------------------------------- code
def check_code(name: str, ex: CodeExercise, answer, trials: int | None = None, seed: int | None = None) -> bool:
    import torch

    if answer is None:
        print(f"[ ] {name}: not written yet -- {ex.question}")
        return False
    if not callable(answer):
        raise LabkitError(f"{name}: pass the function itself, e.g. check({name!r}, {ex.solution}), "
                          f"got {type(answer).__name__}")
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed())   # fresh inputs each call
    run = ex.run or (lambda fn, args: fn(*args))
    n = ex.trials if trials is None else trials
    for trial in range(n):
        args = ex.inputs(gen)
        want = ex.reference(*_copy(args))
        try:
            got = run(answer, _copy(args))
        except NotImplementedError:
            print(f"[ ] {name}: not written yet -- {ex.question}")
            return False
        except Exception as err:  # the learner's bug, shown in one line
            msg = " ".join(str(err).split())[:160]
            print(f"[ ] {name}: raised {type(err).__name__}: {msg} -- on input {describe(args)}")
            return False
        diff = (ex.compare or (lambda g, w: difference(g, w, ex.rtol, ex.atol, ex.check_dtype)))(got, want)
        if diff is not None:
            print(f"[ ] {name}: differs on input {describe(args)}: {diff}. Hint: {ex.hint}")
            return False
    print(f"[x] {name}: passed on {n} random inputs")
    return True


def _copy(args: tuple) -> tuple:
    """Fresh copies, so neither function sees what the other did in place."""
    import copy

    import torch

    return tuple(a.detach().clone() if isinstance(a, torch.Tensor) else copy.deepcopy(a) for a in args)


def difference(got, want, rtol: float = 1e-5, atol: float = 1e-6, check_dtype: bool = False) -> str | None:
    """None if ``got`` matches ``want``, else a short description of the first difference."""
    import torch

    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if tuple(got.shape) != tuple(want.shape):
            return f"shape {tuple(got.shape)} instead of {tuple(want.shape)}"
        if check_dtype and got.dtype != want.dtype:
            return f"dtype {str(got.dtype).replace('torch.', '')} instead of {str(want.dtype).replace('torch.', '')}"
        if want.dtype == torch.bool or not (want.is_floating_point() or got.is_floating_point()):
            bad = (got.to(want.dtype) != want)
        else:
            g, w = got.detach().double(), want.detach().double()
            close = torch.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
            bad = ~close
        if not bad.any():
            return None
        idx = tuple(int(i) for i in bad.nonzero()[0])
        g, w = got[idx].item(), want[idx].item()
        where = f" at index {idx}" if idx else ""
        gap = f", off by {abs(g - w):.3g}" if math.isfinite(g) and math.isfinite(w) else ""
        return f"{int(bad.sum())} of {bad.numel()} values differ; first{where}: got {g:.6g}, expected {w:.6g}{gap}"
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"returned {_short(got)}, expected {len(want)} values"
        for i, (g, w) in enumerate(zip(got, want)):
            d = difference(g, w, rtol, atol, check_dtype)
            if d is not None:
                return f"value {i}: {d}"
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"returned keys {sorted(got) if isinstance(got, dict) else _short(got)}, expected {sorted(want)}"
        for k in want:
            d = difference(got[k], want[k], rtol, atol, check_dtype)
            if d is not None:
                return f"{k!r}: {d}"
        return None
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return None if got == want else f"got {_short(got)}, expected {_short(want)}"
    if isinstance(want, (int, float)):
        try:
            g = float(got.item() if hasattr(got, "item") else got)
        except (TypeError, ValueError, RuntimeError):
            return f"returned {_short(got)}, expected a number"
        if math.isclose(g, want, rel_tol=rtol, abs_tol=atol) or (math.isnan(g) and math.isnan(want)):
            return None
        return f"got {g:.6g}, expected {want:.6g}"
    return None if got == want else f"got {_short(got)}, expected {_short(want)}"


def _short(x) -> str:
    s = " ".join(repr(x).split())
    return s if len(s) <= 60 else s[:57] + "..."


def describe(args: tuple) -> str:
    """One input in one line: small tensors by value, larger ones by shape and dtype."""
    import torch

    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            dt = str(a.dtype).replace("torch.", "")
            if a.numel() <= 4:
                parts.append(f"tensor({[round(v, 6) if isinstance(v, float) else v for v in a.flatten().tolist()]}, "
                             f"{dt})" if a.dim() else f"tensor({a.item():.6g}, {dt})")
            else:
                parts.append(f"<{dt} tensor of shape {tuple(a.shape)}>")
        elif isinstance(a, torch.nn.Module):
            parts.append(f"<{type(a).__name__}>")
        else:
            parts.append(_short(a))
    text = "(" + ", ".join(parts) + ")"
    return text if len(text) <= 240 else text[:237] + "..."

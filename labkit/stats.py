"""The numbers behind every comparison a lab writes down.

A fine-tuned model that scores 0.43 against a baseline's 0.40 on 200 questions
may be better, or may be noise: 200 coin flips move that much. So the lab has a
house rule, and this module holds the arithmetic it needs:

* a sentence comparing two arms states its interval or its test --
  `wilson` for one accuracy, `paired_bootstrap` or `mcnemar` for two models
  scored on the same items, `bootstrap_ci` for any other statistic;
* a difference whose interval contains zero is written "no measurable
  difference" (`describe_difference` writes the phrase, `contains_zero` tests);
* an experiment that concludes something runs at least 3 seeds in the ``cpu``
  profile (1 in ``smoke``, which only checks the code path); `over_seeds`
  runs them and gives the mean with its t-interval, `default_seeds` picks them.

Only numpy and the standard library (`math.comb`, `math.erfc`): no scipy.
Every bootstrap draws from ``numpy.random.default_rng(seed)``, so a rerun
prints the same interval. Bad inputs raise `LabkitError` with one line.

In the labs: every comparison from lab 00 §3 on -- `over_seeds` (runs of one arm, t-interval) in
labs 02, 04-07, 09, 12-14; `wilson`, `mcnemar` and `paired_bootstrap` for models scored on the same
questions in labs 05, 08, 09, 15 and 16.
"""
from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from .errors import LabkitError

__all__ = [
    "wilson", "bootstrap_ci", "paired_bootstrap", "mcnemar", "over_seeds", "t_critical",
    "contains_zero", "describe_difference", "default_seeds",
    "PairedResult", "McNemarResult", "SeedsResult",
]


# ---------------------------------------------------------------------------
# Input checks and number formatting
# ---------------------------------------------------------------------------
def _as_int(x, name: str) -> int:
    if isinstance(x, bool):
        raise LabkitError(f"{name} must be a whole number, not {x!r}")
    try:
        return operator.index(x)  # int, numpy ints, integer 0-d tensors; not 5.0
    except TypeError:
        raise LabkitError(f"{name} must be a whole number, got {x!r}") from None


def _as_1d(values, name: str = "values") -> np.ndarray:
    """A list, numpy array or torch tensor as a 1-D float64 array with no NaN."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise LabkitError(f"{name} must be numbers (a list, numpy array or tensor)") from None
    if arr.ndim != 1:
        raise LabkitError(f"{name} must be 1-D (one number per item), got shape {arr.shape}")
    if arr.size == 0:
        raise LabkitError(f"{name} is empty; score at least one item first")
    if not np.all(np.isfinite(arr)):
        raise LabkitError(f"{name} contains NaN or inf; fix or drop those items first")
    return arr


def _as_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_1d(a, "a"), _as_1d(b, "b")
    if a.shape != b.shape:
        raise LabkitError(f"a and b must score the same items: got {a.size} and {b.size} values")
    return a, b


def _check_boot(n_boot, level) -> int:
    n_boot = _as_int(n_boot, "n_boot")
    if n_boot < 1:
        raise LabkitError(f"n_boot must be at least 1, got {n_boot}; 10_000 is the usual choice")
    if not 0 < level < 1:
        raise LabkitError(f"level must be between 0 and 1 (e.g. 0.95), got {level!r}")
    return n_boot


def _signed(x: float) -> str:
    """+0.040 / −0.010, with a real minus sign as in typeset tables."""
    return f"{x:+.3f}".replace("-", "\u2212")


def _format_p(p: float, n_boot: int | None = None) -> str:
    if p == 0 and n_boot:
        return f"p < {1 / n_boot:.2g}"  # no resample crossed zero
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}"


# ---------------------------------------------------------------------------
# One proportion
# ---------------------------------------------------------------------------
def wilson(k, n, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (z = 1.96: 95%).

    Unlike the textbook p ± z·sqrt(p(1-p)/n), it stays inside [0, 1] and is
    not zero-width at 0/n or n/n: ``wilson(0, 10)`` is (0.0, 0.278)."""
    k, n = _as_int(k, "k"), _as_int(n, "n")
    if n <= 0:
        raise LabkitError(f"n must be a positive number of trials, got {n}")
    if not 0 <= k <= n:
        raise LabkitError(f"k must be between 0 and n = {n} successes, got {k}")
    if not z > 0:
        raise LabkitError(f"z must be positive (1.96 for 95%), got {z!r}")
    z2 = z * z
    center = (k + z2 / 2) / (n + z2)
    half = z * math.sqrt(k * (n - k) / n + z2 / 4) / (n + z2)
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == n else min(1.0, center + half)
    return low, high


# ---------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------
_AXIS_STATS = (np.mean, np.median, np.sum)  # these accept axis=1: resample in one go


def _resampled(values: np.ndarray, stat: Callable, n_boot: int, seed) -> np.ndarray:
    """``stat`` of ``n_boot`` resamples (with replacement) of ``values``."""
    rng = np.random.default_rng(seed)
    n = values.size
    rows = max(1, 2_000_000 // n)  # draw in chunks: n_boot * n indices can be large
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        sample = values[rng.integers(0, n, size=(stop - start, n))]
        if stat in _AXIS_STATS:
            out[start:stop] = stat(sample, axis=1)
        else:
            out[start:stop] = [float(stat(row)) for row in sample]
    return out


def bootstrap_ci(values, stat: Callable = np.mean, n_boot: int = 10_000, level: float = 0.95,
                 seed=0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` (default: the mean) of 1-D ``values``.

    Resamples the items with replacement ``n_boot`` times and takes the middle
    ``level`` of the resampled statistics. Same seed, same interval. One value
    gives ``(v, v)``: one item says nothing about spread."""
    values = _as_1d(values)
    n_boot = _check_boot(n_boot, level)
    if values.size == 1:
        v = float(stat(values))
        return v, v
    boot = _resampled(values, stat, n_boot, seed)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedResult:
    """Mean difference a - b over paired items, its bootstrap interval and p-value."""

    diff: float
    low: float
    high: float
    p: float
    n: int
    level: float = 0.95
    n_boot: int = 10_000

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, unit: str = "") -> str:
        """The house-rule phrase: "no measurable difference" or "higher by ..."."""
        return describe_difference(self.low, self.high, unit)

    def __str__(self) -> str:
        return (f"{_signed(self.diff)} [{_signed(self.low)}, {_signed(self.high)}], "
                f"{_format_p(self.p, self.n_boot)} (n = {self.n} paired items)")


def paired_bootstrap(a, b, n_boot: int = 10_000, level: float = 0.95, seed=0) -> PairedResult:
    """Compare two arms scored on the same items: per-item correctness (bool or
    0/1) or per-item losses (floats), ``a[i]`` and ``b[i]`` for the same item.

    Resamples *items* -- the same index for a and b -- so the interval reflects
    how much the difference depends on which items were drawn. The two-sided
    p-value is ``2 * min(frac(boot <= 0), frac(boot >= 0))``, capped at 1; when
    no resample crosses zero it is 0 and prints as ``p < 1/n_boot``. A single
    item gives the interval (d, d) and p = 1: one item is no evidence."""
    a, b = _as_pair(a, b)
    n_boot = _check_boot(n_boot, level)
    d = a - b
    diff = float(d.mean())
    if d.size == 1:  # one item: nothing to resample, no test
        return PairedResult(diff=diff, low=diff, high=diff, p=1.0, n=1, level=level, n_boot=n_boot)
    boot = _resampled(d, np.mean, n_boot, seed)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    p = min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0)))
    return PairedResult(diff=diff, low=float(low), high=float(high), p=float(p), n=int(d.size),
                        level=level, n_boot=n_boot)


# ---------------------------------------------------------------------------
# McNemar's test for two classifiers on the same items
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class McNemarResult:
    """``b``: items only a got right; ``c``: items only b got right.

    ``statistic`` is min(b, c) for the exact test, the chi-square value otherwise."""

    b: int
    c: int
    statistic: float
    p: float
    exact: bool
    n: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        test = "exact binomial" if self.exact else f"chi-square {self.statistic:.3f}"
        return f"b = {self.b}, c = {self.c} ({test}), {_format_p(self.p)} (n = {self.n} paired items)"


def _as_correct(x, name: str) -> np.ndarray:
    arr = _as_1d(x, name)
    if not np.all((arr == 0) | (arr == 1)):
        raise LabkitError(f"{name} must be per-item correctness (True/False or 0/1)")
    return arr.astype(bool)


def mcnemar(a_correct, b_correct) -> McNemarResult:
    """McNemar's test: do two models, scored right/wrong on the same items, differ?

    Only the items where they disagree count: ``b`` (a right, b wrong) and
    ``c`` (a wrong, b right). Under "no difference" each disagreement is a coin
    flip. With b + c < 25 the exact binomial test, p = min(1, 2·P(X <= min(b, c)))
    for X ~ Binom(b + c, 1/2); otherwise chi-square with continuity correction,
    (|b - c| - 1)² / (b + c) on 1 degree of freedom (the correction is floored
    at 0, so b = c gives p = 1). No disagreements: p = 1."""
    a = _as_correct(a_correct, "a_correct")
    b_ = _as_correct(b_correct, "b_correct")
    if a.shape != b_.shape:
        raise LabkitError(f"a_correct and b_correct must score the same items: got {a.size} and {b_.size}")
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    m = b + c
    if m == 0:
        return McNemarResult(b, c, 0.0, 1.0, True, int(a.size))
    if m < 25:
        tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2**m
        return McNemarResult(b, c, float(min(b, c)), min(1.0, 2 * tail), True, int(a.size))
    x = max(0, abs(b - c) - 1) ** 2 / m
    return McNemarResult(b, c, x, math.erfc(math.sqrt(x / 2)), False, int(a.size))


# ---------------------------------------------------------------------------
# Several seeds
# ---------------------------------------------------------------------------
# Two-sided 95% critical values of Student's t, t_{0.975, df}, for df = 1..30
# (standard table, 4 decimals). Beyond 30, `t_critical` uses the Cornish-Fisher
# expansion around z = 1.96, which is within 1e-4 of the exact value there.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_critical(df) -> float:
    """t_{0.975, df}: the 95% two-sided multiplier for a mean of df + 1 runs."""
    df = _as_int(df, "df")
    if df < 1:
        raise LabkitError(f"df must be at least 1 (two runs), got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class SeedsResult:
    """Mean of one number over seeds, with its 95% t-interval [low, high]."""

    mean: float
    low: float
    high: float
    std: float
    values: list
    seeds: list

    @property
    def n(self) -> int:
        return len(self.values)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.4g} (one run: no interval)"
        return (f"{self.mean:.4g} ± {(self.high - self.low) / 2:.2g} "
                f"[{self.low:.4g}, {self.high:.4g}] (95% t-interval, {self.n} runs)")


def _as_number(x, seed) -> float:
    if hasattr(x, "detach") or isinstance(x, np.ndarray):
        if (x.numel() if hasattr(x, "numel") else x.size) != 1:
            raise LabkitError(f"fn(seed={seed!r}) returned an array of shape {tuple(x.shape)}; return one number")
        x = x.item()
    if isinstance(x, np.generic):  # numpy scalars: np.float32(0.5), np.int64(3)
        x = x.item()
    if not isinstance(x, numbers.Real):
        raise LabkitError(f"fn(seed={seed!r}) returned {type(x).__name__}; return a number "
                          "or a dict of numbers")
    v = float(x)
    if not math.isfinite(v):
        raise LabkitError(f"fn(seed={seed!r}) returned {v}; that run diverged -- fix it before averaging")
    return v


def _summarize(values: list[float], seeds: list) -> SeedsResult:
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if arr.size == 1:
        return SeedsResult(mean, mean, mean, 0.0, list(values), list(seeds))
    std = float(arr.std(ddof=1))
    half = t_critical(arr.size - 1) * std / math.sqrt(arr.size)
    return SeedsResult(mean, mean - half, mean + half, std, list(values), list(seeds))


def over_seeds(fn: Callable, seeds: Iterable) -> SeedsResult | dict[str, SeedsResult]:
    """Run ``fn(seed)`` for each seed, in order, and summarise the results.

    ``fn`` returns a number (float, int, 0-d tensor): you get a `SeedsResult`
    with the mean, sample std (ddof=1) and 95% t-interval
    mean ± t_{0.975, n-1}·std/sqrt(n) (`t_critical`). ``fn`` may instead return
    a dict of numbers (e.g. ``{"loss": ..., "acc": ...}``) with the same keys
    each time: then you get a dict name -> `SeedsResult`.

    One seed runs the code but gives no interval: low = high = mean, std = 0.0.
    That is fine for the ``smoke`` profile, not for a conclusion."""
    if isinstance(seeds, (int, str)) or not isinstance(seeds, Iterable):
        raise LabkitError(f"seeds must be a list of seeds such as range(3), got {seeds!r}")
    seeds = list(seeds)
    if not seeds:
        raise LabkitError("seeds is empty; pass at least one seed, e.g. [0, 1, 2]")
    outputs = [fn(seed) for seed in seeds]
    if isinstance(outputs[0], Mapping):
        keys = list(outputs[0])
        for seed, out in zip(seeds, outputs):
            if not isinstance(out, Mapping) or set(out) != set(keys):
                raise LabkitError(f"fn(seed={seed!r}) must return a dict with the keys {keys}, "
                                  "like the first seed")
        return {key: _summarize([_as_number(out[key], s) for s, out in zip(seeds, outputs)], seeds)
                for key in keys}
    return _summarize([_as_number(out, s) for s, out in zip(seeds, outputs)], seeds)


def default_seeds(profile_name: str | None = None) -> list[int]:
    """The house rule's seeds: one in ``smoke``, three in ``cpu`` and ``full``."""
    from .env import by_profile

    return by_profile(smoke=[0], cpu=[0, 1, 2], full=[0, 1, 2], profile_name=profile_name)


# ---------------------------------------------------------------------------
# Writing the sentence
# ---------------------------------------------------------------------------
def _interval(low, high) -> tuple[float, float]:
    if high is None and hasattr(low, "low") and hasattr(low, "high"):
        low, high = low.low, low.high  # a PairedResult or SeedsResult
    try:
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise LabkitError("pass an interval as two numbers (low, high) or a result with .low/.high") from None
    if not low <= high:
        raise LabkitError(f"low must not exceed high, got [{low}, {high}]; check the order")
    return low, high


def contains_zero(low, high=None) -> bool:
    """Does [low, high] include 0 (endpoints included)? Also takes a result object."""
    low, high = _interval(low, high)
    return low <= 0 <= high


def describe_difference(low, high=None, unit: str = "") -> str:
    """The house-rule phrase for a difference a - b with interval [low, high].

    Contains zero: "no measurable difference". Otherwise "higher by 0.01 to
    0.09" (or "lower by ...", magnitudes smallest first), with ``unit``
    appended (``"pp"`` -> "higher by 1 to 9 pp"; ``"%"`` is attached)."""
    low, high = _interval(low, high)
    if low <= 0 <= high:
        return "no measurable difference"
    word, small, large = ("higher", low, high) if low > 0 else ("lower", -high, -low)
    sep = "" if not unit or unit.startswith("%") else " "
    return f"{word} by {small:.3g} to {large:.3g}{sep}{unit}"

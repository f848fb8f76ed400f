"""Scoring the answers: extraction, Wilson intervals, voting, tests across prompts, failure analysis.

Why a module of its own: every strategy is scored by the same answer parser and the same statistics, so
none of them can favour a strategy. Built in lab 08 §4-5 (`extract_answer`, `majority_vote`), §6
(`wilson_ci`), §6b (`cochran_q`, `prompt_spread`: does the choice of exemplars matter?) and §11
(`diagnose`: where a wrong chain first goes wrong).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from ..errors import LabkitError

__all__ = ['_NUMBER', '_ANSWER_RE', 'normalize_number', 'extract_answer', 'wilson_ci', 'majority_vote', 'chi2_sf', 'CochranResult', 'cochran_q', 'SpreadResult', 'prompt_spread', '_EQ', 'diagnose']


# ---------------------------------------------------------------------------
# Answer extraction and confidence intervals
# ---------------------------------------------------------------------------
_NUMBER = r"(-)?\s*\$?\s*\**\s*(\d[\d,]*(?:\.\d+)?)"
_ANSWER_RE = re.compile(r"(?:####|answer(?:\s*\(arabic numerals\))?\s*(?:is:?|:|=))\s*\**\s*" + _NUMBER, re.IGNORECASE)


def normalize_number(text: str) -> str:
    """"1,234." -> "1234", "-5" -> "-5", "2.50" -> "2.5", "12.0" -> "12"."""
    s = text.strip().rstrip(".").replace(",", "").replace("$", "").replace(" ", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def extract_answer(text: str | None) -> str | None:
    """The final numeric answer of a completion, normalised; None when it states none.

    Recognises "The answer is N", "Therefore, the answer (arabic numerals) is N" (zero-shot-CoT's
    stage 2) and GSM8K's "#### N". With several answer statements the *last* one counts (a model
    that corrects itself ends with its final answer). A bare number without an answer
    statement is not an answer: the harness must not guess on the model's behalf.
    """
    if not text:
        return None
    matches = list(_ANSWER_RE.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    return normalize_number((m.group(1) or "") + m.group(2))


def wilson_ci(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: honest at 0/n and n/n, unlike p +- 1.96 SE."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def majority_vote(answers: list[str | None]) -> str | None:
    """Self-consistency's vote: the most frequent non-None answer (ties: the one seen first)."""
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][0] if counts else None


# ---------------------------------------------------------------------------
# Several prompts on the same problems: do they differ? (few-shot CoT's instability)
# ---------------------------------------------------------------------------
def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df): the regularized upper incomplete gamma Q(df/2, x/2)
    (series for x < df/2 + 1, Lentz continued fraction beyond; no scipy needed)."""
    if df < 1:
        raise LabkitError(f"df must be >= 1, got {df}")
    if x <= 0:
        return 1.0
    a, z = df / 2, x / 2
    log_front = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1:   # lower series: P = front * sum z^n / (a (a+1) ... (a+n))
        term = total = 1.0 / a
        for i in range(1, 1000):
            term *= z / (a + i)
            total += term
            if term < total * 1e-16:
                break
        return max(0.0, 1.0 - math.exp(log_front) * total)
    tiny = 1e-300   # upper continued fraction (modified Lentz)
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return min(1.0, math.exp(log_front) * h)


@dataclass(frozen=True)
class CochranResult:
    """Cochran's Q for m prompts scored on the same n problems (0/1 each)."""
    q: float
    df: int
    p: float
    n: int          # problems
    informative: int  # problems that some prompts got right and others wrong (only these carry Q)


def cochran_q(correct_by_prompt) -> CochranResult:
    """Cochran's Q test that m >= 2 prompts have the same accuracy on the same problems.

    ``correct_by_prompt[j][i]``: did prompt j solve problem i. With column totals C_j (per prompt),
    row totals R_i (per problem), N = sum C_j:
    Q = (m - 1) (m sum C_j^2 - N^2) / (m N - sum R_i^2), chi-square with m - 1 df under the null.
    For m = 2 it is McNemar's chi-square without continuity correction, (b - c)^2 / (b + c).
    No problem that splits the prompts: Q = 0, p = 1."""
    rows = [[bool(v) for v in col] for col in correct_by_prompt]
    m = len(rows)
    if m < 2:
        raise LabkitError(f"Cochran's Q needs at least 2 prompts, got {m}")
    n = len(rows[0])
    if n == 0 or any(len(r) != n for r in rows):
        raise LabkitError(f"every prompt needs a result on the same problems; got lengths {[len(r) for r in rows]}")
    col = [sum(r) for r in rows]
    row = [sum(r[i] for r in rows) for i in range(n)]
    big_n = sum(col)
    denom = m * big_n - sum(x * x for x in row)
    informative = sum(0 < x < m for x in row)
    if denom == 0:
        return CochranResult(0.0, m - 1, 1.0, n, informative)
    q = (m - 1) * (m * sum(c * c for c in col) - big_n ** 2) / denom
    return CochranResult(float(q), m - 1, chi2_sf(q, m - 1), n, informative)


@dataclass(frozen=True)
class SpreadResult:
    """How far m prompts' accuracies on the same problems spread, against a null of no prompt effect."""
    accuracies: tuple
    sd: float               # SD of the m accuracies (ddof=1)
    spread: float           # max - min accuracy
    binomial_sd: float      # sqrt(p(1-p)/n) at the mean accuracy: the SD if each prompt had fresh problems
    null_sd: float          # mean SD under the permutation null (same problems, prompt labels exchangeable)
    p_spread: float         # permutation p of max - min (one test over all pairs: no multiple comparisons)
    n_perm: int


def prompt_spread(correct_by_prompt, n_perm: int = 10_000, seed: int = 0) -> SpreadResult:
    """Spread of m prompts' accuracies on the same n problems, with a permutation test.

    Null: the prompt does not matter, so on each problem the m results are exchangeable; shuffle
    them within every problem (``n_perm`` times), recompute max - min accuracy, and count how often
    it reaches the observed spread. Testing the *range* once answers "best vs worst" without
    picking the pair after looking (which a plain paired test of the best and worst would do)."""
    import numpy as np

    table = np.asarray([[bool(v) for v in col] for col in correct_by_prompt], dtype=float)  # m x n
    m, n = table.shape
    if m < 2 or n < 1:
        raise LabkitError(f"need >= 2 prompts on >= 1 problem, got {m} x {n}")
    acc = table.mean(1)
    obs = acc.max() - acc.min()
    rng = np.random.default_rng(seed)
    keys = rng.random((n_perm, m, n))
    perm = np.take_along_axis(np.broadcast_to(table, (n_perm, m, n)), keys.argsort(1), 1)
    pacc = perm.mean(2)
    pspread = pacc.max(1) - pacc.min(1)
    p_bar = float(acc.mean())
    return SpreadResult(tuple(float(a) for a in acc), float(acc.std(ddof=1)), float(obs),
                        math.sqrt(p_bar * (1 - p_bar) / n), float(pacc.std(1, ddof=1).mean()),
                        float((1 + np.sum(pspread >= obs - 1e-12)) / (1 + n_perm)), n_perm)



# ---------------------------------------------------------------------------
# Failure analysis
# ---------------------------------------------------------------------------
_EQ = re.compile(r"(\d+) ([-+*/]) (\d+) = (-?\d+)")


def diagnose(problem: dict, completion: str) -> dict:
    """Compare a generated chain with the worked solution, equation by equation.

    Returns ``{"first_wrong_step": i or None, "kind": ..., "generated": eq, "expected": eq}`` where
    kind is one of: "no steps", "wrong operation", "wrong operand" (a number copied or carried
    wrong), "arithmetic" (right operands, wrong result), "too few steps", "too many steps",
    "wrong final answer" (every step right, the answer sentence not), "correct".
    """
    gold = [_EQ.search(s).groups() for s in problem["steps"]]
    gen = _EQ.findall(completion)
    fmt = lambda e: f"{e[0]} {e[1]} {e[2]} = {e[3]}" if e else ""
    if not gen:
        return {"first_wrong_step": 1, "kind": "no steps", "generated": "", "expected": fmt(gold[0])}
    for i, want in enumerate(gold):
        if i >= len(gen):
            return {"first_wrong_step": i + 1, "kind": "too few steps", "generated": "", "expected": fmt(want)}
        got = gen[i]
        if got != want:
            kind = ("wrong operation" if got[1] != want[1] else
                    "wrong operand" if (got[0], got[2]) != (want[0], want[2]) else "arithmetic")
            return {"first_wrong_step": i + 1, "kind": kind, "generated": fmt(got), "expected": fmt(want)}
    if len(gen) > len(gold):
        return {"first_wrong_step": len(gold) + 1, "kind": "too many steps", "generated": fmt(gen[len(gold)]),
                "expected": ""}
    if extract_answer(completion) != normalize_number(str(problem["answer"])):
        return {"first_wrong_step": None, "kind": "wrong final answer", "generated": "", "expected": ""}
    return {"first_wrong_step": None, "kind": "correct", "generated": "", "expected": ""}

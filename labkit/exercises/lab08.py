"""Lab 08: chain-of-thought prompting -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise

def _wilson_low_30_of_50() -> float:
    """Invert the score test by bisection (independent of the closed form in labkit.prompting)."""
    c, n, z = 30, 50, 1.96
    lo, hi = 0.0, c / n
    for _ in range(100):
        m = (lo + hi) / 2
        if abs(c / n - m) > z * math.sqrt(m * (1 - m) / n):
            lo = m
        else:
            hi = m
    return (lo + hi) / 2


def _apples_cot_prompt_tokens() -> float:
    from .. import data
    from ..tokenizer import load_tokenizer

    tok = load_tokenizer()
    text = f"Q: {data.APPLES_PROBLEM['question']}\nA: Let's think step by step."
    return float(len(tok(tok.bos_token + text, add_special_tokens=False)["input_ids"]))


def _max_shots_in_context() -> float:
    from .. import data, prompting
    from ..tokenizer import load_tokenizer

    tok = load_tokenizer()
    best = 0
    for k in range(0, 9):
        n = len(tok(tok.bos_token + prompting.few_shot_cot(data.APPLES_PROBLEM["question"], k),
                    add_special_tokens=False)["input_ids"])
        if n + 128 <= 512:
            best = k
    return float(best)


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "08.wilson_low_30_of_50": Exercise(
        "lower bound of the 95% Wilson interval for 30 correct of 50", _wilson_low_30_of_50, 1e-3,
        "(p + z^2/2n - z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) with p = 0.6, n = 50, z = 1.96"),
    "08.apples_cot_prompt_tokens": Exercise(
        "tokens of the zero-shot-CoT stage-1 prompt for the apples problem, with <|bos|>",
        _apples_cot_prompt_tokens, 0.0, "tok(tok.bos_token + prompting.zero_shot_cot(q), add_special_tokens=False)"),
    "08.max_shots_in_context": Exercise(
        "largest k with few_shot_cot(apples, k) + 128 new tokens <= 512 positions", _max_shots_in_context, 0.0,
        "count the tokens of few_shot_cot(q, k) for k = 0, 1, 2, ... (exemplars have different lengths)"),
}

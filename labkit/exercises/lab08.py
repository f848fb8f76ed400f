"""Lab 08: chain-of-thought prompting -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise, draw_int

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


def _binomial_sd_150() -> float:
    """SD of a proportion: the variance of a Binomial(150, 0.75) count, from torch, over 150^2."""
    import torch

    var = torch.distributions.Binomial(150, torch.tensor(0.75, dtype=torch.float64)).variance
    return float(var.sqrt() / 150)


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
    "08.binomial_sd_150": Exercise(
        "standard deviation of an accuracy on 150 problems when the true accuracy is 0.75 (binomial noise)",
        _binomial_sd_150, 1e-3, "sqrt(p (1 - p) / n)"),
}


# ----------------------------------------------------------------------------- code


def _pick(gen, options):
    return options[draw_int(gen, 0, len(options) - 1)]


def _number_text(gen) -> str:
    """A number as a model might write it: 7, 1,234, -5, 2.50, 12.0, $18."""
    kind = draw_int(gen, 0, 5)
    n = draw_int(gen, 0, 99999)
    if kind == 0:
        return str(n)
    if kind == 1:
        return f"{n:,}"
    if kind == 2:
        return f"-{n}"
    if kind == 3:
        return f"{n}.{draw_int(gen, 0, 99):02d}"
    if kind == 4:
        return f"{n}.0"
    return f"${n}"


def _completion_inputs(gen):
    """A completion with 0-2 answer statements in the formats the harness meets."""
    chain = f"so {draw_int(gen, 2, 99)} + {draw_int(gen, 1, 25)} = {draw_int(gen, 3, 124)}."
    parts = [chain] if draw_int(gen, 0, 1) else []
    for _ in range(draw_int(gen, 0, 2)):
        num = _number_text(gen)
        parts.append(_pick(gen, [f"The answer is {num}.", f"the answer is: {num}", f"Therefore, the answer "
                                 f"(arabic numerals) is {num}.", f"#### {num}", f"The answer is **{num}**.",
                                 f"answer = {num}", f"The answer is {num}"]))
    if draw_int(gen, 0, 4) == 0:
        parts.append("The answer is unknown.")
    return (" ".join(parts),)


def _extract_reference(text):
    from .. import prompting

    return prompting.extract_answer(text)


def _votes_inputs(gen):
    pool = [str(draw_int(gen, 0, 30)) for _ in range(3)] + [None]
    return ([_pick(gen, pool) for _ in range(draw_int(gen, 1, 9))],)


def _vote_reference(answers):
    from collections import Counter

    counts = Counter(a for a in answers if a is not None)   # most_common keeps first-seen order on ties
    return counts.most_common(1)[0][0] if counts else None


def _problem(gen) -> dict:
    from .. import data

    return data.word_problems(1, seed=draw_int(gen, 0, 10**6), split="train", n_steps=draw_int(gen, 1, 5))[0]


def _stage2_inputs(gen):
    p = _problem(gen)
    reasoning = " ".join(p["steps"][:draw_int(gen, 0, len(p["steps"]))])
    if draw_int(gen, 0, 1):
        reasoning += f" The answer is {p['answer']}."
    pad = _pick(gen, ["", " ", "\n", "  "])
    return p["question"], pad + reasoning + _pick(gen, ["", " ", "\n"])


def _stage2_reference(question, reasoning):
    from .. import prompting

    return prompting.zero_shot_cot_stage2(question, reasoning)


def _ltm_inputs(gen):
    from .. import prompting

    p = _problem(gen)
    done = draw_int(gen, 0, len(p["steps"]))
    answered = [_pick(gen, ["", " "]) + s for s in p["steps"][:done]]
    return p["question"], prompting.decomposition_text(p), answered


def _ltm_reference(question, decomposition, answered):
    from .. import prompting

    return prompting.least_to_most_step(question, decomposition, answered)


def _mcnemar_inputs(gen):
    n = draw_int(gen, 1, 200)
    p_a, p_b = draw_int(gen, 0, 10) / 10, draw_int(gen, 0, 10) / 10
    a = [bool(draw_int(gen, 0, 9) < 10 * p_a) for _ in range(n)]
    b = [bool(draw_int(gen, 0, 9) < 10 * p_b) for _ in range(n)]
    return a, b


def _mcnemar_reference(a, b):
    from .. import stats

    r = stats.mcnemar(a, b)
    return r.b, r.c, r.p


EXERCISES.update({
    "08.extract_answer": CodeExercise(
        question="write extract_answer(text): the last stated answer of a completion as a normalised number "
                 "string (\"1,234.\" -> \"1234\", \"2.50\" -> \"2.5\", \"$18\" -> \"18\"), None without an answer statement",
        reference=_extract_reference, inputs=_completion_inputs, solution="extract_answer",
        hint="one regex for \"answer is\", \"answer (arabic numerals) is\", \"answer:\", \"answer =\" and \"####\", then the "
             "number (optional sign, $, ** and thousands commas); take the LAST match; drop commas and trailing "
             "zeros of a decimal"),
    "08.majority_vote": CodeExercise(
        question="write majority_vote(answers): the most frequent non-None answer, the first seen among equal "
                 "counts, None when every answer is None",
        reference=_vote_reference, inputs=_votes_inputs, solution="majority_vote",
        hint="count in a dict (it keeps insertion order), skip None; max(counts, key=counts.get) keeps the first "
             "of equal counts"),
    "08.zero_shot_cot_stage2": CodeExercise(
        question="write zero_shot_cot_stage2(question, reasoning): Kojima et al.'s answer-extraction prompt",
        reference=_stage2_reference, inputs=_stage2_inputs, solution="zero_shot_cot_stage2",
        hint="the stage-1 prompt \"Q: <q>\\nA: Let's think step by step.\", a space, the WHOLE stage-1 output "
             "stripped of surrounding whitespace (nothing cut), a space, \"Therefore, the answer (arabic numerals) is\""),
    "08.least_to_most_step": CodeExercise(
        question="write least_to_most_step(question, decomposition, answered): the prompt of the next least-to-most "
                 "call, with the sub-questions and every earlier answer in order",
        reference=_ltm_reference, inputs=_ltm_inputs, solution="least_to_most_step",
        hint="\"Q: <q>\\nA: Let's break down this problem. <decomposition>\\nNow solve them in order.\", then "
             "\" 1. <answer 1> 2. <answer 2> ...\" (each answer stripped), then \" <next number>.\""),
    "08.mcnemar": CodeExercise(
        question="write mcnemar_test(a_correct, b_correct): (b, c, p) of McNemar's test on two strategies scored on "
                 "the same problems",
        reference=_mcnemar_reference, inputs=_mcnemar_inputs, solution="mcnemar_test", rtol=1e-9, atol=1e-12,
        hint="b = items only a got right, c = only b; b + c = 0: p = 1; b + c < 25: exact, p = min(1, 2 P(X <= "
             "min(b, c))), X ~ Binom(b + c, 1/2); else chi-square (|b - c| - 1)^2 / (b + c), p = erfc(sqrt(x / 2))"),
})


def _cochran_inputs(gen):
    """2-6 prompts on 1-80 problems, each prompt with its own solve rate (sometimes all equal: Q = 0)."""
    m, n = draw_int(gen, 2, 6), draw_int(gen, 1, 80)
    if draw_int(gen, 0, 5) == 0:
        row = [bool(draw_int(gen, 0, 1)) for _ in range(n)]
        return ([list(row) for _ in range(m)],)
    rates = [draw_int(gen, 0, 10) for _ in range(m)]
    return ([[draw_int(gen, 0, 9) < r for _ in range(n)] for r in rates],)


def _cochran_reference(correct_by_prompt):
    from .. import prompting

    r = prompting.cochran_q(correct_by_prompt)
    return r.q, r.df, r.p


EXERCISES["08.cochran_q"] = CodeExercise(
    question="write cochran_q_test(correct_by_prompt): (Q, df, p) of Cochran's Q for m prompts scored on the same "
             "problems (correct_by_prompt[j][i]: did prompt j solve problem i)",
    reference=_cochran_reference, inputs=_cochran_inputs, solution="cochran_q_test", rtol=1e-7, atol=1e-12,
    hint="C_j = per-prompt totals, R_i = per-problem totals, N = sum C_j; Q = (m - 1)(m sum C_j^2 - N^2) / (m N - "
         "sum R_i^2), df = m - 1, p = torch.special.gammaincc(df / 2, Q / 2); denominator 0 (no problem splits "
         "the prompts): (0.0, m - 1, 1.0)")

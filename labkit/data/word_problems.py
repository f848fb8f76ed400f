"""GSM8K-style word problems with worked steps, and the apples problem: lab 08's chain-of-thought task.

Why a module: lab 08 (§4 the prompts, §5 the apples problem, §6 accuracy against the number of
steps) needs problems whose every step is an equation that can be checked, with a known number of
steps (1-5), and the classic cafeteria problem of Wei et al. 2022 (`APPLES_PROBLEM`) held out: the
test split starts with it and the train split never contains it. lab-cot is trained on the train
split (`labkit.cot_model`).
"""
from __future__ import annotations

import json
import random

from ..data_templates import ADD_VERBS, CONTAINERS, GROUPS, ITEMS, VERB_FORMS
from .english import _cap, _person
from .splits import _check, _draw, split_of

__all__ = ["APPLES_PROBLEM", "word_problems", "_verb", "_wp_step", "_word_problem"]

APPLES_PROBLEM: dict = {
    "question": "The cafeteria had 23 apples. If they used 20 to make lunch and bought 6 more, how many apples do they have?",
    "steps": ["They used 20, so 23 - 20 = 3.", "They bought 6 more, so 3 + 6 = 9."],
    "solution": "They used 20, so 23 - 20 = 3. They bought 6 more, so 3 + 6 = 9. The answer is 9.",
    "answer": 9,
    "n_steps": 2,
}


def _verb(phrase: str, past: bool, third: bool) -> str:
    """Conjugate the first word of a verb phrase: 'give away' -> 'gives away' / 'gave away'."""
    head, *rest = phrase.split()
    third_form, past_form = VERB_FORMS[head]
    return " ".join([past_form if past else third_form if third else head] + rest)


def _wp_step(rng, x: int, items: str, sub_verbs: list[str], v) -> tuple[str, str, str, int] | None:
    """One operation on the running total x: (question clause, step clause, equation, new total),
    or None when the drawn operation does not fit x (no negatives, exact division, < 1000)."""
    kind = rng.choices(["add", "sub", "mul", "div"], weights=[3, 3, 1.5, 1.5])[0]
    if kind == "add" and x < 950:
        k, verb = rng.randint(1, 25), rng.choice(ADD_VERBS)
        clause = f"{v(verb)} {k} more" + (" from a friend" if verb == "get" else "")
        return clause, f"{v(verb)} {k} more", f"{x} + {k} = {x + k}", x + k
    if kind == "sub" and x >= 2:
        k, verb = rng.randint(1, x - 1), rng.choice(sub_verbs + ["give"])
        if verb == "give":
            return f"{v('give')} {k} to a friend", f"{v('give')} away {k}", f"{x} - {k} = {x - k}", x - k
        clause = f"{v(verb)} {k}"
        if verb == "use" and items in ("apples", "eggs") and rng.random() < 0.5:
            clause += rng.choice([" to make lunch", " to bake a cake", " for a picnic"])
        return clause, f"{v(verb)} {k}", f"{x} - {k} = {x - k}", x - k
    if kind == "mul" and 1 <= x <= 60:
        m = rng.randint(2, 5)
        if m <= 3 and rng.random() < 0.5:
            clause = f"{v('double' if m == 2 else 'triple')} the number of {items}"
        else:
            clause = f"{v('end')} up with {m} times as many"
        return clause, clause, f"{x} * {m} = {x * m}", x * m
    if kind == "div":
        divisors = [m for m in range(2, 7) if x % m == 0 and x >= m]
        if divisors:
            m = rng.choice(divisors)
            pile = rng.choice(["piles", "bags", "groups"])
            clause = f"{v('split')} them into {m} equal {pile} and {v('keep')} one of the {pile}"
            return clause, f"{v('keep')} one of {m} equal {pile}", f"{x} / {m} = {x // m}", x // m
    return None


def _word_problem(rng: random.Random, n_steps: int) -> dict:
    items, sub_verbs = rng.choice(ITEMS)
    past = rng.random() < 0.5
    if rng.random() < 0.5:
        p = _person(rng)
        subj, mid, pron, third = p["name"], p["name"], p["he"], True
    else:
        group = rng.choice(GROUPS)
        subj, mid, pron, third = f"The {group}", f"the {group}", "they", False
    v = lambda phrase: _verb(phrase, past, third)
    have = _verb("have", past, True)
    steps, clauses = [], []
    if rng.random() < 0.3:  # the starting amount is itself a multiplication step
        a, b, cont = rng.randint(2, 9), rng.randint(2, 12), rng.choice(CONTAINERS)
        opening = f"{subj} {have} {a} {cont} of {items} with {b} in each."
        steps.append(f"There {'were' if past else 'are'} {a} {cont} of {b}, so {a} * {b} = {a * b}.")
        x = a * b
    else:
        x = rng.randint(2, 40)
        opening = rng.choice([f"{subj} {have} {x} {items}.", f"At first, {mid} {have} {x} {items}."])
    while len(steps) < n_steps:
        op = _wp_step(rng, x, items, sub_verbs, v)
        if op is not None:
            clause, step_clause, equation, x = op
            clauses.append(clause)
            steps.append(f"{_cap(pron)} {step_clause}, so {equation}.")
    do, who = ("does", mid) if third else ("do", "they")
    if clauses and rng.random() < 0.5:  # "If they used 20 and bought 6 more, how many ...?"
        joined = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
        question = f"{opening} If {pron} {joined}, how many {items} {do} {pron} have?"
    else:
        links = ["", "Then ", "After that, ", "Later, ", "Next, "]
        body = [_cap(f"{links[i]}{pron} {c}.") for i, c in enumerate(clauses)]
        ending = rng.choice(["now", "in the end", "at the end"])
        question = " ".join([opening] + body + [f"How many {items} {do} {who} have {ending}?"])
    return {"question": question, "steps": steps, "solution": " ".join(steps) + f" The answer is {x}.",
            "answer": x, "n_steps": len(steps)}


def word_problems(n: int, *, seed: int = 0, split: str = "train", n_steps: int | None = None) -> list[dict]:
    """GSM8K-style problems with 1-5 worked steps; the test split starts with APPLES_PROBLEM
    (when n_steps is None or 2), and the train split never contains it."""
    if n_steps is not None and (isinstance(n_steps, bool) or n_steps not in range(1, 6)):
        raise ValueError(f"n_steps must be None or an integer from 1 to 5, got {n_steps!r}")
    _check(n, split)
    apples = APPLES_PROBLEM["question"]
    first = [json.loads(json.dumps(APPLES_PROBLEM))] if split == "test" and n_steps in (None, 2) else []
    make = lambda rng: _word_problem(rng, n_steps or rng.randint(1, 5))
    split_fn = lambda d: None if d["question"] == apples else split_of(d["question"])
    return _draw("word_problems", make, n, seed, split, split_fn, lambda d: d["question"], first)

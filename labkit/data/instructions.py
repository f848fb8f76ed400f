"""Instructions with checkable answers, and the domain facts as a chat task.

Why a module: the SFT data of lab 09 (§4-9) and lab 16 (§5, §9) must be scored by exact match, so
every task -- a fact question, a sum, a difference, a product, reverse / count / repeat / sort some
words, an opposite -- has one right response. `task_add` is also the addition question of the
preference pairs (lab 14 §3). `domain_fact_instructions` turns the 80 DOMAIN_FACTS into the
knowledge task of lab 04 §3 (and labs 05 §9, 13 §4): every fact taught, held-out wordings asked.
"""
from __future__ import annotations

import random

from ..data_templates import DOMAIN_QUESTIONS, FACT_QUESTIONS, OPPOSITE_OF
from .english import _count_answer, _some_words
from .facts import DOMAIN_FACTS, FACTS, fact_sentence
from .splits import _draw, split_of

__all__ = ["task_add", "instructions", "domain_fact_instructions", "_task_fact", "_task_subtract",
           "_task_multiply", "_task_reverse", "_task_opposite", "_task_count", "_task_repeat", "_task_sort",
           "_TASKS", "_task_add", "_FACT_QUESTIONS", "_OPPOSITE_OF", "_instruction"]


def _task_fact(rng):
    e, rel, a = rng.choice(FACTS)
    return rng.choice(FACT_QUESTIONS[rel]).format(e=e), fact_sentence(e, rel, a)


def task_add(rng):
    x, y = rng.randint(0, 50), rng.randint(0, 50)
    q = rng.choice(["Add {x} and {y}.", "What is {x} plus {y}?", "What is the sum of {x} and {y}?"])
    return q.format(x=x, y=y), f"{x} plus {y} is {x + y}."


def _task_subtract(rng):
    x = rng.randint(0, 99)
    y = rng.randint(0, x)
    q = rng.choice(["Subtract {y} from {x}.", "What is {x} minus {y}?", "Take {y} away from {x}."])
    return q.format(x=x, y=y), f"{x} minus {y} is {x - y}."


def _task_multiply(rng):
    x, y = rng.randint(2, 12), rng.randint(2, 12)
    q = rng.choice(["What is {x} times {y}?", "Multiply {x} by {y}.", "What is the product of {x} and {y}?"])
    return q.format(x=x, y=y), f"{x} times {y} is {x * y}."


def _task_reverse(rng):
    w = _some_words(rng)
    return "Reverse the words: " + " ".join(w), " ".join(reversed(w))


def _task_opposite(rng):
    w = rng.choice(sorted(OPPOSITE_OF))
    return rng.choice(["What is the opposite of {w}?", "Give the opposite of {w}."]).format(w=w), OPPOSITE_OF[w]


def _task_count(rng):
    w = _some_words(rng, 2, 9)
    return "Count the words: " + " ".join(w), _count_answer(len(w))


def _task_repeat(rng):
    w = _some_words(rng)
    return "Repeat after me: " + " ".join(w), " ".join(w)


def _task_sort(rng):
    w = _some_words(rng, 3, 6)
    return "Sort these words alphabetically: " + " ".join(w), " ".join(sorted(w))


_TASKS = {
    "fact": _task_fact, "add": task_add, "subtract": _task_subtract, "multiply": _task_multiply,
    "reverse": _task_reverse, "opposite": _task_opposite, "count": _task_count, "repeat": _task_repeat,
    "sort": _task_sort,
}
_task_add = task_add              # the old private names, still imported by labkit.preference
_FACT_QUESTIONS = FACT_QUESTIONS  # and the tests; new code imports the public ones
_OPPOSITE_OF = OPPOSITE_OF


def _instruction(rng: random.Random) -> dict:
    task = rng.choice(list(_TASKS))
    prompt, response = _TASKS[task](rng)
    return {"prompt": prompt, "response": response, "task": task}


def instructions(n: int, *, seed: int = 0, split: str = "train") -> list[dict]:
    """{"prompt", "response", "task"} items whose responses can be checked exactly."""
    key = lambda d: d["prompt"]
    return _draw("instructions", _instruction, n, seed, split, lambda d: split_of(key(d)), key)


def domain_fact_instructions(seed: int = 0, n_val: int = 16, n_test: int = 32) -> dict[str, list[dict]]:
    """The 80 DOMAIN_FACTS as chat questions, split to test whether fine-tuning *teaches new facts* (lab 04, §3).

    lab-tiny never read these facts (they live only in the domain corpus of lab 06), so its base
    model cannot answer them: a task off the floor and off the ceiling. Every fact is trained in its
    first wording; the second wording of ``n_val`` facts is held back to choose learning rates
    (``"val"``), that of ``n_test`` other facts is the held-out test (``"test"``), and the rest train
    in both wordings (``"fit"``). So a held-out question asks a fact the model was taught, in words
    it never saw with that fact -- recall, not string matching. Items are
    ``{"prompt", "response", "task": "domain_fact"}``; the response is the fact's canonical sentence.
    ``seed`` picks which facts fall in which group.
    """
    n = len(DOMAIN_FACTS)
    if n_val < 0 or n_test < 1 or n_val + n_test > n:
        raise ValueError(f"need 0 <= n_val, 1 <= n_test and n_val + n_test <= {n}; got n_val={n_val}, n_test={n_test}")
    order = list(range(n))
    random.Random(f"domain-fact-instructions:{seed}").shuffle(order)
    val_ids, test_ids, both_ids = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]

    def item(i: int, wording: int) -> dict:
        entity, relation, attribute = DOMAIN_FACTS[i]
        return {"prompt": DOMAIN_QUESTIONS[relation][wording].format(e=entity),
                "response": fact_sentence(entity, relation, attribute), "task": "domain_fact"}

    return {"fit": [item(i, 0) for i in order] + [item(i, 1) for i in both_ids],
            "val": [item(i, 1) for i in val_ids], "test": [item(i, 1) for i in test_ids]}

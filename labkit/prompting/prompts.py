"""The prompt texts of every strategy, and the few-shot exemplars (lab 08 §4, §6b).

Why a module of its own: these *text formats* are also what `labkit.cot_model` trains the lab model on
(lab 08 §3) -- change them and the committed checkpoint no longer matches its prompts. Lab 08 §4 builds
each prompt from scratch and checks it against these; §6b draws exemplar sets with `exemplar_sets`.
"""
from __future__ import annotations

import re

from ..errors import LabkitError

__all__ = ['STRATEGIES', 'COT_TRIGGER', 'ANSWER_TRIGGER', 'LTM_TRIGGER', 'LTM_SOLVE', 'COT_MODEL', 'qa_prefix', 'reasoning_of', 'subquestions', 'decomposition_text', 'solved_in_order_text', 'direct', 'zero_shot_cot', 'zero_shot_cot_stage2', 'EXEMPLAR_STEPS', 'exemplars', 'few_shot_cot', 'exemplar_sets', 'least_to_most', 'least_to_most_stage2', '_SUBQ', 'parse_subquestions', 'least_to_most_step', 'least_to_most_final', 'cut_subanswer', 'self_consistency']

STRATEGIES = ("direct", "zero_shot_cot", "few_shot_cot", "least_to_most", "self_consistency")
COT_TRIGGER = "Let's think step by step."
ANSWER_TRIGGER = "Therefore, the answer (arabic numerals) is"
LTM_TRIGGER = "Let's break down this problem."
LTM_SOLVE = "Now solve them in order."
COT_MODEL = "lab-cot"


# ---------------------------------------------------------------------------
# Text formats (shared by the prompts and the training data of the lab model)
# ---------------------------------------------------------------------------
def qa_prefix(question: str) -> str:
    """Every prompt asks the same way: ``Q: <question>\\nA:``."""
    return f"Q: {question}\nA:"


def reasoning_of(problem: dict) -> str:
    """The worked steps of a problem, without the final "The answer is N." sentence."""
    return " ".join(problem["steps"])


def subquestions(problem: dict) -> list[str]:
    """One sub-question per worked step (least-to-most's decomposition), built from the step text.

    "They used 20, so 23 - 20 = 3." -> "How many apples after they used 20?"
    "There are 9 bags of 6, so ..." -> "How many apples are in 9 bags of 6?"
    """
    m = re.search(r"[Hh]ow many (\w+)", problem["question"])
    items = m.group(1) if m else "things"
    out = []
    for step in problem["steps"]:
        clause = step.split(", so ")[0]
        box = re.match(r"There (?:are|were) (\d+) (\w+) of (\d+)$", clause)
        if box:
            out.append(f"How many {items} are in {box.group(1)} {box.group(2)} of {box.group(3)}?")
        else:
            subj, _, rest = clause.partition(" ")
            subj = subj.lower() if subj in ("He", "She", "They") else subj
            out.append(f"How many {items} after {subj} {rest}?")
    return out


def decomposition_text(problem: dict) -> str:
    """Least-to-most stage-1 output: the numbered sub-questions."""
    return " ".join(f"{i}. {q}" for i, q in enumerate(subquestions(problem), 1))


def solved_in_order_text(problem: dict) -> str:
    """Least-to-most stage-2 output: the sub-questions answered in order, then the answer."""
    steps = " ".join(f"{i}. {s}" for i, s in enumerate(problem["steps"], 1))
    return f"{steps} The answer is {problem['answer']}."


# ---------------------------------------------------------------------------
# Prompt builders (stage 1; the multi-stage strategies add stage 2 in `evaluate`)
# ---------------------------------------------------------------------------
def direct(question: str) -> str:
    """Answer at once: the model must do all the arithmetic in one forward pass per answer token."""
    return qa_prefix(question) + " The answer is"


def zero_shot_cot(question: str) -> str:
    """Stage 1 of zero-shot-CoT: the trigger sentence after "A:"."""
    return qa_prefix(question) + " " + COT_TRIGGER


def zero_shot_cot_stage2(question: str, reasoning: str) -> str:
    """Stage 2 of zero-shot-CoT (Kojima et al. 2022, Fig. 2): the stage-1 prompt, the WHOLE
    stage-1 output (nothing cut, even an answer the model already wrote), then the
    answer-extraction sentence. The harness reads the number the model writes next."""
    return f"{zero_shot_cot(question)} {reasoning.strip()} {ANSWER_TRIGGER}"


EXEMPLAR_STEPS = (2, 3, 1, 2, 3, 1, 4, 2)  # steps of the fixed few-shot exemplars: k <= 8


def exemplars(k: int) -> list[dict]:
    """k fixed worked exemplars from the *train* split (1-4 steps, as Wei et al. use a fixed set)."""
    from .. import data

    if k < 0:
        raise LabkitError(f"k must be >= 0, got {k}")
    steps = EXEMPLAR_STEPS
    if k > len(steps):
        raise LabkitError(f"only {len(steps)} exemplars are defined; use k <= {len(steps)}")
    return [data.word_problems(1, seed=1000 + i, split="train", n_steps=s)[0] for i, s in enumerate(steps[:k])]


def few_shot_cot(question: str, k: int = 2, shots: list[dict] | None = None) -> str:
    """k worked exemplars (the fixed ones, or ``shots`` in the order given), then the question;
    the model continues with its own chain."""
    shots = exemplars(k) if shots is None else shots
    blocks = [f"{qa_prefix(e['question'])} {e['solution']}" for e in shots]
    return "\n\n".join(blocks + [qa_prefix(question)])


def exemplar_sets(n_sets: int, k: int = 2, seed: int = 0, steps=(1, 2, 3, 4)) -> list[list[dict]]:
    """``n_sets`` random sets of ``k`` worked exemplars from the *train* split (each exemplar's
    step count drawn from ``steps``), none repeating the fixed `exemplars` or each other: the
    "which exemplars?" choice that few-shot CoT's accuracy depends on (Wei et al. 2022, §3.4)."""
    import random

    from .. import data

    if n_sets < 1 or k < 1:
        raise LabkitError(f"need n_sets >= 1 and k >= 1, got n_sets={n_sets}, k={k}")
    rng = random.Random(seed)
    seen = {e["question"] for e in exemplars(len(EXEMPLAR_STEPS))}
    out = []
    for _ in range(n_sets):
        chosen = []
        while len(chosen) < k:
            e = data.word_problems(1, seed=rng.randrange(10**6), split="train", n_steps=rng.choice(steps))[0]
            if e["question"] not in seen:
                seen.add(e["question"])
                chosen.append(e)
        out.append(chosen)
    return out


def least_to_most(question: str) -> str:
    """Stage 1 of least-to-most: ask for the sub-questions."""
    return qa_prefix(question) + " " + LTM_TRIGGER


def least_to_most_stage2(question: str, decomposition: str) -> str:
    """Stage 2 of least-to-most: the sub-questions, then solve them in order."""
    return f"{least_to_most(question)} {decomposition.strip()}\n{LTM_SOLVE}"


_SUBQ = re.compile(r"(?:^|\s)(\d+)\.\s+(.+?\?)")


def parse_subquestions(decomposition: str) -> list[str]:
    """The numbered sub-questions of a stage-1 decomposition: "1. How many ...? 2. ...?" -> [...]."""
    return [m.group(2).strip() for m in _SUBQ.finditer(decomposition or "")]


def least_to_most_step(question: str, decomposition: str, answered: list[str]) -> str:
    """The prompt of least-to-most call ``len(answered) + 1`` (Zhou et al. 2022, stage 2):
    the problem, its sub-questions, the answers of every earlier call in order, then the
    number of the sub-question this call answers. After the last sub-question the same
    builder with every answer in place, plus " The answer is", asks for the final number."""
    done = "".join(f" {i}. {a.strip()}" for i, a in enumerate(answered, 1))
    return f"{least_to_most_stage2(question, decomposition)}{done} {len(answered) + 1}."


def least_to_most_final(question: str, decomposition: str, answered: list[str]) -> str:
    """The last least-to-most call: every sub-question answered, then "The answer is"."""
    done = "".join(f" {i}. {a.strip()}" for i, a in enumerate(answered, 1))
    return f"{least_to_most_stage2(question, decomposition)}{done} The answer is"


def cut_subanswer(text: str, i: int) -> str:
    """A least-to-most call's output up to where the model starts sub-answer i + 1 or the answer."""
    m = re.search(rf"(?<=\.)\s+{i + 1}\.\s+[A-Z]|The answer is|{re.escape(ANSWER_TRIGGER)}|\n", text)
    return (text[:m.start()] if m else text).strip()


def self_consistency(question: str, n: int = 5) -> list[str]:
    """n copies of the zero-shot-CoT prompt: each is sampled at a temperature, then votes."""
    if n < 1:
        raise LabkitError(f"self_consistency needs n >= 1, got {n}")
    return [zero_shot_cot(question)] * n

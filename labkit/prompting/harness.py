"""The evaluation harness: one strategy on a list of problems, per-problem records (lab 08 §5-6, §10).

Why a module of its own: every strategy goes through the same `evaluate` -- same batching, same scoring,
same token counts -- so their accuracies and costs compare. Lab 08 §4 writes the least-to-most calls
(`least_to_most_calls`), §5 runs every strategy on one problem, §6 the accuracy table, §10 the token
cost (`prompt_lengths`); `write_records`/`read_records` keep the per-problem rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabkitError
from .generation import _model_texts, generate_batch
from .prompts import (ANSWER_TRIGGER, LTM_SOLVE, STRATEGIES, cut_subanswer, direct, few_shot_cot, least_to_most,
                      least_to_most_final, least_to_most_step, parse_subquestions, self_consistency, zero_shot_cot,
                      zero_shot_cot_stage2)
from .scoring import extract_answer, majority_vote, normalize_number, wilson_ci

__all__ = ['Record', 'EvalResult', '_check_strategy', 'prompt_lengths', '_model_texts', 'evaluate', '_run', 'run_strategy', 'LTM_MAX_SUBQUESTIONS', 'least_to_most_calls', 'records_table', 'write_records', 'read_records']


# ---------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------
@dataclass
class Record:
    """One problem under one strategy: what was asked, what came back, and whether it was right."""
    question: str
    n_steps: int
    prompt: str
    completion: str
    extracted: str | None
    gold: str
    correct: bool
    tokens: int                      # generated tokens, all stages and samples together
    samples: list = field(default_factory=list)   # self-consistency: the n sampled answers
    prompt_tokens: int = 0           # prompt tokens read, all calls together (each call re-reads its prompt)


@dataclass
class EvalResult:
    strategy: str
    records: list
    params: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def n_correct(self) -> int:
        return sum(r.correct for r in self.records)

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n if self.n else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_ci(self.n_correct, self.n)

    @property
    def mean_tokens(self) -> float:
        return sum(r.tokens for r in self.records) / self.n if self.n else float("nan")

    @property
    def mean_prompt_tokens(self) -> float:
        return sum(r.prompt_tokens for r in self.records) / self.n if self.n else float("nan")

    @property
    def correct(self) -> list[bool]:
        """Per-problem correctness, in problem order (for paired tests between strategies)."""
        return [r.correct for r in self.records]

    def row(self) -> dict:
        lo, hi = self.ci
        return {"strategy": self.strategy, "n": self.n, "accuracy": round(self.accuracy, 3),
                "ci_low": round(lo, 3), "ci_high": round(hi, 3), "tokens_per_problem": round(self.mean_tokens, 1),
                "prompt_tokens_per_problem": round(self.mean_prompt_tokens, 1)}


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise LabkitError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


def prompt_lengths(tokenizer, prompts: list[str], chat: bool | None = None) -> list[int]:
    """Tokens each prompt costs the model, as `generate_batch` feeds it (bos or chat template)."""
    if tokenizer is None:
        return [0] * len(prompts)
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in _model_texts(tokenizer, prompts, chat)]


def evaluate(model, tokenizer, problems: list[dict], strategy: str, *, k: int = 2, n: int = 5,
             temperature: float = 0.7, max_new_tokens: int | None = None, batch_size: int = 16,
             seed: int = 0, progress: bool = True, chat: bool | None = None, generate=None,
             shots: list[dict] | None = None) -> EvalResult:
    """Run one prompting strategy on ``problems`` (dicts with "question" and "answer").

    Parameters by strategy: ``k`` exemplars for few_shot_cot (or ``shots``, your own exemplars in
    your order), ``n`` samples at ``temperature`` for self_consistency. ``max_new_tokens`` is the reasoning budget (default 128).
    ``generate(prompts, max_new_tokens, temperature=, seed=, stop=)`` replaces the model
    (tests use a stub); by default `generate_batch` with ``model`` and ``tokenizer``.
    """
    _check_strategy(strategy)
    if shots is not None and strategy != "few_shot_cot":
        raise LabkitError(f"shots= is for strategy='few_shot_cot', not {strategy!r}")
    budget = max_new_tokens or 128
    if generate is None:
        def generate(prompts, max_new, temperature=0.0, seed=seed, stop=None):
            return generate_batch(model, tokenizer, prompts, max_new, temperature=temperature, seed=seed,
                                  stop=stop, chat=chat, strategy=strategy, batch_size=batch_size)
    from ..progress import progress as progress_bar

    count = lambda prompts: prompt_lengths(tokenizer, prompts, chat)  # noqa: E731
    questions = [p["question"] for p in problems]
    golds = [normalize_number(str(p["answer"])) for p in problems]
    records: list[Record] = []
    bar = progress_bar(total=len(problems), desc=strategy, disable=not progress, leave=False)
    for start in range(0, len(problems), batch_size):
        qs, gs = questions[start:start + batch_size], golds[start:start + batch_size]
        steps = [p.get("n_steps", 0) for p in problems[start:start + batch_size]]
        for q, g, s, (prompt, completion, answer, tokens, samples, ptoks) in zip(
                qs, gs, steps, _run(strategy, qs, generate, budget, k, n, temperature, seed + start, count, shots)):
            records.append(Record(q, s, prompt, completion, answer, g, answer == g, tokens, samples, ptoks))
        bar.update(len(qs))
    bar.close()
    params = {"k": len(shots) if shots is not None else k} if strategy == "few_shot_cot" else {"n": n, "temperature": temperature} \
        if strategy == "self_consistency" else {}
    return EvalResult(strategy, records, params)


def _run(strategy, qs, generate, budget, k, n, temperature, seed, count=None, shots=None):
    """Yield (prompt, completion, extracted, tokens, samples, prompt tokens) for a batch of questions."""
    count = count or (lambda prompts: [0] * len(prompts))
    if strategy == "direct":
        prompts = [direct(q) for q in qs]
        for p, (c, t), pt in zip(prompts, generate(prompts, 8, stop=["\n"]), count(prompts)):
            yield p, c, extract_answer("The answer is" + c), t, [], pt
    elif strategy == "zero_shot_cot":
        prompts = [zero_shot_cot(q) for q in qs]
        first = generate(prompts, budget, stop=["\n\n", "\nQ:"])
        second_prompts = [zero_shot_cot_stage2(q, c) for q, (c, _) in zip(qs, first)]   # the WHOLE stage 1
        second = generate(second_prompts, 8, stop=["\n"])
        for p, (c1, t1), (c2, t2), pt1, pt2 in zip(prompts, first, second, count(prompts), count(second_prompts)):
            yield p, c1 + " || " + ANSWER_TRIGGER + c2, extract_answer(ANSWER_TRIGGER + c2), t1 + t2, [], pt1 + pt2
    elif strategy == "few_shot_cot":
        prompts = [few_shot_cot(q, k, shots) for q in qs]
        for p, (c, t), pt in zip(prompts, generate(prompts, budget, stop=["\n\n", "\nQ:"]), count(prompts)):
            yield p, c, extract_answer(c), t, [], pt
    elif strategy == "least_to_most":
        yield from least_to_most_calls(qs, generate, budget, count)
    else:  # self_consistency
        prompts = [s for q in qs for s in self_consistency(q, n)]
        outs = generate(prompts, budget, temperature=temperature, seed=seed, stop=["\n\n", "\nQ:"])
        lengths = count(prompts)
        for i, q in enumerate(qs):
            group = outs[i * n:(i + 1) * n]
            answers = [extract_answer(c) for c, _ in group]
            yield (prompts[i * n], group[0][0], majority_vote(answers), sum(t for _, t in group), answers,
                   sum(lengths[i * n:(i + 1) * n]))


# `_run` under a public name: what one strategy yields for a batch of questions (lab 08 §5).
run_strategy = _run


LTM_MAX_SUBQUESTIONS = 8


def least_to_most_calls(qs, generate, budget, count=None):
    """Zhou et al.'s two stages: decompose, then one call per sub-question (batched across problems
    that still have one left), each with the earlier answers in its prompt, then the final answer.

    Lab 08 §4 writes the prompt builders it calls; ``generate(prompts, max_new, stop=)`` is the model,
    ``count(prompts)`` the prompt-token counter. Yields (prompt, completion, extracted, tokens, [],
    prompt tokens) per question, as `evaluate` records them."""
    count = count or (lambda prompts: [0] * len(prompts))
    prompts = [least_to_most(q) for q in qs]
    first = generate(prompts, budget // 2 + 16, stop=["\n"])
    decomps = [c.strip() for c, _ in first]
    subqs = [parse_subquestions(d)[:LTM_MAX_SUBQUESTIONS] or ["?"] for d in decomps]
    tokens = [t for _, t in first]
    ptoks = list(count(prompts))
    answered = [[] for _ in qs]
    per_call = max(16, budget // 2)
    for i in range(max(len(s) for s in subqs)):
        active = [j for j, s in enumerate(subqs) if i < len(s)]
        step_prompts = [least_to_most_step(qs[j], decomps[j], answered[j]) for j in active]
        outs = generate(step_prompts, per_call, stop=["\n"])
        for j, (c, t), pt in zip(active, outs, count(step_prompts)):
            answered[j].append(cut_subanswer(c, i + 1))
            tokens[j] += t
            ptoks[j] += pt
    final_prompts = [least_to_most_final(q, d, a) for q, d, a in zip(qs, decomps, answered)]
    finals = generate(final_prompts, 8, stop=["\n"])
    for j, ((c, t), pt) in enumerate(zip(finals, count(final_prompts))):
        solved = " ".join(f"{i}. {a}" for i, a in enumerate(answered[j], 1))
        yield (prompts[j], f"{decomps[j]}\n{LTM_SOLVE} {solved} The answer is{c}",
               extract_answer("The answer is" + c), tokens[j] + t, [], ptoks[j] + pt)


def records_table(results: dict) -> list[dict]:
    """One row per (strategy, problem): what `write_records` saves and `read_records` reads back."""
    rows = []
    for strategy, res in results.items():
        for i, r in enumerate(res.records):
            rows.append({"strategy": strategy, "item": i, "n_steps": r.n_steps, "gold": r.gold,
                         "extracted": "" if r.extracted is None else r.extracted, "correct": int(r.correct),
                         "tokens": r.tokens, "prompt_tokens": r.prompt_tokens, "question": r.question,
                         "completion": r.completion})
    return rows


def write_records(results: dict, path: str | Path) -> Path:
    """Per-problem records of a `compare` run as CSV (e.g. ``data/results/cot_smollm2.csv``)."""
    import csv

    rows = records_table(results)
    if not rows:
        raise LabkitError("no records to write: run compare() on at least one problem first")
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def read_records(path: str | Path) -> dict[str, EvalResult]:
    """The CSV of `write_records` back as {strategy: EvalResult} (paired by item order)."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise LabkitError(f"{path} does not exist; write it with `python -m labkit cot ... --records {path}`")
    out: dict[str, list] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["strategy"], []).append(Record(
                row["question"], int(row["n_steps"]), "", row["completion"], row["extracted"] or None, row["gold"],
                row["correct"] == "1", int(row["tokens"]), [], int(row["prompt_tokens"])))
    return {s: EvalResult(s, recs) for s, recs in out.items()}

"""Chain-of-thought prompting: prompt builders, answer extraction and one evaluation harness (lab 08).

The strategies, as the papers define them:

* ``direct``          -- ask for the answer at once ("A: The answer is"), the baseline;
* ``zero_shot_cot``   -- Kojima et al. 2022: stage 1 appends "Let's think step by step."
  and lets the model reason; stage 2 feeds the reasoning back with
  "Therefore, the answer (arabic numerals) is" so the answer comes out in a
  parseable form;
* ``few_shot_cot``    -- Wei et al. 2022: k worked exemplars ("Q: ... A: <steps> The
  answer is N.") before the question; the model imitates the format;
* ``least_to_most``   -- Zhou et al. 2022: stage 1 decomposes the problem into
  sub-questions; then one call per sub-question, each prompt holding the sub-questions and
  the answers of the earlier calls, and a last call for the final answer;
* ``self_consistency`` -- Wang et al. 2022: sample n reasoning paths at a temperature
  and take the majority answer.

The same harness (`evaluate`) runs on the lab's CoT model (`load_cot_model`) and on any
local Hugging Face causal LM named by ``LABKIT_MODEL`` (`load_model`).

The *text formats* below are also what `labkit.cot_model` trains the lab model on:
change them and the committed checkpoint no longer matches its prompts.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LabkitError

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
    from . import data

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

    from . import data

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
# Models: the lab's CoT model, or the learner's own
# ---------------------------------------------------------------------------
def load_model(name: str | None = None, device: str = "cpu"):
    """``(model, tokenizer)``: ``name``, else ``LABKIT_MODEL``, else the committed ``lab-cot``.

    Everything goes through `labkit.models.load`, which reads local files only: ``lab-cot`` from
    ``data/models/lab-cot`` with the lab tokenizer, ``smollm2-135m`` from its install directory, a
    learner's own Hugging Face causal LM with its own tokenizer.
    """
    from . import models

    name = name or os.environ.get("LABKIT_MODEL") or COT_MODEL
    if name == COT_MODEL and not (models.checkpoint_dir(COT_MODEL) / "model.safetensors").exists():
        raise LabkitError(f"no checkpoint in {models.checkpoint_dir(COT_MODEL)}; restore it with "
                          "`git checkout -- data/models/lab-cot` or rebuild it with `python -m labkit.cot_model`")
    try:
        return models.load(name, device=device)
    except LabkitError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a broken directory: one line, not a traceback
        raise LabkitError(f"cannot load {name!r} as a causal LM ({type(exc).__name__}); point LABKIT_MODEL "
                          "at a local Hugging Face causal language model directory") from None


def _is_lab_tokenizer(tokenizer) -> bool:
    from .tokenizer import TOKENIZER_DIR

    try:
        return Path(getattr(tokenizer, "name_or_path", "")).resolve() == TOKENIZER_DIR.resolve()
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Batched generation
# ---------------------------------------------------------------------------
def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int, *, temperature: float = 0.0,
                   seed: int = 0, stop: list[str] | None = None, chat: bool | None = None,
                   strategy: str = "", batch_size: int = 16) -> list[tuple[str, int]]:
    """Continue every prompt (left-padded batches); return ``(new text, generated token count)``.

    ``chat=None``: a learner's model with a chat template gets each prompt as a user turn; the lab
    model (trained on raw "Q: ... A:" text) gets raw text. Text after a ``stop`` string is cut.
    """
    import torch

    from .tokenizer import end_of_turn_ids

    texts = _model_texts(tokenizer, prompts, chat)
    if _is_lab_tokenizer(tokenizer):
        eos = end_of_turn_ids(tokenizer)
    else:
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    limit = getattr(model.config, "max_position_embeddings", None)
    out: list[tuple[str, int]] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            longest = int(enc["attention_mask"].sum(1).max())
            if limit and longest + max_new_tokens > limit:
                hint = ("use fewer shots (smaller k) or strategy='zero_shot_cot'" if strategy == "few_shot_cot"
                        else "use a shorter prompt, fewer new tokens or strategy='zero_shot_cot'")
                raise LabkitError(f"{strategy or 'the'} prompt is {longest} tokens + {max_new_tokens} new tokens, "
                                  f"more than the model's context of {limit}; {hint}")
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            else:
                kwargs.update(do_sample=False)
            torch.manual_seed(seed + start)
            with torch.no_grad():
                gen = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:]
            eos_set = set(eos if isinstance(eos, list) else [eos])
            for row in gen.tolist():
                n = 0
                for t in row:
                    n += 1
                    if t in eos_set:
                        break
                text = tokenizer.decode(row[:n], skip_special_tokens=True)
                for s in stop or []:
                    if s in text:
                        text = text[:text.index(s)]
                        n = min(n, len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1)
                out.append((text, n))
    finally:
        tokenizer.padding_side = side
    return out


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


def _model_texts(tokenizer, prompts: list[str], chat: bool | None) -> list[str]:
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None)) and not _is_lab_tokenizer(tokenizer)
    if chat:
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    return [(tokenizer.bos_token or "") + p for p in prompts]


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
    from .progress import progress as progress_bar

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


# ---------------------------------------------------------------------------
# Experiments: a table of strategies, and the CLI
# ---------------------------------------------------------------------------
def held_out(n_steps: int, n: int) -> list[dict]:
    """The first n committed *test* problems with n_steps steps (never seen in training)."""
    from . import data

    problems = [p for p in data.load("word_problems", "test") if p["n_steps"] == n_steps]
    if n > len(problems):
        raise LabkitError(f"only {len(problems)} committed test problems have {n_steps} steps; ask for n <= {len(problems)}")
    return problems[:n]


def compare(model, tokenizer, problems: list[dict], strategies=STRATEGIES, *, progress: bool = True,
            **kwargs) -> dict[str, EvalResult]:
    """Evaluate every strategy on the same problems: {strategy: EvalResult}."""
    return {s: evaluate(model, tokenizer, problems, s, progress=progress, **kwargs) for s in strategies}


def format_table(results: dict[str, EvalResult]) -> str:
    """The strategy table printed by the notebook and the CLI."""
    lines = [f"{'strategy':<18}{'n':>5}{'accuracy':>10}{'95% CI':>16}{'tokens/problem':>16}"]
    for r in results.values():
        lo, hi = r.ci
        name = r.strategy + (f" k={r.params['k']}" if "k" in r.params else f" n={r.params['n']}" if "n" in r.params else "")
        lines.append(f"{name:<18}{r.n:>5}{r.accuracy:>10.3f}{f'[{lo:.2f}, {hi:.2f}]':>16}{r.mean_tokens:>16.1f}")
    return "\n".join(lines)


def _check_out_path(out: str, flag: str = "--out") -> None:
    """Fail before an evaluation, not after it, when its summary could not be written."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise LabkitError(f"{flag} {out} is a directory; give a file name, e.g. {path / 'cot.json'}")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise LabkitError(f"directory {parent} {what}; create it or choose another {flag}")
    if not os.access(parent, os.W_OK):
        raise LabkitError(f"directory {parent} is not writable; choose another {flag}")


def _check_cli_args(args) -> None:
    """The `cot` command's numbers and --out path, checked before any model loads."""
    if args.n is not None and args.n < 1:
        raise LabkitError(f"--n must be at least 1 (problems to evaluate), got {args.n}")
    if not 0 <= args.k <= len(EXEMPLAR_STEPS):
        raise LabkitError(f"--k must be 0-{len(EXEMPLAR_STEPS)} (few-shot exemplars), got {args.k}")
    if args.samples < 1:
        raise LabkitError(f"--samples must be at least 1 (self-consistency samples), got {args.samples}")
    if args.out:
        _check_out_path(args.out)


def main(argv: list[str]) -> int:
    from . import cli, env

    p = cli.parser("cot", "Chain-of-thought strategies on held-out 3-step word problems (lab 08).")
    p.add_argument("--model", default=None, help="default: LABKIT_MODEL, else the committed lab-cot")
    p.add_argument("--steps", type=int, nargs="+", default=[3], help="reasoning steps of the problems (1-5; several: each)")
    p.add_argument("--n", type=int, default=None, help="problems per step count (default by profile: 12 / 100 / 100)")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), help="strategies to run (default all)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="reasoning budget per call (default 128)")
    p.add_argument("--raw", action="store_true", help="raw text prompts even for a model with a chat template "
                                                     "(completion style, as Kojima et al. and Wei et al. prompt)")
    p.add_argument("--records", default=None, help="also write one CSV row per (strategy, problem) to this file")
    p.add_argument("--k", type=int, default=2, help="few-shot exemplars")
    p.add_argument("--samples", type=int, default=5, help="self-consistency samples")
    p.add_argument("--out", default=None, help="also write the JSON summary (with this command) to this file")
    args = p.parse_args(argv)
    profile = env.check_profile(args.profile) if args.profile else env.profile()
    if any(s not in range(1, 6) for s in args.steps):
        raise LabkitError(f"--steps must be 1-5, got {' '.join(map(str, args.steps))}")
    for s in args.strategies:
        _check_strategy(s)
    _check_cli_args(args)  # every cheap check before the model loads
    if args.records:
        _check_out_path(args.records, "--records")
    n = args.n or env.by_profile(12, 100, 100, profile_name=profile)
    problems = [p for s in args.steps for p in held_out(s, n)]  # too few committed problems: say so first
    env.seed_everything(0)
    model, tok = load_model(args.model, device=str(env.device()))
    res = compare(model, tok, problems, strategies=args.strategies, k=args.k, n=args.samples,
                  progress=not args.json, max_new_tokens=args.max_new_tokens, chat=False if args.raw else None)
    if args.records:
        write_records(res, args.records)
    print(format_table(res))
    if args.json:
        out = {"profile": profile, "model": args.model or os.environ.get("LABKIT_MODEL") or COT_MODEL,
               "n_steps": args.steps[0] if len(args.steps) == 1 else args.steps, "n_problems": len(problems)}
        for s, r in res.items():
            out[f"{s}_acc"] = round(r.accuracy, 4)
            out[f"{s}_ci"] = [round(x, 4) for x in r.ci]
            out[f"{s}_tokens"] = round(r.mean_tokens, 1)
        cli.emit_json(out)
    if args.out:
        import json

        summary = {"command": "python -m labkit cot " + " ".join(a for a in argv if not a.startswith("--out")
                                                                  and a != args.out),
                   "profile": profile, "n_steps": args.steps[0] if len(args.steps) == 1 else args.steps,
                   "n_problems": len(problems), "k": args.k, "samples": args.samples}
        for s, r in res.items():
            summary.update({f"{s}_acc": round(r.accuracy, 4), f"{s}_ci": [round(x, 4) for x in r.ci],
                            f"{s}_tokens": round(r.mean_tokens, 1)})
        Path(args.out).expanduser().write_text(json.dumps(summary, indent=2) + "\n")
    return 0


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

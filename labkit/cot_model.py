"""Train ``lab-cot``: lab-tiny taught to answer word problems directly *or* step by step (lab 08).

In a large model, step-by-step reasoning comes from pretraining on text that
reasons. lab-tiny saw word problems only as 7% of its coverage pretraining mix (worked
solutions, no prompt that selects a mode), so here the behaviour is *taught*: a full
fine-tune on a mixture in which the prompt selects the mode --

* ``direct``       "Q: ...\\nA: The answer is N."                          (20%)
* ``zero-shot CoT`` "Q: ...\\nA: Let's think step by step. <steps> The answer is N."
                    (a quarter of these end "Therefore, the answer (arabic numerals) is N.",
                    so the stage-2 extraction prompt is in-distribution)   (35%)
* ``least-to-most`` "Q: ...\\nA: Let's break down this problem. 1. <sub-q> 2. ...
                    \\nNow solve them in order. 1. <step> 2. ... The answer is N."  (15%)
* ``few-shot``      2-3 problems in one document, all answered the same way:
                    worked chains after "A:" (3 in 4 documents) or direct answers (15%)
* ``drill``         arithmetic lines "347 - 129 = 218." with the operand ranges of the
                    problems, so the model gets enough practice at the sums themselves (15%)

Loss is on the answers only (everything after "A:", and the results of drill lines).
Problems come from the *train* split of `labkit.data.word_problems`; the evaluation
uses the test split (disjoint by a hash of the question).

Reproduce the committed checkpoint (three rounds on one CPU core, about 25 + 9 + 13 minutes;
each continues from the previous one with fresh problems and a lower learning rate)::

    python -m labkit.cot_model --steps 1400 --eval-every 0 --out /tmp/lab-cot-round1
    python -m labkit.cot_model --init /tmp/lab-cot-round1 --steps 800 --lr 5e-4 --seed 1 --eval-every 0 --stop-after 600 --out data/models/lab-cot
    python -m labkit.cot_model --init data/models/lab-cot --steps 700 --lr 3e-4 --seed 2 --eval-every 0 --out data/models/lab-cot

``data/models/lab-cot/training.json`` records every round; ``eval_3step.json`` the evaluation
(``python -m labkit cot --profile cpu --json``).

Without ``--out`` the model goes to ``data/models/lab-cot``; as that holds the committed model,
the command then stops before training unless ``--force`` is given. The same holds for any
``--out`` under ``data/models`` that already holds a model: rerunning rounds 2-3 above over the
committed checkpoint needs ``--force``.

``--profile smoke`` (CI) trains 3 steps of one 64-token sequence into ``--out`` or a fresh temporary
directory and never writes into ``data/models``.

The control pair of lab 08 (``--mixture equal`` / ``--mixture filler``, see `MIXTURES`) is
trained with one command each; ``data/models/lab-cot-<mixture>/training.json`` records it.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from . import prompting as P
from .errors import LabkitError

MIXTURE = {"direct": 0.20, "zero_shot_cot": 0.35, "least_to_most": 0.15, "few_shot": 0.15, "drill": 0.15}

# The control pair of lab 08 §3 ("is it the mixture?"): trained from lab-tiny with the SAME budget
# (steps, batch, sequence length, learning rate, seed), differing only in the mixture.
#   equal  -- direct and zero-shot-CoT documents in equal shares, so neither format is favoured;
#   filler -- the same, but every chain replaced by filler dots of the same token length
#             (Pfau et al. 2024, "Let's think dot by dot"): extra tokens without the reasoning.
MIXTURES = {
    "lab-cot": MIXTURE,
    "equal": {"direct": 0.425, "zero_shot_cot": 0.425, "drill": 0.15},
    "filler": {"direct": 0.425, "zero_shot_filler": 0.425, "drill": 0.15},
}
CONTROL_MIXTURES = ("equal", "filler")


def control_name(mixture: str, seed: int) -> str:
    """The committed control model of lab 08 §7: ``lab-cot-<mixture>-seed<seed>`` in ``data/models``.

    Each was trained by ``python -m labkit.cot_model --mixture <mixture> --seed <seed> --steps 400
    --eval-every 0 --out data/models/lab-cot-<mixture>-seed<seed>`` (its training.json has the exact command)."""
    if mixture not in CONTROL_MIXTURES:
        raise LabkitError(f"unknown control mixture {mixture!r}; use one of {', '.join(CONTROL_MIXTURES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LabkitError(f"seed must be a whole number >= 0, got {seed!r}")
    return f"lab-cot-{mixture}-seed{seed}"


KINDS = ("direct", "zero_shot_cot", "zero_shot_filler", "least_to_most", "few_shot", "drill")


def filler_of(tokenizer, reasoning: str) -> str:
    """" " + dots with exactly as many tokens as " " + reasoning (the lab tokenizer splits every dot)."""
    n = len(tokenizer(" " + reasoning, add_special_tokens=False)["input_ids"])
    return " " + "." * max(n - 1, 1)


# ---------------------------------------------------------------------------
# Documents: list of (text, trained?) pieces
# ---------------------------------------------------------------------------
def _drill_equation(rng: random.Random) -> tuple[str, str]:
    """One equation with the operand ranges `labkit.data` word problems use."""
    kind = rng.choices(["add", "sub", "mul", "box", "div"], weights=[3, 3, 1, 1, 1.5])[0]
    if kind == "add":
        x, k = rng.randint(2, 949), rng.randint(1, 25)
        return f"{x} + {k} =", f" {x + k}."
    if kind == "sub":
        x = rng.randint(2, 999)
        k = rng.randint(1, x - 1)
        return f"{x} - {k} =", f" {x - k}."
    if kind == "mul":
        x, m = rng.randint(1, 60), rng.randint(2, 5)
        return f"{x} * {m} =", f" {x * m}."
    if kind == "box":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        return f"{a} * {b} =", f" {a * b}."
    m = rng.randint(2, 6)
    q = rng.randint(1, 999 // m)
    return f"{q * m} / {m} =", f" {q}."


def document(rng: random.Random, problems, kind: str, tokenizer=None) -> list[tuple[str, bool]]:
    """One training document of the given kind, as (text, has_loss) pieces.

    ``zero_shot_filler`` needs the ``tokenizer`` (its dots match the chain's token count).
    """
    if kind == "drill":
        pieces = []
        for i in range(24):
            lhs, rhs = _drill_equation(rng)
            pieces += [((" " if i else "") + lhs, False), (rhs, True)]
        return pieces
    p = next(problems)
    q = P.qa_prefix(p["question"])
    if kind == "direct":
        return [(q + " The answer is", False), (f" {p['answer']}.", True)]
    if kind == "zero_shot_cot":
        end = (f" {P.ANSWER_TRIGGER} {p['answer']}." if rng.random() < 0.25
               else f" The answer is {p['answer']}.")
        return [(q + " " + P.COT_TRIGGER, False), (" " + P.reasoning_of(p) + end, True)]
    if kind == "zero_shot_filler":
        if tokenizer is None:
            raise LabkitError("zero_shot_filler documents need the tokenizer: document(rng, problems, kind, tokenizer)")
        end = (f" {P.ANSWER_TRIGGER} {p['answer']}." if rng.random() < 0.25
               else f" The answer is {p['answer']}.")
        return [(q + " " + P.COT_TRIGGER, False), (filler_of(tokenizer, P.reasoning_of(p)) + end, True)]
    if kind == "least_to_most":
        return [(q + " " + P.LTM_TRIGGER, False),
                (f" {P.decomposition_text(p)}\n{P.LTM_SOLVE} {P.solved_in_order_text(p)}", True)]
    if kind == "few_shot":
        chain = rng.random() < 0.75
        pieces = []
        for i in range(rng.choice([2, 3])):
            p = p if i == 0 else next(problems)
            answer = f" {p['solution']}" if chain else f" The answer is {p['answer']}."
            pieces += [(("\n\n" if i else "") + P.qa_prefix(p["question"]), False), (answer, True)]
        return pieces
    raise LabkitError(f"unknown document kind {kind!r}; use one of {', '.join(KINDS)}")


def problem_stream(seed: int, chunk: int = 20000):
    """Endless train-split problems (a fresh chunk per seed), 1-5 steps uniformly."""
    from . import data

    k = 0
    while True:
        yield from data.word_problems(chunk, seed=seed * 1000 + k, split="train")
        k += 1


def encode(tokenizer, pieces) -> tuple[list[int], list[int]]:
    """bos + pieces + eos; labels -100 where a piece has no loss (eos is trained: it stops generation)."""
    ids, labels = [tokenizer.bos_token_id], [-100]
    for text, trained in pieces:
        t = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += t
        labels += t if trained else [-100] * len(t)
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return ids, labels


def packed_batches(tokenizer, batch_size: int, seq_len: int, seed: int = 0, mixture: dict | None = None):
    """Endless batches of documents packed end to end into rows of seq_len tokens."""
    rng = random.Random(seed)
    problems = problem_stream(seed)
    mixture = mixture or MIXTURE
    kinds, weights = list(mixture), list(mixture.values())
    buf_ids, buf_labels = [], []
    while True:
        rows_x, rows_y = [], []
        while len(rows_x) < batch_size:
            while len(buf_ids) < seq_len:
                ids, labels = encode(tokenizer, document(rng, problems, rng.choices(kinds, weights)[0], tokenizer))
                buf_ids += ids
                buf_labels += labels
            rows_x.append(buf_ids[:seq_len])
            rows_y.append(buf_labels[:seq_len])
            buf_ids, buf_labels = buf_ids[seq_len:], buf_labels[seq_len:]
        yield {"input_ids": torch.tensor(rows_x), "labels": torch.tensor(rows_y)}


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
def train_cot_model(steps: int = 1400, batch_size: int = 8, seq_len: int = 384, lr: float = 1e-3,
                    seed: int = 0, out: str | Path | None = None, log: str | Path | None = None,
                    save_every: int = 200, eval_every: int = 400, command: str = "",
                    stop_after: int | None = None, init: str = "lab-tiny", force: bool = False,
                    mixture: str = "lab-cot") -> dict:
    """Fully fine-tune lab-tiny into lab-cot; save bf16 safetensors + training.json into ``out``.

    ``stop_after``: end after that many steps of a ``steps``-long schedule (the learning rate has
    not fully decayed); this is how a run cut short by its time budget is reproduced exactly.
    ``init``: "lab-tiny", or a checkpoint directory to continue from (a second round).
    ``out`` defaults to ``data/models/lab-cot``; a model already there (the committed one) is
    replaced only with ``force=True`` -- checked before any training. The same holds for an
    explicit ``out`` that already holds a committed model (``data/models/...``).
    ``mixture``: a name in `MIXTURES` ("lab-cot", or the control pair "equal" / "filler").
    """
    from . import env, models
    from .train import TrainConfig, train

    if mixture not in MIXTURES:
        raise LabkitError(f"unknown mixture {mixture!r}; use one of {', '.join(MIXTURES)}")
    mix = MIXTURES[mixture]
    out = Path(out) if out else default_out(force)
    if (out / "model.safetensors").exists() and _is_committed(out) and not force:
        raise LabkitError(f"{out} holds a committed model; pass --force to replace it, or choose another --out")
    env.seed_everything(seed)
    model, tok = models.load("lab-tiny")
    if init != "lab-tiny":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    logf = open(log, "a") if log else None
    t0 = time.perf_counter()
    curve = {"step": [], "zero_shot_cot_acc": [], "direct_acc": []}

    def say(msg):
        if logf:
            logf.write(msg + "\n")
            logf.flush()

    seen = {}

    def callback(step, model, history):
        seen["history"] = history
        if step % 20 == 0:
            say(f"step {step} loss {history.loss[-1]:.4f} lr {history.lr[-1]:.2e} {time.perf_counter() - t0:.0f}s")
        if step % save_every == 0 or step == steps:
            save(model, tok, out, {"steps_done": step})
        if eval_every and (step % eval_every == 0 or step == steps):
            accs = quick_eval(model, tok)
            curve["step"].append(step)
            for k in ("zero_shot_cot", "direct"):
                curve[f"{k}_acc"].append(accs[k])
            say(f"step {step} eval {accs}")
            model.train()
        if stop_after and step >= stop_after:
            raise _Stop

    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(100, steps // 10), weight_decay=0.0,
                      precision="bf16-mixed", progress=False, desc="lab-cot")
    try:
        history = train(model, packed_batches(tok, batch_size, seq_len, seed, mix), cfg, callback=callback)
    except _Stop:
        history = seen["history"]
        history.seconds = time.perf_counter() - t0
        model.eval()
    summary = {
        "model": P.COT_MODEL if mixture == "lab-cot" else f"lab-cot-{mixture}", "base": "lab-tiny", "init": str(init), "n_params": models.count_params(model),
        "command": command or f"python -m labkit.cot_model --steps {steps} --batch-size {batch_size} "
                              f"--seq-len {seq_len} --lr {lr} --seed {seed}"
                              + (f" --stop-after {stop_after}" if stop_after else "")
                              + (f" --init {init}" if init != "lab-tiny" else "")
                              + (f" --mixture {mixture}" if mixture != "lab-cot" else ""),
        "steps": len(history.step), "schedule_steps": steps, "batch_size": batch_size, "seq_len": seq_len, "lr": lr, "seed": seed,
        "precision": "bf16-mixed", "mixture": mix, "loss": "answers only (after 'A:'; drill results)",
        "tokens_seen": history.tokens, "final_train_loss": round(sum(history.loss[-50:]) / len(history.loss[-50:]), 4),
        "quick_eval_curve": curve, "seconds": round(history.seconds, 1),
        "device": "cpu", "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
    }
    save(model, tok, out, summary)
    return summary


def default_out(force: bool = False) -> Path:
    """``data/models/lab-cot``, unless it already holds a model and ``force`` is not set."""
    from .artefacts import committed_model_dir

    return committed_model_dir(P.COT_MODEL, force)


def _is_committed(path: Path) -> bool:
    """True when ``path`` lies inside the repository's ``data/models`` (a checkpoint git tracks)."""
    from .models import checkpoint_dir

    try:
        return path.resolve().parent == checkpoint_dir(P.COT_MODEL).resolve().parent
    except OSError:
        return False


class _Stop(Exception):
    """Raised by the training callback to end a run at ``stop_after`` steps."""


def save(model, tokenizer, out: Path, summary: dict) -> None:
    """bf16 safetensors (half the bytes; `prompting.load_model` reads them back as fp32) + training.json,
    by `models.write_bf16` in the committed lab-cot layout (config.json, no generation_config.json)."""
    from . import models

    models.write_bf16(model, out, summary, generation_config=False)


def quick_eval(model, tokenizer, n: int = 24) -> dict:
    """Greedy accuracy of direct and zero-shot-CoT on n held-out 3-step problems (a training probe)."""
    from . import data

    problems = data.load("word_problems", "test")
    problems = [p for p in problems if p["n_steps"] == 3][:n]
    return {s: round(P.evaluate(model, tokenizer, problems, s, progress=False).accuracy, 3)
            for s in ("direct", "zero_shot_cot")}


SMOKE = {"steps": 3, "batch_size": 1, "seq_len": 64, "eval_every": 0}  # --profile smoke: a few steps, never data/models


def main(argv: list[str] | None = None) -> int:
    """``--profile smoke`` trains `SMOKE` (3 steps of one 64-token sequence, no quick eval) into
    ``--out`` or a fresh temporary directory -- never into ``data/models``; ``cpu``/``full`` (or no
    ``--profile``; ``LABKIT_PROFILE`` is not read) train the flags as given."""
    import shlex
    import sys
    import tempfile

    from . import cli

    ap = cli.parser("cot-model", __doc__.splitlines()[0],
                    profile_help="smoke: 3 steps into --out or a temp dir, never data/models; "
                                 "cpu/full or none: the flags as given (LABKIT_PROFILE is not read)")
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=384)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output directory (default data/models/lab-cot, "
                                                 "which holds the committed model: needs --force)")
    ap.add_argument("--force", action="store_true", help="without --out: replace data/models/lab-cot")
    ap.add_argument("--log", default=None)
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--stop-after", type=int, default=None, help="end early on the same schedule")
    ap.add_argument("--init", default="lab-tiny", help="lab-tiny, or a checkpoint directory to continue from")
    ap.add_argument("--mixture", default="lab-cot", choices=list(MIXTURES),
                    help="document mixture: lab-cot (the committed model) or the control pair equal / filler")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    command = "python -m labkit.cot_model " + " ".join(shlex.quote(a) for a in argv)
    if args.profile == "smoke":
        if args.out and _is_committed(Path(args.out)):
            raise LabkitError(f"--profile smoke never writes into data/models; got --out {args.out}")
        args.out = args.out or tempfile.mkdtemp(prefix="lab-cot-smoke-")
        for key, value in SMOKE.items():
            setattr(args, key, value)
    summary = train_cot_model(args.steps, args.batch_size, args.seq_len, args.lr, args.seed, args.out,
                              args.log, eval_every=args.eval_every, command=command,
                              stop_after=args.stop_after, init=args.init, force=args.force,
                              mixture=args.mixture)
    line = {k: summary[k] for k in ("steps", "final_train_loss", "quick_eval_curve", "seconds")}
    if args.json:
        cli.emit_json({"out": str(args.out or default_out(force=True)), **line})
    else:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    import sys

    from . import cli

    sys.exit(cli.run(main, sys.argv[1:]))

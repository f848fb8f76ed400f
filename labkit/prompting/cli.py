"""Experiments: a table of strategies on held-out problems, and `python -m labkit cot` (lab 08 §6, §8, §12).

Why a module of its own: the notebook and the command line run the same `compare` and print the same
`format_table`; the CLI checks every argument before a model loads. Lab 08 §6 builds the table on
`lab-cot`, §8 and §12 run it on other models.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import LabkitError
from .generation import load_model
from .harness import EvalResult, _check_strategy, evaluate, write_records
from .prompts import COT_MODEL, EXEMPLAR_STEPS, STRATEGIES

__all__ = ['held_out', 'compare', 'format_table', '_check_out_path', '_check_cli_args', 'main']

# ---------------------------------------------------------------------------
# Experiments: a table of strategies, and the CLI
# ---------------------------------------------------------------------------
def held_out(n_steps: int, n: int) -> list[dict]:
    """The first n committed *test* problems with n_steps steps (never seen in training)."""
    from .. import data

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
    from .. import cli, env

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

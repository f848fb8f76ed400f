"""The repetition grid of lab 10 and its command line: `GRID`, `repetition_grid`, ``python -m labkit decode``.

Why a module of its own: it is the lab's experiment, not a piece of decoding -- each decoding setting
of `GRID` (greedy, penalty, no-repeat 3-gram, temperature, top-p) runs on left-padded prompts, once
per seed when it samples, and the share of repeated n-grams (`repetition_rate`) and of distinct
bigrams (`distinct_n`) of its continuations is reported per prompt and in all.

Built in lab 10 §5 ("Repetition, measured: each decoding setting on four models");
``python -m labkit decode`` (`main`) runs the same grid on held-out openings of the lab corpus.
"""
from __future__ import annotations

import torch

from ..errors import LabkitError
from .checks import _positive_int, _positive_number
from .generation import generate
from .repetition_metrics import distinct_n, repetition_rate

__all__ = ["GRID", "repetition_grid", "main"]


GRID = {
    "greedy": {},
    "greedy + penalty 1.2": {"repetition_penalty": 1.2},
    "greedy + no-repeat 3-gram": {"no_repeat_ngram_size": 3},
    "sample T=0.7": {"do_sample": True, "temperature": 0.7},
    "top-p 0.9": {"do_sample": True, "top_p": 0.9},
    "top-p 0.9 + penalty 1.2": {"do_sample": True, "top_p": 0.9, "repetition_penalty": 1.2},
}


def _left_pad(prompts, tokenizer):
    """Left-padded ``(input_ids, attention_mask)`` of prompts given as texts or as lists of token ids."""
    if prompts and all(isinstance(p, (list, tuple)) for p in prompts):
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            if not p:
                raise LabkitError(f"prompt {i} has no tokens")
            ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long), 1
        return ids, mask
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise LabkitError("prompts must be a non-empty list of texts or of token-id lists")
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc.input_ids, enc.attention_mask


def repetition_grid(model, tokenizer, prompts: list, settings: dict[str, dict], new_tokens: int,
                    seeds=(0,), n: int = 4, *, eos_token_id=None) -> dict[str, dict]:
    """Repetition rate of the n-grams of each setting's continuations of ``prompts`` (lab 10, §5).

    ``prompts`` are texts (tokenized as they are, no special tokens added) or lists of token ids
    (e.g. `labkit.sft.format_prompt` of a chat model); they are left-padded into one batch.
    ``settings`` maps a name to `generate` keywords. Sampled settings (``do_sample=True``) run once
    per seed of ``seeds`` (the global torch seed is set before each run); greedy ones run once, with
    ``seeds[0]``. With ``eos_token_id`` (an id or a list of ids) a continuation ends at its first
    end token, which is not counted; without it every continuation has ``new_tokens`` tokens.

    Returns ``{setting: {...}}`` with, per setting:

    * ``repetition_rate`` -- mean over prompts of ``per_prompt``;
    * ``per_prompt`` -- each prompt's repetition rate (share of repeated n-grams), mean over runs;
    * ``runs`` -- how many runs the setting had; ``seeds`` -- their seeds;
    * ``per_run`` -- ``[run][prompt]`` repetition rates (``per_prompt`` is their mean over runs);
    * ``distinct_2`` / ``distinct_2_per_prompt`` -- the same for distinct bigrams (`distinct_n`);
    * ``texts`` -- ``[run][prompt]`` decoded continuations (special tokens skipped);
    * ``new_tokens`` -- ``[run][prompt]`` tokens counted in each continuation.
    """
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not seeds:
        raise LabkitError("seeds must name at least one seed")
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    ids, mask = _left_pad(prompts, tokenizer)
    device = model.lm_head.weight.device
    ids, mask = ids.to(device), mask.to(device)
    out = {}
    for name, kw in settings.items():
        runs = list(seeds) if kw.get("do_sample") else [seeds[0]]
        rates, d2, texts, lengths = [], [], [], []
        for seed in runs:
            torch.manual_seed(seed)
            gen = generate(model, ids, new_tokens, attention_mask=mask, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=eos or None, **kw)
            rows = gen[:, ids.shape[1]:].tolist()
            if eos:
                rows = [row[:next((i for i, t in enumerate(row) if t in eos), len(row))] for row in rows]
            rates.append([repetition_rate(row, n) for row in rows])
            d2.append([distinct_n(row, 2) for row in rows])
            texts.append([tokenizer.decode(row, skip_special_tokens=True) for row in rows])
            lengths.append([len(row) for row in rows])
        per_prompt = [sum(col) / len(col) for col in zip(*rates)]
        d2_prompt = [sum(col) / len(col) for col in zip(*d2)]
        out[name] = {"repetition_rate": sum(per_prompt) / len(per_prompt), "per_prompt": per_prompt,
                     "runs": len(runs), "seeds": runs, "per_run": rates,
                     "distinct_2": sum(d2_prompt) / len(d2_prompt), "distinct_2_per_prompt": d2_prompt,
                     "texts": texts, "new_tokens": lengths}
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit decode``: repetition rate of decoding settings on held-out openings."""
    from .. import cli, data, env, models, stats

    p = cli.parser("decode", "Repetition rate (repeated 4-grams) of decoding settings on held-out text openings "
                             "(lab 10). With --temperature/--top-p/--top-k/--repetition-penalty/--no-repeat-ngram-size "
                             "the grid gets your setting too.")
    p.add_argument("--model", default="lab-tiny", help="lab-tiny (default) or smollm2-135m")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--no-repeat-ngram-size", type=int, default=None)
    args = p.parse_args(argv)
    mine = {}
    if args.temperature is not None:
        _positive_number(args.temperature, "--temperature")
        mine["temperature"] = args.temperature
    if args.top_p is not None:
        if not 0 < args.top_p <= 1:
            raise LabkitError(f"--top-p must be in (0, 1], got {args.top_p}")
        mine["top_p"] = args.top_p
    if args.top_k is not None:
        mine["top_k"] = _positive_int(args.top_k, "--top-k")
    if args.repetition_penalty is not None:
        mine["repetition_penalty"] = _positive_number(args.repetition_penalty, "--repetition-penalty")
    if args.no_repeat_ngram_size is not None:
        mine["no_repeat_ngram_size"] = _positive_int(args.no_repeat_ngram_size, "--no-repeat-ngram-size")
    if args.model not in ("lab-tiny", "smollm2-135m"):
        raise LabkitError(f"--model must be lab-tiny or smollm2-135m, got {args.model!r}")
    profile = env.check_profile(args.profile) if args.profile else env.profile()
    n_prompts = env.by_profile(smoke=4, cpu=24, full=64, profile_name=profile)
    new_tokens = env.by_profile(smoke=16, cpu=48, full=128, profile_name=profile)
    seeds = stats.default_seeds(profile)
    settings = dict(GRID)
    if mine:
        if any(k in mine for k in ("temperature", "top_p", "top_k")):
            mine = {"do_sample": True, **mine}
        settings["yours: " + ", ".join(f"{k}={v}" for k, v in mine.items() if k != "do_sample")] = mine
    model, tok = models.load(args.model, device=env.device())
    model.eval()
    prompts = [" ".join(d.split()[:6]) for d in data.general_corpus(n_prompts, split="test")]
    grid = repetition_grid(model, tok, prompts, settings, new_tokens, seeds)
    print(f"{args.model}, profile {profile}: {n_prompts} held-out openings x {new_tokens} new tokens, "
          f"sampled settings x {len(seeds)} runs; share of repeated 4-grams:")
    for name, r in grid.items():
        print(f"  {name:<40} {r['repetition_rate']:6.1%}  ({r['runs']} run{'s' if r['runs'] > 1 else ''})")
    if args.json:
        cli.emit_json({"model": args.model, "profile": profile, "prompts": n_prompts, "new_tokens": new_tokens,
                       "n": 4, "grid": {k: {"repetition_rate": v["repetition_rate"], "runs": v["runs"]}
                                        for k, v in grid.items()}})
    return 0

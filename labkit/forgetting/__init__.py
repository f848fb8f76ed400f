"""Catastrophic forgetting, measured: probes, replay mixing, EWC, and a strategy driver (lab 06).

Fine-tuning a pretrained model on a narrow domain moves the weights that also
held its general ability. This package measures that and every mitigation the
usual advice names, on the lab's own model, with the one shared training loop.
One module per role, every name re-exported here, so ``from labkit import
forgetting; forgetting.run_strategy(...)`` reads the same as ever:

* `probes` -- **probes** (lab 06 §3-5): `evaluate(model, tokenizer)`: held-out general-corpus loss,
  recall of the 150 fictional FACTS the general corpus teaches, held-out
  domain-corpus loss, and recall of the 80 DOMAIN_FACTS (the domain "task");
  on lab-tiny also the general loss over the general vocabulary only and the
  probability mass the model puts outside it (`vocab_probe`: an output-prior
  shift is not lost ability); on a real model (smollm2-135m) real-world facts
  it knew before (`world_facts`: `world_fact_candidates` filtered by `known_facts`, lab 06 §12)
  and real English text (`english_nll`);
* `replay` -- **replay** (lab 06 §6) -- `mix(domain, general, ratio)`: put general documents back into
  the fine-tuning data (ratio = general : domain); **curriculum** (§10) -- `curriculum_batches`:
  the general share of each batch decays over training (start broad, end specialised);
* `ewc` -- **EWC** (lab 06 §8) -- `fisher_diagonal` + `EWC`: a quadratic pull towards the pretrained
  weights, weighted by how much the general data cares about each weight,
  plugged into `labkit.train.train(extra_loss=...)`; its control ``l2`` is the
  same pull with every weight equally stiff (`uniform_fisher`: the Fisher's mean
  everywhere, so the same total stiffness);
* **LoRA** (lab 06 §9) -- `labkit.lora.inject_lora`: train a low-rank update, not the weights
  (``lora``: adapters on every linear layer *plus* the embedding and output rows
  of the tokens general text never uses, which no adapter on the linear layers
  can change -- peft calls this ``trainable_token_indices``, `driver.train_token_rows`;
  ``lora_adapters``: adapters only);
* `profiles` -- `Sizes` / `sizes()`: what the run profile changes (lab 06 §1);
* `driver` -- **the driver** (lab 06 §3-11) -- `setup()` then `run_strategy(name, lab)` / `compare(names, lab)`:
  the notebook, `python -m labkit forgetting` (`main`, here) and `labkit/bench/forgetting.py`
  all run the same code.

Strategy names: ``full_ft``, ``replay_<g>_<d>`` (e.g. ``replay_1_5``),
``lr_<value>`` (e.g. ``lr_3e-4``), ``ewc`` / ``ewc_<lambda>``, ``l2`` / ``l2_<lambda>``, ``lora``, ``lora_adapters``,
``curriculum``, ``sft_chat`` (chat instructions instead of the domain corpus).

The CLI's `main` lives here, not in `driver`, so that it looks up `setup`, `run_strategy` and the
other driver names in this package's namespace: a test that patches ``labkit.forgetting.setup``
patches the function `main` calls (tests/test_oneline_errors.py).
"""
from __future__ import annotations

from .. import env
from ..errors import LabkitError
from .driver import (Lab, at_matched_domain_loss, compare, default_strategies, frontier_point, parse_strategy,
                     run_strategy, setup, train_token_rows)
from .ewc import EWC, ewc_penalty, fisher_diagonal, uniform_fisher
from .probes import (PROBE_KEYS, Probes, chat_eval_batches,  # noqa: F401 (PROBE_KEYS, chat_eval_batches)
                      english_nll, evaluate, fact_hits, fact_recall,
                     general_vocab_loss, make_probes, vocab_probe)
from .profiles import Sizes, sizes
from .replay import curriculum_batches, mix, parse_ratio
from .world_facts import known_facts, world_fact_candidates
from .driver import _NAME  # noqa: F401 -- private names of the old single module, still importable here
from .probes import _DEFAULT_PROBES  # noqa: F401
from .world_facts import _WORLD  # noqa: F401

__all__ = ["Probes", "make_probes", "fact_hits", "fact_recall", "world_fact_candidates", "known_facts", "english_nll",
           "general_vocab_loss", "vocab_probe", "uniform_fisher", "evaluate", "mix", "parse_ratio", "curriculum_batches",
           "fisher_diagonal", "ewc_penalty", "EWC", "train_token_rows", "Sizes", "sizes", "Lab", "setup", "parse_strategy",
           "run_strategy", "compare", "default_strategies", "at_matched_domain_loss", "frontier_point", "main",
           "format_probes"]


# ---------------------------------------------------------------------------
# CLI: python -m labkit forgetting
# ---------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    from .. import cli

    p = cli.parser("forgetting", "domain fine-tuning vs general ability: full FT and every mitigation (lab 06)")
    p.add_argument("--strategies", nargs="+", default=None,
                   help="strategy names (default: full_ft replay_1_10 replay_1_5 replay_1_1 lr_<lr/10> ewc l2 lora "
                        "curriculum sft_chat)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per strategy (default: the profile's)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--curves", action="store_true", help="include the probe curves in the JSON")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        raise LabkitError(f"--steps must be at least 1, got {args.steps}")
    if args.seed is not None and not 0 <= args.seed < 2**32:   # numpy's seed range (env.seed_everything)
        raise LabkitError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    for n in args.strategies or []:
        parse_strategy(n)  # fail fast on a typo, before loading anything
    lab = setup(profile=env.check_profile(args.profile), steps=args.steps, seed=args.seed)
    names = args.strategies or default_strategies(lab.sizes)
    for n in names:
        parse_strategy(n)
    if not args.json:
        print(f"base model: " + format_probes(lab.base_probes), flush=True)
    strategies = {}
    for n in names:
        r = run_strategy(n, lab)
        if not args.curves:
            r.pop("curve")
        strategies[n] = r
        if not args.json:
            print(f"{n:<14} " + format_probes(r) + f"  ({r['seconds']:.0f} s)", flush=True)
    if args.json:
        cli.emit_json({"base": lab.base_probes,
                       "strategies": strategies})
    return 0


def format_probes(r: dict) -> str:
    """One line of a result's main probes: general loss, fact recall, domain loss, domain accuracy (lab 06 §3)."""
    return (f"general loss {r['general_loss']:.3f}  fact recall {r['fact_recall']:.0%}  "
            f"domain loss {r['domain_loss']:.3f}  domain acc {r['domain_acc']:.0%}")


_fmt = format_probes   # the old private name (lab 06 printed it before it was public)

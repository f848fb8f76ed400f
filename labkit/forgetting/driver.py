"""The strategy driver: one base model, every strategy through the one training loop (lab 06 §3-11).

Why a module: the notebook, ``python -m labkit forgetting`` and ``labkit/bench/forgetting.py``
run the same code. `setup` loads the base model, the corpora and the probes once (a `Lab`, lab 06
§3; with a real model's facts in §12); `run_strategy(name, lab)` fine-tunes a copy with one
strategy (`parse_strategy`: full FT and a lower LR §5 and §7, replay §6, EWC and L2 §8, LoRA and
LoRA plus the untrained token rows `train_token_rows` §9, curriculum §10, chat SFT) and measures
it; `compare` runs a list. `frontier_point` and `at_matched_domain_loss` read the results
(lab 06 §9 and §11).
"""
from __future__ import annotations

import copy
import random
import re
import time
from dataclasses import dataclass
from fractions import Fraction

import torch

from .. import data, env, lora, train
from ..errors import LabkitError
from .ewc import EWC, fisher_diagonal, uniform_fisher
from .probes import Probes, evaluate, make_probes
from .profiles import Sizes, sizes
from .replay import curriculum_batches, mix

__all__ = ["Lab", "train_token_rows", "setup", "parse_strategy", "run_strategy", "default_strategies", "compare",
           "frontier_point", "at_matched_domain_loss"]


@dataclass
class Lab:
    """A base model, its data and probes: everything `run_strategy` needs, built once by `setup`."""
    base: object
    tokenizer: object
    sizes: Sizes
    probes: Probes
    domain_docs: list[str]
    general_docs: list[str]
    domain_tokens: torch.Tensor
    general_tokens: torch.Tensor
    sft_items: list[dict]
    base_probes: dict
    device: torch.device
    _fisher: dict | None = None

    def new_tokens(self) -> torch.Tensor:
        """Token ids the general corpus never uses: pretraining never trained their rows."""
        vocab = self.base.get_input_embeddings().weight.shape[0]
        counts = torch.bincount(self.general_tokens.flatten().cpu(), minlength=vocab)
        return (counts == 0).nonzero().flatten()

    def fisher(self) -> dict[str, torch.Tensor]:
        """The base model's diagonal Fisher on general windows (computed once, then cached)."""
        if self._fisher is None:
            windows = train.eval_batches(self.general_tokens, batch_size=1, seq_len=self.sizes.seq_len,
                                         device=self.device)
            step = max(1, len(windows) // self.sizes.fisher_windows)
            self._fisher = fisher_diagonal(self.base, windows[::step][: self.sizes.fisher_windows])
        return self._fisher


def train_token_rows(model, token_ids: torch.Tensor) -> int:
    """Make only the rows of ``token_ids`` in the input embedding and the output layer trainable
    (peft's ``trainable_token_indices``); return how many values that is.

    A gradient hook zeroes every other row's gradient. With weight decay 0 (the shared
    loop's default), AdamW then leaves those rows exactly unchanged: its moments stay 0.
    """
    weights = {id(w): w for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}
    for w in weights.values():
        mask = torch.zeros(w.shape[0], 1, dtype=w.dtype, device=w.device)
        mask[token_ids.to(w.device)] = 1
        w.requires_grad_(True)
        w.register_hook(lambda g, m=mask: g * m)
    return sum(len(token_ids) * w.shape[1] for w in weights.values())


def setup(model=None, tokenizer=None, profile: str | None = None, device=None, *, facts: list | None = None,
          fact_suffix: str = ".", english: list[str] | None = None, vocab_probe: bool = True, domain_facts: bool = True,
          **overrides) -> Lab:
    """Load the base model (``labkit.models.load()``: lab-tiny, or ``LABKIT_MODEL``), the data
    and the probes, and measure the base once.

    A real model (smollm2-135m) passes ``facts=known_facts(...)``, ``fact_suffix=""``,
    ``english=perplexity.real_english()`` and ``vocab_probe=False`` (its vocabulary is not the
    lab corpus's). ``vocab_probe``: add `general_vocab_loss` / outside mass to the probes.
    """
    from .. import models

    s = sizes(profile, **overrides)
    device = torch.device(device) if device is not None else env.device()
    if model is None:
        model, tokenizer = models.load(device=device)
    elif tokenizer is None:
        raise LabkitError("setup(model=...) needs the model's tokenizer too")
    model.to(device).eval()
    domain_docs, general_docs = data.load("domain", "train"), data.load("general", "train")
    general_tokens = train.pack_documents(tokenizer, general_docs)
    vocab = None
    if vocab_probe:
        vocab = torch.unique(torch.cat([general_tokens, train.pack_documents(tokenizer, data.load("general", "test"))]))
    probes = make_probes(tokenizer, s.eval_windows, s.eval_seq_len, s.n_facts, s.n_sft, device=device, facts=facts,
                         fact_suffix=fact_suffix, english=english, general_vocab=vocab, domain_facts=domain_facts)
    return Lab(base=model, tokenizer=tokenizer, sizes=s, probes=probes, domain_docs=domain_docs,
               general_docs=general_docs, domain_tokens=train.pack_documents(tokenizer, domain_docs),
               general_tokens=general_tokens,
               sft_items=data.load("instructions", "train"), base_probes=evaluate(model, tokenizer, probes),
               device=device)


_NAME = re.compile(r"^(full_ft|lora|lora_adapters|curriculum|sft_chat|ewc|l2|replay_(\d+)_(\d+)|lr_([0-9.]+(?:e-?\d+)?)|"
                   r"ewc_([0-9.]+(?:e\d+)?)|l2_([0-9.]+(?:e\d+)?))$")


def parse_strategy(name: str) -> dict:
    """``"replay_1_5"`` -> ``{"kind": "replay", "ratio": Fraction(1, 5)}`` and so on."""
    m = _NAME.match(name) if isinstance(name, str) else None
    if not m:
        raise LabkitError(f"unknown strategy {name!r}; use full_ft, replay_<g>_<d> (e.g. replay_1_5), "
                          "lr_<value> (e.g. lr_3e-4), ewc, ewc_<lambda>, l2, l2_<lambda>, lora, lora_adapters, "
                          "curriculum or sft_chat")
    if m.group(2):
        if int(m.group(3)) == 0:
            raise LabkitError(f"{name}: the domain part of a replay ratio must be positive")
        return {"kind": "replay", "ratio": Fraction(int(m.group(2)), int(m.group(3)))}
    if m.group(4):
        lr = float(m.group(4))
        if lr <= 0:
            raise LabkitError(f"{name}: the learning rate must be positive")
        return {"kind": "lr", "lr": lr}
    if m.group(5):
        return {"kind": "ewc", "lam": float(m.group(5))}
    if m.group(6):
        return {"kind": "l2", "lam": float(m.group(6))}
    return {"kind": name}


def run_strategy(name: str, lab: Lab, *, seed: int | None = None, steps: int | None = None,
                 curve_every: int | None = None, keep_model: bool = False) -> dict:
    """Fine-tune a copy of ``lab.base`` with one strategy; return its probes after training.

    The result has every probe key (`evaluate`), plus ``steps``, ``lr``, ``seconds``,
    ``trainable`` and ``curve`` (probes every ``curve_every`` steps, step 0 = the base).
    Every strategy is the same `labkit.train.train` call with different data,
    ``extra_loss`` or trainable parameters.
    """
    spec = parse_strategy(name)
    s = lab.sizes
    seed = s.seed if seed is None else seed
    steps = s.steps if steps is None else steps
    curve_every = s.curve_every if curve_every is None else curve_every
    kind, lr, extra, token_values = spec["kind"], s.lr, None, 0
    env.seed_everything(seed)
    model = copy.deepcopy(lab.base).to(lab.device)
    bs, sl, dev = s.batch_size, s.seq_len, lab.device

    if kind == "replay":
        docs = mix(lab.domain_docs, random.Random(seed).sample(lab.general_docs, len(lab.general_docs)),
                   spec["ratio"], seed=seed)
        batches = train.random_batches(train.pack_documents(lab.tokenizer, docs), bs, sl, seed=seed, device=dev)
    elif kind == "curriculum":
        batches = curriculum_batches(lab.domain_tokens, lab.general_tokens, bs, sl, steps, s.curriculum_start,
                                     0.0, seed=seed, device=dev)
    elif kind == "sft_chat":
        batches = lora.instruction_batches(lab.tokenizer, lab.sft_items, bs, seed=seed, device=dev)
    else:
        batches = train.random_batches(lab.domain_tokens, bs, sl, seed=seed, device=dev)
    if kind == "lr":
        lr = spec["lr"]
    elif kind == "ewc":
        extra = EWC(model, lab.fisher(), spec.get("lam", s.ewc_lambda))
    elif kind == "l2":   # the same spring, every weight equally stiff (same trace as the Fisher)
        extra = EWC(model, uniform_fisher(lab.fisher()), spec.get("lam", s.ewc_lambda))
    elif kind in ("lora", "lora_adapters"):
        lora.inject_lora(model, r=s.lora_r, alpha=2 * s.lora_r, target_modules="all-linear")
        if kind == "lora":  # + the rows of the tokens pretraining never trained (see train_token_rows)
            token_values = train_token_rows(model, lab.new_tokens())
        lr = s.lora_lr

    curve = {"step": [0], **{k: [v] for k, v in lab.base_probes.items()}}

    def probe(step, m, history):
        if curve_every and step % curve_every == 0 and step != steps:
            for k, v in evaluate(m, lab.tokenizer, lab.probes).items():
                curve[k].append(v)
            curve["step"].append(step)

    cfg = train.TrainConfig(steps=steps, lr=lr, warmup_steps=min(s.warmup, steps - 1), progress=False,
                            desc=name)
    t0 = time.perf_counter()
    hist = train.train(model, batches, cfg, extra_loss=extra, callback=probe)
    seconds = time.perf_counter() - t0
    final = evaluate(model, lab.tokenizer, lab.probes)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if token_values:  # only some rows of the embedding and output weights were trainable
        token_weights = {id(w): w for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}
        trainable += token_values - sum(w.numel() for w in token_weights.values())
    for k, v in final.items():
        curve[k].append(v)
    curve["step"].append(steps)
    out = {**final, "steps": steps, "lr": lr, "seed": seed, "seconds": round(seconds, 2),
           "trainable": trainable,
           "train_loss": hist.loss[-1], "curve": curve}
    if kind in ("ewc", "l2"):
        out["ewc_lambda"] = extra.lam
    if keep_model:
        out["model"] = model
    return out


def default_strategies(sizes_: Sizes) -> list[str]:
    """The comparison the CLI runs: full FT, three replay ratios, a 10x lower LR, EWC and its L2 control, LoRA,
    curriculum and chat SFT."""
    return ["full_ft", "replay_1_10", "replay_1_5", "replay_1_1", f"lr_{sizes_.lr / 10:g}", "ewc", "l2", "lora",
            "curriculum", "sft_chat"]


def compare(names: list[str] | None = None, lab: Lab | None = None, **kw) -> dict:
    """``{"base": probes, "strategies": {name: run_strategy(name, lab)}}`` (models and curves dropped
    only by the CLI)."""
    lab = lab or setup()
    names = names or default_strategies(lab.sizes)
    for n in names:
        parse_strategy(n)  # fail fast on a typo, before minutes of training
    return {"base": dict(lab.base_probes), "strategies": {n: run_strategy(n, lab, **kw) for n in names}}


# ---------------------------------------------------------------------------
# Reading the results
# ---------------------------------------------------------------------------
def frontier_point(result: dict, base: dict) -> dict:
    """Forgetting (x) and domain gain (y) of one strategy relative to the base."""
    return {"general_loss_increase": result["general_loss"] - base["general_loss"],
            "fact_recall_drop": base["fact_recall"] - result["fact_recall"],
            "domain_loss_gain": base["domain_loss"] - result["domain_loss"],
            "domain_acc_gain": result["domain_acc"] - base["domain_acc"]}


def at_matched_domain_loss(curve: dict, target: float) -> dict | None:
    """Where a probe curve first reaches domain loss ``target``: linear interpolation of
    step, general loss and fact recall between the two probes around the crossing.
    None if the curve never gets that low."""
    dl = curve["domain_loss"]
    for i in range(1, len(dl)):
        if dl[i] <= target <= dl[i - 1]:
            w = 0.0 if dl[i - 1] == dl[i] else (dl[i - 1] - target) / (dl[i - 1] - dl[i])
            lerp = lambda key: curve[key][i - 1] + w * (curve[key][i] - curve[key][i - 1])  # noqa: E731
            return {"step": lerp("step"), "domain_loss": target, "general_loss": lerp("general_loss"),
                    "fact_recall": lerp("fact_recall")}
    return None

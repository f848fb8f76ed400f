"""Catastrophic forgetting, measured: probes, replay mixing, EWC, and a strategy driver (lab 06).

Fine-tuning a pretrained model on a narrow domain moves the weights that also
held its general ability. This module measures that and every mitigation the
usual advice names, on the lab's own model, with the one shared training loop:

* **probes** -- `evaluate(model, tokenizer)`: held-out general-corpus loss,
  recall of the 150 fictional FACTS the general corpus teaches, held-out
  domain-corpus loss, and recall of the 80 DOMAIN_FACTS (the domain "task");
* **replay** -- `mix(domain, general, ratio)`: put general documents back into
  the fine-tuning data (ratio = general : domain);
* **curriculum** -- `curriculum_batches`: the general share of each batch
  decays over training (start broad, end specialised);
* **EWC** -- `fisher_diagonal` + `EWC`: a quadratic pull towards the pretrained
  weights, weighted by how much the general data cares about each weight,
  plugged into `labkit.train.train(extra_loss=...)`;
* **LoRA** -- `labkit.lora.inject_lora`: train a low-rank update, not the weights
  (``lora``: adapters on every linear layer *plus* the embedding and output rows
  of the tokens general text never uses, which no adapter on the linear layers
  can change -- peft calls this ``trainable_token_indices``; ``lora_adapters``:
  adapters only);
* **the driver** -- `setup()` then `run_strategy(name, lab)` / `compare(names, lab)`:
  the notebook, `python -m labkit forgetting` and `labkit/bench/forgetting.py`
  all run the same code.

Strategy names: ``full_ft``, ``replay_<g>_<d>`` (e.g. ``replay_1_5``),
``lr_<value>`` (e.g. ``lr_3e-4``), ``ewc`` / ``ewc_<lambda>``, ``lora``, ``lora_adapters``,
``curriculum``, ``sft_chat`` (chat instructions instead of the domain corpus).
"""
from __future__ import annotations

import copy
import math
import random
import re
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Iterator

import torch

from . import data, env, lora, train
from .errors import LabkitError

__all__ = ["Probes", "make_probes", "fact_recall", "evaluate", "mix", "parse_ratio", "curriculum_batches",
           "fisher_diagonal", "ewc_penalty", "EWC", "train_token_rows", "Sizes", "sizes", "Lab", "setup", "parse_strategy",
           "run_strategy", "compare", "default_strategies", "at_matched_domain_loss", "frontier_point", "main"]

PROBE_KEYS = ("general_loss", "domain_loss", "fact_recall", "domain_acc", "sft_loss")


# ---------------------------------------------------------------------------
# Probes of general and domain ability
# ---------------------------------------------------------------------------
@dataclass
class Probes:
    """Fixed evaluation sets, built once so every model is measured on the same tokens."""
    general: list[dict]                 # held-out general-corpus windows (eval batches)
    domain: list[dict]                  # held-out domain-corpus windows
    facts: list[tuple[str, str]]        # (prompt, answer) cloze probes of general knowledge
    domain_facts: list[tuple[str, str]]  # (prompt, answer) cloze probes of the domain
    sft: list[dict] = field(default_factory=list)  # held-out chat instructions (loss on answers only)


def make_probes(tokenizer, n_windows: int = 32, seq_len: int = 128, n_facts: int | None = None,
                n_sft: int = 64, device: str | torch.device = "cpu") -> Probes:
    """Build the probe sets from the committed held-out files (data/corpora/*_test).

    ``n_facts`` keeps every k-th fact so a subset still covers all relations (None: all 150).
    """
    if n_windows < 1 or seq_len < 2:
        raise LabkitError("make_probes needs n_windows >= 1 and seq_len >= 2")
    facts, dfacts = data.fact_probes(), data.domain_probes()
    if n_facts is not None:
        if n_facts < 1:
            raise LabkitError("n_facts must be at least 1 (or None for all)")
        facts = facts[:: max(1, len(facts) // n_facts)][:n_facts]
        dfacts = dfacts[:: max(1, len(dfacts) // n_facts)][:n_facts]

    def windows(name):
        tokens = train.pack_documents(tokenizer, data.load(name, "test"))
        return train.eval_batches(tokens, batch_size=16, seq_len=seq_len, max_batches=math.ceil(n_windows / 16),
                                  device=device)

    sft_items = data.load("instructions", "test")[:n_sft]
    sft = lora.instruction_eval_batches(tokenizer, sft_items, batch_size=32, device=device) if n_sft else []
    return Probes(windows("general"), windows("domain"), facts, dfacts, sft)


@torch.no_grad()
def fact_recall(model, tokenizer, probes: list[tuple[str, str]], batch_size: int = 64) -> float:
    """Fraction of (prompt, answer) probes the model completes greedily with `` answer.``

    Exact match, computed with teacher forcing in one batched forward pass: a probe
    counts if the argmax at every position of `` <answer>.`` is that token. That is
    the same test as greedy decoding (greedy reproduces the answer iff each of its
    tokens is the argmax given the correct prefix), hundreds of times faster.
    """
    if not probes:
        raise LabkitError("fact_recall needs at least one (prompt, answer) probe")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    rows = []
    for prompt, answer in probes:
        p = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = bos + tokenizer(f"{prompt} {answer}.", add_special_tokens=False)["input_ids"]
        if full[: len(p)] != p:  # the tokenizer merged across the boundary: compare on the full text only
            p = p[:-1]
        rows.append((full, len(p)))
    hits = 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        width = max(len(f) for f, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, (f, _) in enumerate(chunk):
            ids[j, : len(f)], mask[j, : len(f)] = torch.tensor(f), 1
        pred = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.argmax(-1).cpu()
        for j, (f, n_prompt) in enumerate(chunk):
            target = torch.tensor(f[n_prompt:])
            hits += bool((pred[j, n_prompt - 1: len(f) - 1] == target).all())
    model.train(was_training)
    return hits / len(probes)


_DEFAULT_PROBES: dict = {}


def evaluate(model, tokenizer, probes: Probes | None = None) -> dict:
    """Every probe of one model: ``general_loss``, ``domain_loss`` (nats/token, held out),
    ``fact_recall`` (general FACTS), ``domain_acc`` (DOMAIN_FACTS), ``sft_loss``
    (held-out chat answers; only if the probes have them).

    Without ``probes``, the profile's default sets are built once and reused.
    """
    if probes is None:
        key = (id(tokenizer), env.profile(), str(next(model.parameters()).device))
        if key not in _DEFAULT_PROBES:
            s = sizes()
            _DEFAULT_PROBES[key] = make_probes(tokenizer, s.eval_windows, s.eval_seq_len, s.n_facts, s.n_sft,
                                               device=next(model.parameters()).device)
        probes = _DEFAULT_PROBES[key]
    out = {
        "general_loss": train.evaluate_loss(model, probes.general),
        "domain_loss": train.evaluate_loss(model, probes.domain),
        "fact_recall": fact_recall(model, tokenizer, probes.facts),
        "domain_acc": fact_recall(model, tokenizer, probes.domain_facts),
    }
    if probes.sft:
        out["sft_loss"] = train.evaluate_loss(model, probes.sft)
    return out


# ---------------------------------------------------------------------------
# Replay: mixing general data back in
# ---------------------------------------------------------------------------
def parse_ratio(ratio) -> Fraction:
    """general:domain ratio -> general documents per domain document, as an exact Fraction.

    Accepted forms: a number (``0``, ``0.2``, ``1``; ``0.2`` = one general per five
    domain documents), a string ``"1:5"`` or ``"0.2"``, a pair ``(1, 5)``, a Fraction.
    """
    try:
        if isinstance(ratio, bool):
            raise TypeError
        if isinstance(ratio, str) and ":" in ratio:
            g, d = ratio.split(":")
            value = Fraction(g.strip()) / Fraction(d.strip())
        elif isinstance(ratio, (tuple, list)) and len(ratio) == 2:
            value = Fraction(ratio[0]) / Fraction(ratio[1])
        elif isinstance(ratio, float):
            if not math.isfinite(ratio):
                raise ValueError
            value = Fraction(ratio).limit_denominator(1000)  # 0.2 -> 1/5, not 3602879701896397/2**54
        else:
            value = Fraction(ratio)
    except (TypeError, ValueError, ZeroDivisionError):
        raise LabkitError(f"ratio must be general:domain as a number (0.2), 'g:d' ('1:5') or a pair (1, 5); "
                          f"got {ratio!r}") from None
    if value < 0:
        raise LabkitError(f"ratio must be >= 0 (general documents per domain document), got {ratio!r}")
    return value


def mix(domain: list, general: list, ratio, seed: int = 0) -> list:
    """All ``domain`` documents plus ``round(ratio * len(domain))`` general ones, shuffled.

    ``ratio`` is general:domain in *documents* (see `parse_ratio`): ``0`` = domain only,
    ``"1:10"`` = one general document per ten domain documents, ``1`` = as many of each.
    The general documents are the first ones of ``general`` (pass them in a random
    order); the shuffle is seeded. Too few general documents is an error, not a
    silently smaller ratio.
    """
    if not domain:
        raise LabkitError("mix needs at least one domain document")
    r = parse_ratio(ratio)
    k = round(r * len(domain))
    if k > len(general):
        raise LabkitError(f"ratio {ratio!r} needs {k} general documents for {len(domain)} domain ones, "
                          f"got {len(general)}; pass more general documents or a smaller ratio")
    out = list(domain) + list(general[:k])
    random.Random(seed).shuffle(out)
    return out


def curriculum_batches(domain_tokens: torch.Tensor, general_tokens: torch.Tensor, batch_size: int, seq_len: int,
                       steps: int, start: float, end: float = 0.0, seed: int = 0,
                       device: str | torch.device = "cpu") -> Iterator[dict]:
    """Seeded batches whose general share falls linearly from ``start`` to ``end`` over ``steps``.

    At step t (0-based) ``round(share(t) * batch_size)`` rows are windows of the general
    stream and the rest windows of the domain stream; after ``steps`` the share stays at ``end``.
    """
    if not (0.0 <= end <= 1.0 and 0.0 <= start <= 1.0):
        raise LabkitError(f"curriculum shares must be in [0, 1], got start={start}, end={end}")
    gen_d = train.random_batches(domain_tokens, batch_size, seq_len, seed=seed, device=device)
    gen_g = train.random_batches(general_tokens, batch_size, seq_len, seed=seed + 1, device=device)
    t = 0
    while True:
        share = start + (end - start) * min(t / max(steps - 1, 1), 1.0)
        n_g = round(share * batch_size)
        d, g = next(gen_d)["input_ids"], next(gen_g)["input_ids"]
        x = torch.cat([g[:n_g], d[: batch_size - n_g]])
        t += 1
        yield {"input_ids": x, "labels": x}


# ---------------------------------------------------------------------------
# EWC: elastic weight consolidation (Kirkpatrick et al., 2017)
# ---------------------------------------------------------------------------
def fisher_diagonal(model, batches, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: ``F_i = mean over batches of (dL/dθ_i)²``.

    Each batch contributes its squared gradient, so pass batches of ONE sequence for
    the per-sequence Fisher (a batch's mean gradient squared is smaller). "Empirical":
    the labels are the data's, not samples from the model. Returns fp32 tensors keyed
    by parameter name (``names``: default every parameter that requires grad).
    """
    batches = list(batches)
    if not batches:
        raise LabkitError("fisher_diagonal needs at least one batch of general data")
    params = {n: p for n, p in model.named_parameters() if (p.requires_grad if names is None else n in names)}
    if not params:
        raise LabkitError("fisher_diagonal: no parameters selected")
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the deterministic model
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / len(batches) for n, f in fisher.items()}


def ewc_penalty(model, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """``lam / 2 * sum_i F_i (θ_i - θ*_i)^2`` over the parameters named in ``fisher``."""
    params = dict(model.named_parameters())
    missing = [n for n in fisher if n not in params]
    if missing:
        raise LabkitError(f"the Fisher names parameters this model lacks (e.g. {missing[0]!r}); "
                          "compute it on the same architecture")
    total = torch.zeros((), device=next(model.parameters()).device)
    for n, f in fisher.items():
        total = total + (f * (params[n].float() - anchor[n]) ** 2).sum()
    return 0.5 * lam * total


class EWC:
    """The EWC term for `train(extra_loss=EWC(...))`: anchors θ* = the weights at construction."""

    def __init__(self, model, fisher: dict[str, torch.Tensor], lam: float):
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise LabkitError(f"EWC lambda must be a number >= 0, got {lam!r}")
        params = dict(model.named_parameters())
        self.fisher, self.lam = fisher, float(lam)
        self.anchor = {n: params[n].detach().float().clone() for n in fisher if n in params}

    def __call__(self, model) -> torch.Tensor:
        return ewc_penalty(model, self.fisher, self.anchor, self.lam)


# ---------------------------------------------------------------------------
# Sizes per profile
# ---------------------------------------------------------------------------
@dataclass
class Sizes:
    """Everything the profile changes. The code path is the same for every profile."""
    steps: int = 200
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 2e-3             # full fine-tuning; see the lab for why a 4.5M model needs this much
    lora_lr: float = 1e-2        # LoRA wants ~5-10x the full fine-tuning rate
    lora_r: int = 16
    warmup: int = 5
    curve_every: int = 20        # probe every N steps (0: only at the end)
    eval_windows: int = 64
    eval_seq_len: int = 128
    n_facts: int | None = None   # fact-probe subset (None: all 150)
    n_sft: int = 64
    fisher_windows: int = 64
    ewc_lambda: float = 1e6      # the Fisher of a 4.5M model on mean-token loss is small: trace ~1
    curriculum_start: float = 1 / 3  # general share at step 0, decaying linearly to 0
    seed: int = 0


def sizes(profile: str | None = None, **overrides) -> Sizes:
    """The `Sizes` of a profile (default: the environment's), with overrides."""
    p = env.check_profile(profile)
    base = {
        "smoke": Sizes(steps=16, batch_size=4, seq_len=64, warmup=2, curve_every=8, eval_windows=16,
                       n_facts=30, n_sft=16, fisher_windows=8),
        "cpu": Sizes(steps=80, batch_size=8, seq_len=128, warmup=4, curve_every=16, eval_windows=48,
                     fisher_windows=48),
        "full": Sizes(steps=600, batch_size=16, seq_len=256, warmup=20, curve_every=30, eval_windows=256,
                      fisher_windows=256, n_sft=256),
    }[p]
    unknown = [k for k in overrides if k not in Sizes.__dataclass_fields__]
    if unknown:
        raise LabkitError(f"unknown size {unknown[0]!r}; known: {', '.join(Sizes.__dataclass_fields__)}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------------------
# The comparison driver
# ---------------------------------------------------------------------------
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


def setup(model=None, tokenizer=None, profile: str | None = None, device=None, **overrides) -> Lab:
    """Load the base model (``labkit.models.load()``: lab-tiny, or ``LABKIT_MODEL``), the data
    and the probes, and measure the base once."""
    from . import models

    s = sizes(profile, **overrides)
    device = torch.device(device) if device is not None else env.device()
    if model is None:
        model, tokenizer = models.load(device=device)
    elif tokenizer is None:
        raise LabkitError("setup(model=...) needs the model's tokenizer too")
    model.to(device).eval()
    probes = make_probes(tokenizer, s.eval_windows, s.eval_seq_len, s.n_facts, s.n_sft, device=device)
    domain_docs, general_docs = data.load("domain", "train"), data.load("general", "train")
    return Lab(base=model, tokenizer=tokenizer, sizes=s, probes=probes, domain_docs=domain_docs,
               general_docs=general_docs, domain_tokens=train.pack_documents(tokenizer, domain_docs),
               general_tokens=train.pack_documents(tokenizer, general_docs),
               sft_items=data.load("instructions", "train"), base_probes=evaluate(model, tokenizer, probes),
               device=device)


_NAME = re.compile(r"^(full_ft|lora|lora_adapters|curriculum|sft_chat|ewc|replay_(\d+)_(\d+)|lr_([0-9.]+(?:e-?\d+)?)|"
                   r"ewc_([0-9.]+(?:e\d+)?))$")


def parse_strategy(name: str) -> dict:
    """``"replay_1_5"`` -> ``{"kind": "replay", "ratio": Fraction(1, 5)}`` and so on."""
    m = _NAME.match(name) if isinstance(name, str) else None
    if not m:
        raise LabkitError(f"unknown strategy {name!r}; use full_ft, replay_<g>_<d> (e.g. replay_1_5), "
                          "lr_<value> (e.g. lr_3e-4), ewc, ewc_<lambda>, lora, lora_adapters, curriculum or sft_chat")
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
    if kind == "ewc":
        out["ewc_lambda"] = extra.lam
    if keep_model:
        out["model"] = model
    return out


def default_strategies(sizes_: Sizes) -> list[str]:
    """The comparison the CLI runs: full FT, three replay ratios, a 10x lower LR, EWC, LoRA,
    curriculum and chat SFT."""
    return ["full_ft", "replay_1_10", "replay_1_5", "replay_1_1", f"lr_{sizes_.lr / 10:g}", "ewc", "lora",
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


# ---------------------------------------------------------------------------
# CLI: python -m labkit forgetting
# ---------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    from . import cli

    p = cli.parser("forgetting", "domain fine-tuning vs general ability: full FT and every mitigation (lab 06)")
    p.add_argument("--strategies", nargs="+", default=None,
                   help="strategy names (default: full_ft replay_1_10 replay_1_5 replay_1_1 lr_<lr/10> ewc lora "
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
        print(f"base model: " + _fmt(lab.base_probes), flush=True)
    strategies = {}
    for n in names:
        r = run_strategy(n, lab)
        if not args.curves:
            r.pop("curve")
        strategies[n] = r
        if not args.json:
            print(f"{n:<14} " + _fmt(r) + f"  ({r['seconds']:.0f} s)", flush=True)
    if args.json:
        cli.emit_json({"base": lab.base_probes,
                       "strategies": strategies})
    return 0


def _fmt(r: dict) -> str:
    return (f"general loss {r['general_loss']:.3f}  fact recall {r['fact_recall']:.0%}  "
            f"domain loss {r['domain_loss']:.3f}  domain acc {r['domain_acc']:.0%}")

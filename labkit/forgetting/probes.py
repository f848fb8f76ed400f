"""The probes of general and domain ability that every forgetting number comes from (lab 06).

Why a module: each model of lab 06 -- the base and every fine-tuned copy -- is measured on the same
fixed token windows and cloze questions, so the probes are built once (`make_probes`) and read
by one function (`evaluate`).

* `fact_hits` / `fact_recall`: greedy exact-match recall of (prompt, answer) facts by teacher
  forcing, one batched forward pass (built and checked against decoding in lab 06 §4);
* `general_vocab_loss` / `vocab_probe`: the loss with the softmax restricted to the general
  vocabulary and the probability mass outside it -- an output-prior shift is not lost ability
  (lab 06 §4-5);
* `chat_eval_batches` (held-out chat answers, the ``sft_chat`` strategy of lab 06 §3 and lab 09)
  and `english_nll` (real English, for smollm2-135m in lab 06 §12);
* `evaluate`: every probe of one model, the ``PROBE_KEYS`` (used by every section from §3 on and
  by ``labkit/bench/forgetting.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import data, env, lora, train
from ..errors import LabkitError
from .profiles import sizes

__all__ = ["PROBE_KEYS", "Probes", "make_probes", "chat_eval_batches", "fact_hits", "fact_recall", "english_nll",
           "general_vocab_loss", "vocab_probe", "evaluate"]

PROBE_KEYS = ("general_loss", "domain_loss", "fact_recall", "domain_acc", "sft_loss", "general_loss_gv",
              "outside_mass", "english_nll")


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
    fact_suffix: str = "."              # what must follow the answer (lab-tiny: "."; a real model: "")
    english: list[str] = field(default_factory=list)  # real English paragraphs (`english_nll`)
    general_vocab: torch.Tensor | None = None  # token ids the general corpus uses (`vocab_probe`)


def make_probes(tokenizer, n_windows: int = 32, seq_len: int = 128, n_facts: int | None = None,
                n_sft: int = 64, device: str | torch.device = "cpu", facts: list | None = None,
                fact_suffix: str = ".", english: list[str] | None = None,
                general_vocab: torch.Tensor | None = None, domain_facts: bool = True) -> Probes:
    """Build the probe sets from the committed held-out files (data/corpora/*_test).

    ``n_facts`` keeps every k-th fact so a subset still covers all relations (None: all 150).
    ``facts`` replaces the fictional general facts (a real model: `known_facts`), ``english``
    adds real English paragraphs, ``general_vocab`` the general-vocabulary probe.
    """
    if n_windows < 1 or seq_len < 2:
        raise LabkitError("make_probes needs n_windows >= 1 and seq_len >= 2")
    dfacts = data.domain_probes() if domain_facts else []
    facts = data.fact_probes() if facts is None else [tuple(f[:2]) for f in facts]
    if n_facts is not None:
        if n_facts < 1:
            raise LabkitError("n_facts must be at least 1 (or None for all)")
        facts = facts[:: max(1, len(facts) // n_facts)][:n_facts]
        dfacts = dfacts[:: max(1, len(dfacts) // n_facts)][:n_facts] if dfacts else []

    def windows(name):
        tokens = train.pack_documents(tokenizer, data.load(name, "test"))
        return train.eval_batches(tokens, batch_size=16, seq_len=seq_len, max_batches=math.ceil(n_windows / 16),
                                  device=device)

    sft_items = data.load("instructions", "test")[:n_sft]
    sft = chat_eval_batches(tokenizer, sft_items, device=device) if n_sft else []
    return Probes(windows("general"), windows("domain"), facts, dfacts, sft, fact_suffix, list(english or []),
                  general_vocab)


def chat_eval_batches(tokenizer, items: list[dict], batch_size: int = 32, device: str | torch.device = "cpu") -> list[dict]:
    """Held-out chat instructions in the tokenizer's own chat template, loss on the answers only.

    The lab tokenizer goes through `labkit.sft` (its ``<|assistant|>`` markers); another model
    (SmolLM2) through its own template: the prompt turn unlabelled, then the response and the
    end-of-turn token labelled.
    """
    from .. import sft as sft_mod

    if "<|assistant|>" in tokenizer.get_vocab():
        return lora.instruction_eval_batches(tokenizer, items, batch_size=batch_size, device=device)
    rows = []
    for it in items:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": it["prompt"]}], tokenize=False,
                                               add_generation_prompt=True)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(it["response"] + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": p + a, "attention_mask": [1] * (len(p) + len(a)), "labels": [-100] * len(p) + a})
    return sft_mod.eval_batches(rows, batch_size, tokenizer.pad_token_id, device=device)


@torch.no_grad()
def fact_hits(model, tokenizer, probes: list[tuple[str, str]], batch_size: int = 64, suffix: str = ".",
              add_bos: bool = True) -> list[bool]:
    """Per (prompt, answer) probe: does the model complete it greedily with `` <answer><suffix>``?

    Exact match, computed with teacher forcing in one batched forward pass: a probe
    counts if the argmax at every position of `` <answer><suffix>`` is that token. That is
    the same test as greedy decoding (greedy reproduces the answer iff each of its
    tokens is the argmax given the correct prefix), hundreds of times faster (lab 06, section 4).
    Per-item verdicts, so two models can be compared on the same probes (`labkit.stats.mcnemar`).
    ``add_bos=False`` for a chat model whose "bos" is a chat marker (SmolLM2's ``<|im_start|>``).
    """
    if not probes:
        raise LabkitError("fact_hits needs at least one (prompt, answer) probe")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and add_bos else []
    rows = []
    for prompt, answer in probes:
        p = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = bos + tokenizer(f"{prompt} {answer}{suffix}", add_special_tokens=False)["input_ids"]
        if full[: len(p)] != p:  # the tokenizer merged across the boundary: compare on the full text only
            p = p[:-1]
        rows.append((full, len(p)))
    hits = []
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
            hits.append(bool((pred[j, n_prompt - 1: len(f) - 1] == target).all()))
    model.train(was_training)
    return hits


def fact_recall(model, tokenizer, probes: list[tuple[str, str]], batch_size: int = 64, suffix: str = ".",
                add_bos: bool = True) -> float:
    """Fraction of (prompt, answer) probes the model completes greedily with `` answer.`` (`fact_hits`)."""
    hits = fact_hits(model, tokenizer, probes, batch_size, suffix, add_bos)
    return sum(hits) / len(hits)


def english_nll(model, tokenizer, texts: list[str]) -> float:
    """Mean NLL per token (nats) on real English paragraphs (`labkit.perplexity`; exp() = perplexity)."""
    from .. import perplexity

    return perplexity.perplexity(model, tokenizer, texts)["nll"]


# ---------------------------------------------------------------------------
# Output-prior shift vs lost ability: the general-vocabulary loss
# ---------------------------------------------------------------------------
def general_vocab_loss(logits: torch.Tensor, labels: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    """Next-token loss with the softmax restricted to ``vocab`` (the token ids general text uses).

    Fine-tuning on a domain raises the probability of the domain's own words everywhere. On
    general text that alone raises the loss, even if the model still ranks the general words
    exactly as before. Renormalising over the general vocabulary removes that prior shift:
    what is left is lost ability (lab 06, section 5). ``logits`` (batch, seq, V) predict
    ``labels`` shifted by one, as Hugging Face's loss; positions labelled -100 and labels
    outside ``vocab`` are an error only if none remain. Returns the token-weighted mean.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[vocab.to(logits.device)] = True
    valid = labels != -100
    if not valid.any():
        raise LabkitError("general_vocab_loss: no labelled positions")
    if not keep[labels[valid]].all():
        raise LabkitError("general_vocab_loss: a label lies outside the vocabulary; build it from the same text")
    masked = logits.masked_fill(~keep, float("-inf"))
    logp = torch.log_softmax(masked, dim=-1)
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return nll[valid].mean()


@torch.no_grad()
def vocab_probe(model, batches: list[dict], vocab: torch.Tensor) -> dict:
    """On fixed batches: ``loss`` (full vocabulary), ``loss_gv`` (`general_vocab_loss`) and
    ``outside_mass``, the mean probability the model puts on tokens outside ``vocab``."""
    was_training = model.training
    model.eval()
    keep = None
    tot = {"loss": 0.0, "loss_gv": 0.0, "outside_mass": 0.0}
    count = 0
    for b in batches:
        logits = model(input_ids=b["input_ids"]).logits.float()
        if keep is None:
            keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            keep[vocab.to(logits.device)] = True
        labels = b["labels"]
        n = int((labels[:, 1:] != -100).sum())
        lp = torch.log_softmax(logits[:, :-1], -1)
        valid = labels[:, 1:] != -100
        tot["loss"] += float(-lp.gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)[valid].sum())
        tot["loss_gv"] += float(general_vocab_loss(logits, labels, vocab)) * n
        tot["outside_mass"] += float(lp.exp()[..., ~keep].sum(-1)[valid].sum())
        count += n
    model.train(was_training)
    return {k: v / max(count, 1) for k, v in tot.items()}


_DEFAULT_PROBES: dict = {}


def evaluate(model, tokenizer, probes: Probes | None = None) -> dict:
    """Every probe of one model: ``general_loss``, ``domain_loss`` (nats/token, held out),
    ``fact_recall`` (general FACTS, or the real facts the probes hold), ``domain_acc``
    (DOMAIN_FACTS), ``sft_loss`` (held-out chat answers), ``general_loss_gv`` and
    ``outside_mass`` (`vocab_probe`), ``english_nll`` -- each only if the probes have it.

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
        "fact_recall": fact_recall(model, tokenizer, probes.facts, suffix=probes.fact_suffix,
                                   add_bos=probes.fact_suffix == "."),
    }
    if probes.domain_facts:
        out["domain_acc"] = fact_recall(model, tokenizer, probes.domain_facts)
    if probes.sft:
        out["sft_loss"] = train.evaluate_loss(model, probes.sft)
    if probes.general_vocab is not None:
        v = vocab_probe(model, probes.general, probes.general_vocab)
        out["general_loss_gv"], out["outside_mass"] = v["loss_gv"], v["outside_mass"]
    if probes.english:
        out["english_nll"] = english_nll(model, tokenizer, probes.english)
    return out

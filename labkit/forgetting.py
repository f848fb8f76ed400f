"""Catastrophic forgetting, measured: probes, replay mixing, EWC, and a strategy driver (lab 06).

Fine-tuning a pretrained model on a narrow domain moves the weights that also
held its general ability. This module measures that and every mitigation the
usual advice names, on the lab's own model, with the one shared training loop:

* **probes** -- `evaluate(model, tokenizer)`: held-out general-corpus loss,
  recall of the 150 fictional FACTS the general corpus teaches, held-out
  domain-corpus loss, and recall of the 80 DOMAIN_FACTS (the domain "task");
  on lab-tiny also the general loss over the general vocabulary only and the
  probability mass the model puts outside it (`vocab_probe`: an output-prior
  shift is not lost ability); on a real model (smollm2-135m) real-world facts
  it knew before (`world_fact_candidates` filtered by `known_facts`) and real
  English text (`english_nll`);
* **replay** -- `mix(domain, general, ratio)`: put general documents back into
  the fine-tuning data (ratio = general : domain);
* **curriculum** -- `curriculum_batches`: the general share of each batch
  decays over training (start broad, end specialised);
* **EWC** -- `fisher_diagonal` + `EWC`: a quadratic pull towards the pretrained
  weights, weighted by how much the general data cares about each weight,
  plugged into `labkit.train.train(extra_loss=...)`; its control ``l2`` is the
  same pull with every weight equally stiff (`uniform_fisher`: the Fisher's mean
  everywhere, so the same total stiffness);
* **LoRA** -- `labkit.lora.inject_lora`: train a low-rank update, not the weights
  (``lora``: adapters on every linear layer *plus* the embedding and output rows
  of the tokens general text never uses, which no adapter on the linear layers
  can change -- peft calls this ``trainable_token_indices``; ``lora_adapters``:
  adapters only);
* **the driver** -- `setup()` then `run_strategy(name, lab)` / `compare(names, lab)`:
  the notebook, `python -m labkit forgetting` and `labkit/bench/forgetting.py`
  all run the same code.

Strategy names: ``full_ft``, ``replay_<g>_<d>`` (e.g. ``replay_1_5``),
``lr_<value>`` (e.g. ``lr_3e-4``), ``ewc`` / ``ewc_<lambda>``, ``l2`` / ``l2_<lambda>``, ``lora``, ``lora_adapters``,
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

__all__ = ["Probes", "make_probes", "fact_hits", "fact_recall", "world_fact_candidates", "known_facts", "english_nll",
           "general_vocab_loss", "vocab_probe", "uniform_fisher", "evaluate", "mix", "parse_ratio", "curriculum_batches",
           "fisher_diagonal", "ewc_penalty", "EWC", "train_token_rows", "Sizes", "sizes", "Lab", "setup", "parse_strategy",
           "run_strategy", "compare", "default_strategies", "at_matched_domain_loss", "frontier_point", "main"]

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
    from . import sft as sft_mod

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


# ---------------------------------------------------------------------------
# Real-world facts for a real model (smollm2-135m)
# ---------------------------------------------------------------------------
# Common general knowledge written for this lab (no download, no data set): capitals, languages,
# continents, currencies, the calendar, opposites, plurals, young animals, colours and the solar
# system. Each line is "subject answer"; the answer is the last word.
_WORLD = {
    "The capital of {} is": """France Paris; Germany Berlin; Italy Rome; Spain Madrid; Japan Tokyo; China Beijing;
        Russia Moscow; England London; Egypt Cairo; Greece Athens; Portugal Lisbon; Austria Vienna; Poland Warsaw;
        Ireland Dublin; Norway Oslo; Sweden Stockholm; Finland Helsinki; Denmark Copenhagen; Hungary Budapest;
        Belgium Brussels; the Netherlands Amsterdam; Switzerland Bern; Canada Ottawa; Peru Lima; Chile Santiago;
        Cuba Havana; Kenya Nairobi; Turkey Ankara; Iran Tehran; Iraq Baghdad; Syria Damascus; Thailand Bangkok;
        Vietnam Hanoi; South Korea Seoul; North Korea Pyongyang; Indonesia Jakarta; the Philippines Manila;
        Australia Canberra; New Zealand Wellington; Ukraine Kyiv; Romania Bucharest; Bulgaria Sofia; Serbia Belgrade;
        Croatia Zagreb; the Czech Republic Prague; Scotland Edinburgh; Wales Cardiff; Iceland Reykjavik;
        Afghanistan Kabul; Lebanon Beirut; Nepal Kathmandu; Bangladesh Dhaka; Venezuela Caracas; Ghana Accra;
        Qatar Doha; Estonia Tallinn; Latvia Riga; Lithuania Vilnius; Slovakia Bratislava; Albania Tirana;
        Libya Tripoli; Tunisia Tunis; Algeria Algiers; Sudan Khartoum; Uganda Kampala; Jamaica Kingston;
        Uruguay Montevideo; Ecuador Quito; Taiwan Taipei; Armenia Yerevan; Georgia Tbilisi; Belarus Minsk;
        Cyprus Nicosia; Malta Valletta; Pakistan Islamabad; Morocco Rabat; Nigeria Abuja; Senegal Dakar""",
    "The official language of {} is": """France French; Germany German; Italy Italian; Spain Spanish;
        Japan Japanese; Russia Russian; Portugal Portuguese; Brazil Portuguese; Greece Greek; Poland Polish;
        Sweden Swedish; Norway Norwegian; Finland Finnish; Denmark Danish; the Netherlands Dutch; Turkey Turkish;
        South Korea Korean; Vietnam Vietnamese; Thailand Thai; Mexico Spanish; Argentina Spanish; Hungary Hungarian;
        Ukraine Ukrainian; Egypt Arabic; Israel Hebrew; England English; Romania Romanian; Indonesia Indonesian;
        Austria German; Chile Spanish; Peru Spanish; Colombia Spanish; Cuba Spanish; Iran Persian; Pakistan Urdu;
        Bulgaria Bulgarian; Serbia Serbian; Croatia Croatian; the Czech Republic Czech; Slovakia Slovak;
        Estonia Estonian; Latvia Latvian; Lithuania Lithuanian; Iceland Icelandic; Albania Albanian;
        Georgia Georgian; Armenia Armenian; Saudi Arabia Arabic; Iraq Arabic; Morocco Arabic; Venezuela Spanish""",
    "{} is the capital of": """Paris France; Berlin Germany; Rome Italy; Madrid Spain; Tokyo Japan; Beijing China;
        Moscow Russia; London England; Cairo Egypt; Athens Greece; Lisbon Portugal; Vienna Austria; Warsaw Poland;
        Dublin Ireland; Oslo Norway; Stockholm Sweden; Helsinki Finland; Copenhagen Denmark; Budapest Hungary;
        Brussels Belgium; Ottawa Canada; Lima Peru; Santiago Chile; Havana Cuba; Nairobi Kenya;
        Ankara Turkey; Tehran Iran; Baghdad Iraq; Damascus Syria; Bangkok Thailand; Hanoi Vietnam; 
        Jakarta Indonesia; Canberra Australia; Kyiv Ukraine; Bucharest Romania;
        Sofia Bulgaria; Belgrade Serbia; Zagreb Croatia; Edinburgh Scotland; Cardiff Wales;
        Reykjavik Iceland; Kabul Afghanistan; Beirut Lebanon; Kathmandu Nepal; Dhaka Bangladesh; Caracas Venezuela;
        Accra Ghana; Doha Qatar; Riga Latvia; Vilnius Lithuania; Tirana Albania; Tripoli Libya; Algiers Algeria;
        Khartoum Sudan; Kampala Uganda; Montevideo Uruguay; Quito Ecuador; Taipei Taiwan; Yerevan Armenia;
        Tbilisi Georgia; Minsk Belarus; Islamabad Pakistan; Rabat Morocco; Abuja Nigeria; Dakar Senegal""",
    "{} is a country in": """France Europe; Germany Europe; Kenya Africa; Nigeria Africa; Egypt Africa; Japan Asia;
        China Asia; India Asia; Italy Europe; Ghana Africa; Thailand Asia; Spain Europe; Vietnam Asia;
        Ethiopia Africa; Poland Europe; Mongolia Asia; Morocco Africa; Norway Europe""",
    "The currency of {} is the": """Japan yen; the United States dollar; India rupee; Russia ruble; China yuan;
        the United Kingdom pound; Mexico peso; South Korea won; Switzerland franc; Turkey lira""",
    "The day after {} is": """Monday Tuesday; Tuesday Wednesday; Wednesday Thursday; Thursday Friday; Friday Saturday;
        Saturday Sunday; Sunday Monday""",
    "The month after {} is": """January February; February March; March April; April May; May June; June July;
        July August; August September; September October; October November; November December; December January""",
    "The opposite of {} is": """hot cold; up down; day night; fast slow; wet dry; early late; full empty; left right;
        rich poor; happy sad; loud quiet; inside outside; above below; before after; first last; strong weak;
        thick thin; easy hard; clean dirty; north south; east west; summer winter; big small; old young;
        light dark; tall short; open closed; good bad; black white; love hate""",
    "The plural of {} is": """mouse mice; child children; man men; woman women; tooth teeth; foot feet; goose geese;
        person people; knife knives; leaf leaves; box boxes; city cities; baby babies; wolf wolves; ox oxen""",
    "A baby {} is called a": """dog puppy; cat kitten; cow calf; sheep lamb; horse foal; goat kid; frog tadpole;
        kangaroo joey; duck duckling; bear cub; swan cygnet; pig piglet; goose gosling""",
    "The colour of {} is": """grass green; snow white; the sky blue; coal black; a banana yellow; blood red;
        an orange orange; a lemon yellow; milk white; a tomato red""",
    "{} is the": """Mercury smallest; Jupiter largest""",
    "The planet closest to the Sun is": """- Mercury""",
    "The largest planet in the solar system is": """- Jupiter""",
    "The Red Planet is": """- Mars""",
    "The chemical symbol for {} is": """gold Au; silver Ag; iron Fe; oxygen O; hydrogen H; carbon C; sodium Na;
        helium He""",
}


def world_fact_candidates() -> list[tuple[str, str, str]]:
    """(prompt, answer, kind) candidates of real-world knowledge, in a fixed order (>= 150).

    Not every one is something a 135M model knows: `known_facts` keeps those a given model
    completes correctly *before* fine-tuning, so that a later miss is a fact it forgot (lab 06,
    section 12). Written for this lab from common knowledge; none of them appears in the lab's
    general corpus, which is about fictional places (so replay of that corpus cannot rehearse them).
    """
    out = []
    for template, rows in _WORLD.items():
        kind = template.split("{}")[0].strip().lower() or template.split("{}")[-1].strip().lower()
        for row in " ".join(rows.split()).split(";"):
            *subject, answer = row.split()
            subject = " ".join(subject)
            prompt = template if subject == "-" else template.format(subject)
            prompt = prompt[0].upper() + prompt[1:]
            out.append((prompt, answer, kind.replace(" {}", "")))
    return out


def known_facts(model, tokenizer, candidates: list[tuple] | None = None, suffix: str = "",
                add_bos: bool = False) -> list[tuple[str, str]]:
    """The (prompt, answer) candidates ``model`` completes correctly now (greedy, `fact_hits`).

    Measure forgetting on these: each was answered correctly before fine-tuning, so recall starts
    at 100% by construction and every later miss is a fact the model lost.
    """
    candidates = world_fact_candidates() if candidates is None else candidates
    pairs = [tuple(c[:2]) for c in candidates]
    hits = fact_hits(model, tokenizer, pairs, suffix=suffix, add_bos=add_bos)
    return [p for p, h in zip(pairs, hits) if h]


def english_nll(model, tokenizer, texts: list[str]) -> float:
    """Mean NLL per token (nats) on real English paragraphs (`labkit.perplexity`; exp() = perplexity)."""
    from . import perplexity

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
def fisher_diagonal(model, batches, names: list[str] | None = None, per_token: bool = False) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: ``F_i = mean over batches of (dL/dθ_i)²`` (lab 06, section 4).

    Each batch contributes its squared gradient, so pass batches of ONE sequence for
    the per-sequence Fisher (a batch's mean gradient squared is smaller). "Empirical":
    the labels are the data's, not samples from the model. Returns fp32 tensors keyed
    by parameter name (``names``: default every parameter that requires grad).

    Scale: L is the *mean* loss over the sequence's T tokens, so if token gradients were
    uncorrelated, F would be the per-token Fisher divided by T. ``per_token=True`` measures
    the per-token Fisher itself (one backward pass per predicted token of ``input_ids``: slow,
    for a few sequences): the Fisher of the loss EWC's derivation assumes, where λ reads as
    "general tokens' weight relative to domain tokens" (section 8).
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
    count = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        if not per_token:
            model(**batch).loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float() ** 2
            count += 1
            continue
        ids = batch["input_ids"]
        logits = model(input_ids=ids).logits[:, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                   reduction="none")
        for t in range(losses.numel()):
            grads = torch.autograd.grad(losses[t], list(params.values()), retain_graph=t + 1 < losses.numel(),
                                        allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    fisher[n] += g.detach().float() ** 2
        count += losses.numel()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / count for n, f in fisher.items()}


def uniform_fisher(fisher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every entry replaced by the Fisher's overall mean: the same total stiffness (trace),
    spread evenly. EWC with it is plain L2 towards θ* -- the control that shows what the
    Fisher's *weighting* adds (lab 06, section 8)."""
    total = sum(float(f.double().sum()) for f in fisher.values())
    n = sum(f.numel() for f in fisher.values())
    if n == 0:
        raise LabkitError("uniform_fisher needs a non-empty Fisher")
    return {k: torch.full_like(f, total / n) for k, f in fisher.items()}


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
    ewc_lambda: float = 1e6      # on the per-sequence Fisher of the mean-token loss; lab 06 section 8 on its scale
    curriculum_start: float = 1 / 3  # general share at step 0, decaying linearly to 0
    seed: int = 0


def sizes(profile: str | None = None, **overrides) -> Sizes:
    """The `Sizes` of a profile (default: the environment's), with overrides."""
    p = env.check_profile(profile)
    base = {
        "smoke": Sizes(steps=16, batch_size=4, seq_len=64, warmup=2, curve_every=8, eval_windows=16,
                       n_facts=30, n_sft=16, fisher_windows=8),
        "cpu": Sizes(steps=48, batch_size=8, seq_len=128, warmup=4, curve_every=8, eval_windows=48,
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


def setup(model=None, tokenizer=None, profile: str | None = None, device=None, *, facts: list | None = None,
          fact_suffix: str = ".", english: list[str] | None = None, vocab_probe: bool = True, domain_facts: bool = True,
          **overrides) -> Lab:
    """Load the base model (``labkit.models.load()``: lab-tiny, or ``LABKIT_MODEL``), the data
    and the probes, and measure the base once.

    A real model (smollm2-135m) passes ``facts=known_facts(...)``, ``fact_suffix=""``,
    ``english=perplexity.real_english()`` and ``vocab_probe=False`` (its vocabulary is not the
    lab corpus's). ``vocab_probe``: add `general_vocab_loss` / outside mass to the probes.
    """
    from . import models

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


# ---------------------------------------------------------------------------
# CLI: python -m labkit forgetting
# ---------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    from . import cli

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

"""Preference tuning from scratch: preference pairs, a reward model, the DPO loss (lab 14).

SFT shows the model *one* good answer per prompt. Preference tuning shows it two -- a chosen and
a rejected one -- and teaches it which is better. Two routes, both built here:

* **RLHF's first half, the reward model** (lab 14 §2). A scalar head on the base model scores a
  whole sequence; it is trained on pairs with the Bradley-Terry loss
  ``-log σ(r_chosen - r_rejected)`` (optionally minus a margin), so that the chosen answer
  scores higher. PPO then maximises that score (lab 14 §4 shows the data it needs).
* **DPO** (lab 14 §3; Rafailov et al. 2023) skips the reward model: the policy's own
  log-probability ratio to a frozen reference *is* the reward, ``β·log π(y|x)/π_ref(y|x)``, and
  the same pairwise loss on those implicit rewards trains the policy directly. IPO (Azar et al.
  2023) replaces the log-sigmoid with a squared distance to ``1/(2β)``; hinge (SLiC) with
  ``max(0, 1 - β·Δ)``.

Each piece does what TRL 1.16 does, so a learner can swap one for the other (tests/test_preference.py
builds real trainers on a tiny Llama and compares loss and gradients on one collated batch):

===============================  ==========================================================
labkit                           TRL / transformers
===============================  ==========================================================
``preference_pairs(n)``          rows of a preference dataset (``{prompt, chosen, rejected}``)
``formats(pair)``                the SFT, RM/DPO and PPO records TRL's trainers take (§1)
``RewardModel(causal_lm)``       ``AutoModelForSequenceClassification(num_labels=1)``
``pairwise_loss(c, r)``          ``RewardTrainer.compute_loss`` (``margin``, ``center_rewards_coefficient``)
``sequence_logps(m, ids, lab)``  the token-summed log-probs in ``DPOTrainer._compute_loss``
``dpo_loss(...)``                the ``sigmoid`` / ``ipo`` / ``hinge`` losses there (per pair)
``implicit_rewards(p, r)``       the ``rewards/chosen`` and ``rewards/rejected`` it logs
===============================  ==========================================================

The lab's experiments share four small helpers: ``pair_batch`` (chosen rows then rejected rows,
one padded batch, TRL's order), ``addition_reward`` (a verifiable 0/1 reward for the lab's sums:
the on-policy step of §13), ``unknown_pairs`` (honesty pairs: a fact question about a made-up name,
chosen ``IDK`` = "I don't know.", rejected an invented fact; §14) and ``group_advantages`` (GRPO's
group-normalised advantage, as TRL's ``GRPOTrainer`` computes it with ``scale_rewards="group"``).

**The pairs (§1)** come from the lab's own data (`labkit.data`), so the base and SFT models of
the earlier labs have seen these prompts' kind and every answer can be checked. Chosen is always
the right answer; rejected is one of three typical failures:

* ``"wrong_fact"``: a fact question answered with another entity's attribute of the same
  relation ("The capital of Veloria is Oburn.");
* ``"off_by_one"``: an addition answered one too high or too low ("17 plus 25 is 43.");
* ``"no_stop"``: the right answer that does not stop -- it repeats until a length limit cuts it
  mid-sentence, the degenerate loop of lab 10. (The chat template still closes the turn with
  ``<|end|>``, so what the pair teaches is *stop after the answer*.)

Prompts belong to the split `labkit.data.split_of` gives them, as in `labkit.data.instructions`
(the same question wordings), so ``split="test"`` prompts were never trained on.

**Formats.** `formats` returns TRL's *conversational* records (lists of ``{"role", "content"}``
messages; the tokenizer's chat template renders them): SFT = prompt-completion
(``{"prompt": [user], "completion": [assistant]}``, loss on the completion only), RM and DPO =
preference with an explicit prompt (``{"prompt", "chosen", "rejected"}``), PPO = prompt-only
(``{"prompt": [user]}``: the policy writes the completion and the reward model scores it; TRL 1.x's
online trainers -- GRPO, RLOO -- take the same record, PPOTrainer having left TRL's core).

**Decisions, and why:**

* ``sequence_logps`` *sums* the answer tokens' log-probs: DPO's ratio is of whole-sequence
  probabilities. Tokens whose label is ``-100`` (prompt, padding) count zero. The logits are
  upcast to float32 before the log-softmax, as TRL's chunked kernel accumulates in float32.
* ``dpo_loss`` returns per-pair losses (TRL's loss is their mean) and the rewards detached: they
  are for logging, not for the gradient.
* IPO. TRL 1.x divides each sequence's *token-summed* log-ratio by its number of completion
  tokens before the squared loss (length-normalised IPO; the IPO authors confirmed it is what
  their paper's results used). Pass ``chosen_tokens`` / ``rejected_tokens`` (completion tokens per
  sequence, e.g. ``(labels != -100).sum(-1)``) to get exactly that; without them IPO is applied to
  the log-probs as given, as in the IPO paper's equation 17 and TRL 0.x's ``dpo_loss``.
* ``RewardModel`` shares the causal LM's decoder (training it changes that model: copy it first
  to keep the LM) and reads the score at the *rightmost token that is not padding*, found from
  ``input_ids`` exactly as transformers does it -- so it works for left and right padding, and
  its ``state_dict`` loads into ``LlamaForSequenceClassification`` (same keys, same scores).
"""
from __future__ import annotations

import math
import random
import re

import torch
import torch.nn.functional as F
from torch import nn

from . import data
from .errors import LabkitError

__all__ = ["IDK", "KINDS", "LOSS_TYPES", "RewardModel", "addition_reward", "dpo_loss", "formats", "group_advantages",
           "implicit_rewards", "pair_batch", "pairwise_loss", "preference_pairs", "sequence_logps", "unknown_pairs"]

KINDS = ("wrong_fact", "off_by_one", "no_stop")
LOSS_TYPES = ("sigmoid", "ipo", "hinge")
IGNORE = -100


# ---------------------------------------------------------------------------
# checks: one line that says what to pass
# ---------------------------------------------------------------------------
def _positive_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise LabkitError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _float_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        what = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise LabkitError(f"{name} must be a float tensor (one value per pair), got {what}")
    return x


def _same_shape(tensors: dict) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise LabkitError("these must have the same shape (one value per pair): "
                          + ", ".join(f"{n} {s}" for n, s in shapes.items()))


def _id_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point() or x.dtype == torch.bool:
        shape = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise LabkitError(f"{name} must be an integer tensor of shape (batch, length), got {shape}")
    return x


# ---------------------------------------------------------------------------
# §1 preference pairs from the lab data, and the records TRL takes
# ---------------------------------------------------------------------------
_ADD_ANSWER = re.compile(r"(\d+) plus (\d+) is (\d+)\.")


def _fact_qa(rng: random.Random):
    entity, relation, attribute = rng.choice(data.FACTS)
    question = rng.choice(data.FACT_QUESTIONS[relation]).format(e=entity)
    return question, (entity, relation, attribute)


def _wrong_fact(rng: random.Random) -> dict:
    question, (entity, relation, attribute) = _fact_qa(rng)
    # sorted: a set's order changes between Python runs (string hashing), the pairs must not
    others = sorted({a for _, r, a in data.FACTS if r == relation} - {attribute})
    wrong = rng.choice(others)
    return {"prompt": question, "chosen": data.fact_sentence(entity, relation, attribute),
            "rejected": data.fact_sentence(entity, relation, wrong), "kind": "wrong_fact"}


def _sum_qa(rng: random.Random):
    question, answer = data.task_add(rng)   # "What is 17 plus 25?", "17 plus 25 is 42."
    x, y, total = (int(g) for g in _ADD_ANSWER.fullmatch(answer).groups())
    return question, answer, x, y, total


def _off_by_one(rng: random.Random) -> dict:
    question, answer, x, y, total = _sum_qa(rng)
    wrong = total + (1 if total == 0 else rng.choice((-1, 1)))
    return {"prompt": question, "chosen": answer, "rejected": f"{x} plus {y} is {wrong}.", "kind": "off_by_one"}


def _no_stop(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        question, fact = _fact_qa(rng)
        answer = data.fact_sentence(*fact)
    else:
        question, answer, *_ = _sum_qa(rng)
    words = answer.split()
    loop = [answer] * rng.randint(2, 4) + [" ".join(words[:rng.randint(1, len(words) - 1)])]
    return {"prompt": question, "chosen": answer, "rejected": " ".join(loop), "kind": "no_stop"}


_MAKERS = {"wrong_fact": _wrong_fact, "off_by_one": _off_by_one, "no_stop": _no_stop}


def preference_pairs(n: int, seed: int = 0, kinds=KINDS, *, split: str = "train") -> list[dict]:
    """``n`` pairs ``{"prompt", "chosen", "rejected", "kind"}``, the same on every machine for a seed.

    ``kinds`` (a subset of `KINDS`, or one kind) take turns, so each makes up an equal share (the
    first ones get the remainder). Prompts belong to ``split`` by `labkit.data.split_of`; no pair
    repeats (the same prompt may come back with another rejected answer)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise LabkitError(f"n must be a non-negative integer, got {n!r}")
    if split not in data.SPLITS:
        raise LabkitError(f"split must be one of {data.SPLITS}, got {split!r}")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise LabkitError(f"kinds must be a non-empty selection of {KINDS}, got {unknown or list(kinds)}")
    rng = random.Random(f"preference:{seed}")   # str seeds are hashed with sha512: stable everywhere
    out, seen, misses = [], set(), 0
    while len(out) < n:
        pair = _MAKERS[kinds[len(out) % len(kinds)]](rng)
        key = (pair["prompt"], pair["chosen"], pair["rejected"])
        if data.split_of(pair["prompt"]) != split or key in seen:
            misses += 1              # 5,000 draws in a row without a new pair: that kind is used up
            if misses > 5000:
                raise LabkitError(f"could only make {len(out)} distinct {split} pairs of kinds {list(kinds)}; "
                                  "ask for fewer")
            continue
        seen.add(key)
        out.append(pair)
        misses = 0
    return out


def formats(pair: dict) -> dict[str, dict]:
    """The same pair as TRL's trainers want it, side by side, in TRL's *conversational* format:

    * ``"sft"``: prompt-completion, ``{"prompt": [user], "completion": [assistant: chosen]}``
      (`trl.SFTTrainer`; the loss trains the completion only);
    * ``"rm"``: preference with an explicit prompt, ``{"prompt": [user], "chosen": [assistant],
      "rejected": [assistant]}`` (`trl.RewardTrainer`, and `trl.DPOTrainer` takes the same record);
    * ``"ppo"``: prompt-only, ``{"prompt": [user]}`` -- the policy writes the answer online.
    """
    if not isinstance(pair, dict):
        raise LabkitError(f"pair must be a dict with 'prompt', 'chosen' and 'rejected', got {type(pair).__name__}")
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(pair.get(key), str):
            got = type(pair.get(key)).__name__
            raise LabkitError(f"pair[{key!r}] must be a string (see preference_pairs), got {got}")
    user = [{"role": "user", "content": pair["prompt"]}]
    chosen = [{"role": "assistant", "content": pair["chosen"]}]
    rejected = [{"role": "assistant", "content": pair["rejected"]}]
    return {"sft": {"prompt": user, "completion": chosen},
            "rm": {"prompt": user, "chosen": chosen, "rejected": rejected},
            "ppo": {"prompt": user}}


# ---------------------------------------------------------------------------
# §2 the reward model and its loss
# ---------------------------------------------------------------------------
class RewardModel(nn.Module):
    """A causal LM's decoder with a scalar head: one reward per sequence.

    ``forward(input_ids, attention_mask=None)`` returns rewards of shape ``(batch,)``: the head
    (``score``, a bias-free ``Linear(hidden, 1)``) applied to the last hidden state of the
    rightmost token that is not ``pad_token_id`` (default: the LM's ``config.pad_token_id``).
    Submodules are named ``model`` and ``score`` as in transformers' ``*ForSequenceClassification``,
    so the two exchange state dicts."""

    def __init__(self, causal_lm, pad_token_id: int | None = None):
        super().__init__()
        if not hasattr(causal_lm, "get_decoder") or not hasattr(causal_lm, "config"):
            raise LabkitError(f"causal_lm must be a transformers causal LM (e.g. LlamaForCausalLM), "
                              f"got {type(causal_lm).__name__}")
        self.config = causal_lm.config.get_text_config()
        self.model = causal_lm.get_decoder()      # shared with causal_lm, not copied
        like = self.model.get_input_embeddings().weight
        self.score = nn.Linear(self.config.hidden_size, 1, bias=False, device=like.device, dtype=like.dtype)
        nn.init.normal_(self.score.weight, std=self.config.initializer_range)   # transformers' init of the head
        self.pad_token_id = self.config.pad_token_id if pad_token_id is None else pad_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        input_ids = _id_tensor(input_ids, "input_ids")
        batch, length = input_ids.shape
        if self.pad_token_id is None and batch != 1:
            raise LabkitError("a batch of more than one sequence needs pad_token_id, to find where each one ends")
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        scores = self.score(hidden).squeeze(-1)   # every position, then pick: the same bits as transformers
        if self.pad_token_id is None:
            last = torch.full((batch,), length - 1, device=input_ids.device)
        else:
            positions = torch.arange(length, device=input_ids.device, dtype=torch.int32)
            last = (positions * (input_ids != self.pad_token_id).to(torch.int32)).argmax(-1)
        return scores[torch.arange(batch, device=input_ids.device), last]


def pairwise_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin=None, *,
                  center_rewards_coefficient: float | None = None) -> torch.Tensor:
    """Bradley-Terry: mean of ``-log σ(r_chosen - r_rejected - margin)`` over the pairs.

    ``margin`` (a number or one per pair; Llama 2's reward model uses how much better the chosen
    one was rated) asks for a gap of at least that much. ``center_rewards_coefficient`` adds
    ``c · mean((r_chosen + r_rejected)²)`` to keep rewards near zero (Eisenstein et al. 2023), as
    ``RewardConfig.center_rewards_coefficient`` does."""
    chosen_rewards = _float_tensor(chosen_rewards, "chosen_rewards")
    rejected_rewards = _float_tensor(rejected_rewards, "rejected_rewards")
    _same_shape({"chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards})
    gap = chosen_rewards - rejected_rewards
    if margin is not None:
        gap = gap - margin
    loss = -F.logsigmoid(gap).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((chosen_rewards + rejected_rewards) ** 2)
    return loss


# ---------------------------------------------------------------------------
# §3 DPO
# ---------------------------------------------------------------------------
def sequence_logps(model, input_ids: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over each row of ``log p(labels[t] | input_ids[:t])`` where the label is not -100: shape ``(batch,)``.

    The usual causal shift: the logits at position t predict token t+1, so ``labels`` is aligned
    with ``input_ids`` (``labels = input_ids`` with the prompt and padding set to -100)."""
    input_ids, labels = _id_tensor(input_ids, "input_ids"), _id_tensor(labels, "labels")
    if labels.shape != input_ids.shape:
        raise LabkitError(f"labels {tuple(labels.shape)} must have the shape of input_ids {tuple(input_ids.shape)}")
    kwargs = {"use_cache": False} if hasattr(model, "config") else {}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    out = model(input_ids=input_ids, **kwargs)
    logits = (out.logits if hasattr(out, "logits") else out)[:, :-1].float()
    targets = labels[:, 1:]
    trained = targets != IGNORE
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(trained, token_logps, 0.0).sum(-1)


def _tokens(count, name: str, like: torch.Tensor) -> torch.Tensor:
    count = torch.as_tensor(count, device=like.device)
    if count.shape != like.shape or count.is_floating_point() or count.dtype == torch.bool:
        raise LabkitError(f"{name} must be an integer count per pair of shape {tuple(like.shape)}, "
                          f"e.g. (labels != -100).sum(-1); got {count.dtype} {tuple(count.shape)}")
    return count


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1,
             loss_type: str = "sigmoid", *, chosen_tokens=None, rejected_tokens=None):
    """DPO and two relatives on sequence log-probs; returns ``(losses, chosen_rewards, rejected_rewards)``.

    With the log-ratios ``ρ_c = policy_chosen - ref_chosen``, ``ρ_r = policy_rejected - ref_rejected``
    and ``Δ = ρ_c - ρ_r``, per pair:

    * ``"sigmoid"`` (DPO): ``-log σ(β Δ)``;
    * ``"hinge"`` (SLiC): ``max(0, 1 - β Δ)``;
    * ``"ipo"``: ``(Δ - 1/(2β))²``. With ``chosen_tokens`` and ``rejected_tokens`` (completion
      tokens per sequence) each log-ratio is first divided by its count (at least 1):
      ``(ρ_c/n_c - ρ_r/n_r - 1/(2β))²``, TRL 1.x's length-normalised IPO. Without them, IPO on
      the log-probs as given (the IPO paper, TRL 0.x). The counts are used by IPO only.

    The rewards are ``β ρ_c`` and ``β ρ_r``, detached: what DPOTrainer logs as ``rewards/*``.
    TRL's loss is ``losses.mean()``."""
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    logps = dict(zip(names, (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)))
    for name, x in logps.items():
        _float_tensor(x, name)
    _same_shape(logps)
    beta = _positive_number(beta, "beta")
    if loss_type not in LOSS_TYPES:
        raise LabkitError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if (chosen_tokens is None) != (rejected_tokens is None):
        raise LabkitError("pass both chosen_tokens and rejected_tokens (length-normalised IPO) or neither")

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * delta)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    else:  # ipo
        if chosen_tokens is not None:
            n_chosen = _tokens(chosen_tokens, "chosen_tokens", chosen_logratios)
            n_rejected = _tokens(rejected_tokens, "rejected_tokens", rejected_logratios)
            delta = chosen_logratios / n_chosen.clamp(min=1.0) - rejected_logratios / n_rejected.clamp(min=1.0)
        losses = (delta - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO's implicit reward of each sequence, ``β (log π(y|x) - log π_ref(y|x))``, detached.

    The reward model DPO trains without building one: rank answers by it, or compare chosen with
    rejected (the reward accuracy TRL logs is the share of pairs where chosen's is higher)."""
    policy_logps, ref_logps = _float_tensor(policy_logps, "policy_logps"), _float_tensor(ref_logps, "ref_logps")
    _same_shape({"policy_logps": policy_logps, "ref_logps": ref_logps})
    return _positive_number(beta, "beta") * (policy_logps - ref_logps).detach()


# ---------------------------------------------------------------------------
# helpers the lab's experiments share: batches, checkable answers, honesty pairs, GRPO advantages
# ---------------------------------------------------------------------------
def pair_batch(tokenizer, pairs: list[dict], device="cpu") -> dict:
    """One right-padded batch of the pairs' chosen sequences, then their rejected ones (TRL's order).

    ``{"input_ids", "attention_mask", "labels"}``: the chat-templated prompt and answer, labels
    ``-100`` except on the answer (and its ``<|end|>``), as `labkit.sft.format_example` makes them.
    Split per-sequence values with ``.chunk(2)``: chosen first."""
    from . import sft

    if not pairs:
        raise LabkitError("pair_batch needs at least one pair")
    rows = [sft.format_example({"prompt": p["prompt"], "response": p[side]}, tokenizer)
            for side in ("chosen", "rejected") for p in pairs]
    return sft.collate(rows, tokenizer.pad_token_id, device)


def addition_reward(prompt: str, completion: str) -> float:
    """A verifiable reward: 1.0 when ``completion`` is exactly the lab's sentence for the prompt's sum.

    The prompt is one of `labkit.data`'s addition questions ("What is 17 plus 25?", "Add 3 and 4.");
    the answer must be ``"17 plus 25 is 42."`` (the first two numbers of the prompt, in order)."""
    nums = [int(x) for x in re.findall(r"\d+", prompt)]
    if len(nums) < 2:
        raise LabkitError(f"not an addition question (needs two numbers): {prompt!r}")
    x, y = nums[:2]
    return float(completion.strip() == f"{x} plus {y} is {x + y}.")


IDK = "I don't know."
_SYLLABLES = ("ka", "lo", "mir", "ven", "tor", "sa", "bel", "dun", "ri", "gal", "no", "xe", "qua", "zim", "pel", "or")


def _made_up_name(rng: random.Random, words: int) -> str:
    known = {e for e, _, _ in data.FACTS}
    while True:
        name = " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
                        for _ in range(words))
        if not any(k in name or name in k for k in known):   # nor part of a real name, nor containing one
            return name


def unknown_pairs(n: int, seed: int = 0, *, split: str = "train") -> list[dict]:
    """``n`` honesty pairs about entities that are in none of the lab's data (kind ``"unknown"``).

    The prompt asks a fact question of `labkit.data`'s wordings about a made-up name (one the
    corpora never mention); chosen is `IDK` ("I don't know."), rejected a confident answer with a
    real attribute of that relation -- a hallucination. Prompts split by `labkit.data.split_of`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise LabkitError(f"n must be a non-negative integer, got {n!r}")
    if split not in data.SPLITS:
        raise LabkitError(f"split must be one of {data.SPLITS}, got {split!r}")
    rng = random.Random(f"unknown:{seed}")
    out, seen = [], set()
    while len(out) < n:
        entity, relation, _ = rng.choice(data.FACTS)
        fake = _made_up_name(rng, len(entity.split()))
        prompt = rng.choice(data.FACT_QUESTIONS[relation]).format(e=fake)
        if data.split_of(prompt) != split or prompt in seen:
            continue
        seen.add(prompt)
        attribute = rng.choice(sorted({a for _, r, a in data.FACTS if r == relation}))
        out.append({"prompt": prompt, "chosen": IDK, "rejected": data.fact_sentence(fake, relation, attribute),
                    "kind": "unknown"})
    return out


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage (Shao et al. 2024): each reward minus its group's mean, over the group's std + eps.

    ``rewards`` is flat, ``group_size`` completions of one prompt after another; the std is the
    unbiased one (Bessel), as TRL's ``GRPOTrainer`` (``scale_rewards="group"``) computes it. A
    group whose rewards are all equal gets advantage 0: nothing to learn from it."""
    rewards = _float_tensor(rewards, "rewards")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise LabkitError(f"group_size must be an integer >= 2, got {group_size!r}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise LabkitError(f"rewards must be flat with a multiple of group_size={group_size} values, "
                          f"got shape {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)

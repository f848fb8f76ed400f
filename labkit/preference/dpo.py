"""DPO without a reward model: sequence log-probs, three pairwise losses, implicit rewards (built in lab 14 §5).

The policy's log-probability ratio to a frozen reference is the reward; `dpo_loss` applies the
sigmoid (DPO), hinge (SLiC) or IPO loss to it exactly as TRL's ``DPOTrainer`` does, and
`pair_batch` collates pairs in TRL's order (chosen rows, then rejected) for the experiments of §8-11.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import LabkitError
from .checks import _float_tensor, _id_tensor, _positive_number, _same_shape

__all__ = ["LOSS_TYPES", "IGNORE", "sequence_logps", "dpo_loss", "implicit_rewards", "pair_batch", "_tokens"]

LOSS_TYPES = ("sigmoid", "ipo", "hinge")
IGNORE = -100


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


def pair_batch(tokenizer, pairs: list[dict], device="cpu") -> dict:
    """One right-padded batch of the pairs' chosen sequences, then their rejected ones (TRL's order).

    ``{"input_ids", "attention_mask", "labels"}``: the chat-templated prompt and answer, labels
    ``-100`` except on the answer (and its ``<|end|>``), as `labkit.sft.format_example` makes them.
    Split per-sequence values with ``.chunk(2)``: chosen first."""
    from .. import sft

    if not pairs:
        raise LabkitError("pair_batch needs at least one pair")
    rows = [sft.format_example({"prompt": p["prompt"], "response": p[side]}, tokenizer)
            for side in ("chosen", "rejected") for p in pairs]
    return sft.collate(rows, tokenizer.pad_token_id, device)

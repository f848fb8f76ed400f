"""The logits processors: `temperature`, `top_k`, `top_p`, `repetition_penalty`, `no_repeat_ngram`.

Why a module of its own: each takes ``(batch, vocab)`` logits and returns new logits exactly as the
matching ``transformers`` processor does (same ties, same ``-inf`` handling), so a learner can swap
one for the other; `generate` chains them in transformers' order.

Built in lab 10 §3 ("the five processors") and checked in lab 10 §4 against ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``, ``RepetitionPenaltyLogitsProcessor`` and
``NoRepeatNGramLogitsProcessor``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import LabkitError
from .checks import _check_ids, _check_logits, _positive_int, _positive_number

__all__ = ["temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram"]


def temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    """``logits / t``: t < 1 sharpens the distribution, t > 1 flattens it (t -> 0 is greedy)."""
    _check_logits(logits)
    t = _positive_number(t, "temperature", " (for greedy decoding use do_sample=False)" if t == 0 else "")
    return logits / t


def top_k(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the k highest logits of each row (all tokens tied with the k-th too), set the rest to -inf."""
    _check_logits(logits)
    k = min(max(_positive_int(k, "top_k"), _positive_int(min_tokens_to_keep, "min_tokens_to_keep")),
            logits.shape[-1])
    kth = torch.topk(logits, k).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def top_p(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probability reaches ``p``; the rest get -inf.

    Sorted ascending, a token is dropped when the probability of it and everything less likely
    is at most ``1 - p``; the ``min_tokens_to_keep`` most likely tokens always stay."""
    _check_logits(logits)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise LabkitError(f"top_p must be in (0, 1], got {p!r}")
    keep_last = _positive_int(min_tokens_to_keep, "min_tokens_to_keep")
    ascending, order = torch.sort(logits, descending=False)
    tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = tail_mass <= (1 - p)
    drop_sorted[..., -keep_last:] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): every token already in ``input_ids`` (prompt included)
    has its logit divided by ``penalty`` if positive, multiplied if negative -- once, however often
    it occurred. penalty > 1 discourages repeats, < 1 encourages them."""
    _check_logits(logits)
    _check_ids(input_ids, logits)
    penalty = _positive_number(penalty, "repetition_penalty")
    vocab = logits.shape[-1]
    ids = input_ids.clamp(max=vocab)                 # ids past the LM head (a larger embedding) are ignored
    padded = F.pad(logits, (0, 1))
    seen = padded.gather(1, ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return padded.scatter(1, ids, seen)[..., :vocab]


def no_repeat_ngram(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid (-inf) every token that would complete an n-gram already present in ``input_ids``.

    The last ``n - 1`` tokens are the prefix of the n-gram the next token would complete; every
    earlier position where the same ``n - 1`` tokens occur bans the token that followed them."""
    _check_logits(logits)
    _check_ids(input_ids, logits)
    n = _positive_int(n, "no_repeat_ngram_size")
    length, vocab = input_ids.shape[1], logits.shape[-1]
    banned = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    if length < n:
        return logits.clone()
    for row, ids in enumerate(input_ids.tolist()):
        prefix = ids[length - n + 1:]
        for start in range(length - n + 1):
            if ids[start:start + n - 1] == prefix and ids[start + n - 1] < vocab:
                banned[row, ids[start + n - 1]] = True
    return logits.masked_fill(banned, -math.inf)

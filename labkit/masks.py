"""Attention masks of the three transformer families, as boolean matrices (True = may attend).

Built in lab 16 ("Architectures and emergence"), section "three masks". Row i is the query at
position i, column j the key at position j:

* **causal decoder** (GPT, Llama): each token sees itself and the past -- lower triangular;
  the only mask that lets a generated token's keys and values be cached and reused unchanged;
* **prefix decoder / prefix LM** (UniLM, GLM's blank infilling, T5's "prefix LM" variant):
  the first ``prefix_len`` tokens (the prompt) see each other in both directions, the rest is
  causal; the prefix's keys are still computed once, but a new turn appended to the prompt
  changes what earlier prefix tokens see, so a multi-turn cache cannot simply be extended;
* **encoder-decoder** (T5, BART): a bidirectional encoder over the source, a causal decoder over
  the target, and cross-attention from every target token to every source token;
* **padding**: a key that is padding is never attended to (combine with any of the above).

`causal_mask` equals the boolean mask transformers builds for sdpa (`masking_utils.sdpa_mask`).
Two helpers of the same lab: `next_token_loss` (the training objective with a loss mask, equal to
a transformers model's own ``loss`` when the mask keeps every real token) and
`recomputed_tokens` (how many token positions a multi-turn chat pushes through the model when
the cache can be reused, as in a causal decoder, or not, as in a prefix LM).
"""
from __future__ import annotations

import torch

from .errors import LabkitError

__all__ = ["causal_mask", "combine", "encoder_decoder_masks", "next_token_loss", "padding_mask", "prefix_lm_mask",
           "recomputed_tokens", "to_additive"]


def _length(value, name: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise LabkitError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return value


def causal_mask(n: int, device=None) -> torch.Tensor:
    """``(n, n)``: query i sees keys 0..i."""
    n = _length(n, "n")
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def prefix_lm_mask(n: int, prefix_len: int, device=None) -> torch.Tensor:
    """``(n, n)``: bidirectional over the first ``prefix_len`` tokens, causal after them.

    Prefix tokens see the whole prefix (not the continuation); continuation tokens see the whole
    prefix and the continuation up to themselves. ``prefix_len=0`` is the causal mask; ``n`` is
    a fully bidirectional (encoder) mask."""
    n = _length(n, "n")
    prefix_len = _length(prefix_len, "prefix_len", allow_zero=True)
    if prefix_len > n:
        raise LabkitError(f"prefix_len ({prefix_len}) cannot exceed the sequence length n ({n})")
    mask = causal_mask(n, device)
    mask[:prefix_len, :prefix_len] = True
    return mask


def encoder_decoder_masks(n_src: int, n_tgt: int, device=None) -> dict[str, torch.Tensor]:
    """The three masks of an encoder-decoder: ``encoder`` (n_src, n_src) all True, ``decoder``
    (n_tgt, n_tgt) causal, ``cross`` (n_tgt, n_src) all True (every target token reads the source)."""
    n_src, n_tgt = _length(n_src, "n_src"), _length(n_tgt, "n_tgt")
    return {"encoder": torch.ones(n_src, n_src, dtype=torch.bool, device=device),
            "decoder": causal_mask(n_tgt, device),
            "cross": torch.ones(n_tgt, n_src, dtype=torch.bool, device=device)}


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """From a tokenizer's ``attention_mask`` (batch, n) of 1 = token / 0 = padding, the key mask
    ``(batch, 1, 1, n)`` that broadcasts over heads and queries: padding keys are never attended."""
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        raise LabkitError("attention_mask must be a (batch, length) tensor of 0/1, as a tokenizer returns it")
    return attention_mask.bool()[:, None, None, :]


def combine(mask: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A structural mask ``(n, n)`` and a padding ``attention_mask`` ``(batch, n)`` -> ``(batch, 1, n, n)``."""
    if mask.dim() != 2 or attention_mask.shape[-1] != mask.shape[-1]:
        raise LabkitError(f"mask {tuple(mask.shape)} and attention_mask {tuple(attention_mask.shape)} "
                          "do not describe the same keys")
    return mask[None, None] & padding_mask(attention_mask)


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask -> additive bias: 0 where attending, the dtype's most negative value elsewhere
    (eager attention adds it to the scores before the softmax)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood of each token given the ones before it.

    ``logits`` (batch, n, vocab) from a forward pass over ``input_ids`` (batch, n); position t
    predicts token t+1. ``loss_mask`` (batch, n), True where a token *carries loss* (the answer
    tokens of a prompt/answer pair); None: every token but the first. Averaged over the tokens
    that carry loss, as transformers averages over labels that are not -100."""
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2]:
        raise LabkitError(f"logits {tuple(logits.shape)} must be (batch, n, vocab) over input_ids "
                          f"{tuple(input_ids.shape)}")
    if loss_mask is None:
        loss_mask = torch.ones_like(input_ids, dtype=torch.bool)
    if loss_mask.shape != input_ids.shape:
        raise LabkitError(f"loss_mask {tuple(loss_mask.shape)} must have the shape of input_ids {tuple(input_ids.shape)}")
    keep = loss_mask[:, 1:].bool()
    if not bool(keep.any()):
        raise LabkitError("loss_mask keeps no token after the first: there is nothing to predict")
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return -(logp * keep).sum() / keep.sum()


def recomputed_tokens(turns: list[tuple[int, int]], reuse_cache: bool = True) -> int:
    """Token positions pushed through the model over a chat of ``turns`` = [(user tokens, reply tokens), ...].

    ``reuse_cache=True`` (causal decoder): every token is computed once -- the cache keeps the
    history, a new turn only adds its own tokens. ``False`` (prefix LM, whose prefix is the whole
    history): each turn re-encodes the history and the new user message bidirectionally, then
    decodes its reply with a cache inside the turn."""
    total, history = 0, 0
    for user, reply in turns:
        user, reply = _length(user, "user tokens", allow_zero=True), _length(reply, "reply tokens", allow_zero=True)
        total += (user if reuse_cache else history + user) + reply
        history += user + reply
    return total

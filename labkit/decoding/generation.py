"""`generate`: greedy or sampled continuation with the KV cache and the processors.

Why a module of its own: it is the decode loop -- logits of the last position (in fp32) -> repetition
penalty -> no-repeat-ngram -> (sampling only) temperature -> top-k -> top-p -> argmax, or a draw from
the softmax -- in the order of ``transformers``' ``generate``, and token for token equal to
``model.generate`` when greedy (the same draws when sampling with the same seed). It ties together the
processors (`processors`) and the cache (`kv_cache`).

Built in lab 10 §3 (the decode loop), checked against ``model.generate`` in lab 10 §4, used in lab 10
§5-7.
"""
from __future__ import annotations

import torch

from ..errors import LabkitError
from .checks import _positive_int, _positive_number
from .kv_cache import KVCache, _decoder, forward_logits
from .processors import no_repeat_ngram, repetition_penalty, temperature, top_k, top_p

__all__ = ["generate"]


# generate's keyword arguments are named like the processors (as in transformers): keep a
# second name for each function so that the body can call them.
_apply_temperature, _apply_top_k, _apply_top_p = temperature, top_k, top_p
_apply_repetition_penalty = repetition_penalty

@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, *, do_sample: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
             no_repeat_ngram_size: int = 0, eos_token_id=None, use_cache: bool = True,
             generator: torch.Generator | None = None, pad_token_id: int | None = None,
             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy or sampled continuation of ``input_ids`` (batch, length): returns prompt + new tokens.

    The steps of ``transformers``' ``generate``, in its order: logits of the last position (in
    fp32) -> repetition penalty -> no-repeat-ngram -> (sampling only) temperature -> top-k ->
    top-p -> argmax, or a draw from the softmax. A sequence that produced ``eos_token_id`` (an id
    or a list of ids) gets ``pad_token_id`` (default: the first eos id) from then on; generation
    stops when every sequence has finished or after ``max_new_tokens``. Token for token equal to
    ``model.generate`` with the same arguments when greedy; when sampling with the same global
    seed (``generator=None``) it draws the same tokens, since both call ``torch.multinomial`` once
    per step on the same probabilities. ``use_cache=False`` recomputes the whole prefix at every
    step: the same tokens, much slower. ``attention_mask`` (batch, length; 0 = left padding, as a
    tokenizer with ``padding_side="left"`` returns it) batches prompts of different lengths.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise LabkitError("input_ids must be an integer tensor of shape (batch, length); "
                          "for one prompt use tokenizer(text, return_tensors='pt').input_ids")
    _positive_int(max_new_tokens, "max_new_tokens")
    if do_sample:
        _positive_number(temperature, "temperature")
        if top_k:
            _positive_int(top_k, "top_k")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise LabkitError(f"top_p must be in (0, 1], got {top_p!r}")
    _positive_number(repetition_penalty, "repetition_penalty")
    if no_repeat_ngram_size:
        _positive_int(no_repeat_ngram_size, "no_repeat_ngram_size")
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else None)
    n_layers = len(_decoder(model).layers)
    ids = input_ids.to(model.lm_head.weight.device)
    cache = KVCache(n_layers) if use_cache else None
    if attention_mask is not None:
        if attention_mask.shape != ids.shape:
            raise LabkitError(f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                              f"{tuple(ids.shape)}")
        attention_mask = attention_mask.to(ids.device).long()
        positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    step_input = ids
    for _ in range(max_new_tokens):
        if attention_mask is None:
            logits = forward_logits(model, step_input, cache)
        else:
            new_positions = positions[:, -step_input.shape[1]:]
            logits = forward_logits(model, step_input, cache, attention_mask, new_positions)
        logits = logits.float()
        if repetition_penalty != 1.0:
            logits = _apply_repetition_penalty(logits, ids, repetition_penalty)
        if no_repeat_ngram_size:
            logits = no_repeat_ngram(logits, ids, no_repeat_ngram_size)
        if do_sample:
            if temperature != 1.0:
                logits = _apply_temperature(logits, temperature)
            if top_k:
                logits = _apply_top_k(logits, top_k)
            if top_p < 1.0:
                logits = _apply_top_p(logits, top_p)
            next_tokens = torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)
        else:
            next_tokens = logits.argmax(dim=-1)
        if eos:
            next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad))
        ids = torch.cat([ids, next_tokens[:, None]], dim=-1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(ids.shape[0], 1)], dim=-1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=-1)
        if eos:
            unfinished &= ~torch.isin(next_tokens, torch.tensor(eos, device=ids.device))
            if not unfinished.any():
                break
        step_input = next_tokens[:, None] if use_cache else ids
    return ids

"""The KV cache and the forward pass that uses it: `KVCache`, `forward_logits`.

Why a module of its own: a decoder's token t attends to the keys and values of tokens 0..t. Without a
cache every new token recomputes them for the whole prefix (quadratic work); with one, each step
computes q, k, v for the *new* token only and appends k, v to what earlier steps stored. The cache is
the memory that grows with every generated token (``KVCache.nbytes`` equals
`labkit.memory.kv_cache_bytes`), and decode becomes memory-bound. `forward_logits` runs the model's
own modules (embeddings, norms, projections, MLP, rotary embedding, LM head) but does the attention
bookkeeping itself -- the cache, the positions, the causal prefill, left padding -- so it works on
the Llama-family models of the labs.

Built in lab 10 §3 (the decode loop) and measured in lab 10 §7 (bytes, prefill vs decode, and why
decode waits on memory).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import LabkitError
from ..rope import apply_rope

__all__ = ["KVCache", "forward_logits"]


class KVCache:
    """Keys and values of every layer for the tokens seen so far: ``(batch, kv_heads, length, head_dim)``.

    Only the key/value heads are stored (grouped-query attention shares each among several query
    heads), after the rotary embedding, so a cached key is never recomputed."""

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' k, v for ``layer``; return all of them, old and new."""
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = k, v
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=2)
        return self.keys[layer], self.values[layer]

    @property
    def length(self) -> int:
        """Tokens cached (per sequence)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def nbytes(self) -> int:
        """Bytes the cache holds now: 2 x layers x batch x kv_heads x length x head_dim x element size."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


def _decoder(model):
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "rotary_emb") or not hasattr(model, "lm_head"):
        raise LabkitError(f"labkit.decoding.generate runs Llama-family causal LMs (model.model.layers, "
                          f"rotary_emb, lm_head); got {type(model).__name__}. Use model.generate for others")
    attn = layers[0].self_attn
    if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")):
        raise LabkitError(f"{type(model).__name__}: attention without q/k/v/o projections is not supported here")
    if hasattr(attn, "q_norm") or getattr(model.config, "sliding_window", None):
        raise LabkitError(f"{type(model).__name__}: q/k norms or sliding-window attention are not supported here")
    return inner


def forward_logits(model, input_ids: torch.Tensor, cache: KVCache | None = None,
                   attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of the LAST position for ``input_ids`` (the new tokens), using and filling ``cache``.

    Without a cache ``input_ids`` is the whole sequence (the prefix is recomputed); with one it
    holds only the tokens not cached yet, whose positions continue where the cache ends.
    ``attention_mask`` (batch, all tokens so far, 1 = token, 0 = left padding) lets prompts of
    different lengths share a batch: padding keys are never attended to, and positions count
    real tokens only (``position_ids``: the new tokens' positions; default from the mask, as
    transformers computes them: cumsum - 1, 0 on padding)."""
    inner = _decoder(model)
    batch, new = input_ids.shape
    past = 0 if cache is None else cache.length
    if position_ids is None:
        if attention_mask is None:
            position_ids = torch.arange(past, past + new, device=input_ids.device).unsqueeze(0)
        else:
            position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)[:, -new:]
    mask = None
    if attention_mask is not None:
        keys = attention_mask.bool()[:, None, None, :]                       # (batch, 1, 1, past + new)
        if new > 1:
            causal = torch.ones(new, past + new, dtype=torch.bool, device=input_ids.device).tril(past)
            # a query on padding sees no real key: let it see itself (its output is never used)
            itself = torch.ones(new, past + new, dtype=torch.bool, device=input_ids.device).tril(past).triu(past)
            mask = (causal & keys) | itself
        else:
            mask = keys
    x = inner.embed_tokens(input_ids)
    cos, sin = inner.rotary_emb(x, position_ids=position_ids)
    for i, layer in enumerate(inner.layers):
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(batch, new, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(batch, new, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(batch, new, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rope(q, k, cos, sin)
        if cache is not None:
            k, v = cache.append(i, k, v)
        groups = q.shape[1] // k.shape[1]                    # grouped-query attention
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if mask is None:
            # prefill (several new tokens, nothing cached): causal; decode (one new token): sees all
            if new > 1 and past:
                raise LabkitError("several new tokens after a filled cache need an attention_mask")
            out = F.scaled_dot_product_attention(q, k, v, is_causal=new > 1, scale=attn.scaling)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
        x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, new, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(inner.norm(x[:, -1:, :]))[:, -1, :]

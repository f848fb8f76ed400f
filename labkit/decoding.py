"""Decoding from scratch: the logits processors, a KV cache and ``generate``.

Built in lab 10 ("Generation and repetition"). Each processor takes ``(batch, vocab)`` logits
and returns new logits exactly as the matching ``transformers`` processor does (same ties, same
``-inf`` handling), so a learner can swap one for the other:

==========================  ===================================================
labkit                      transformers
==========================  ===================================================
``temperature(l, t)``       ``TemperatureLogitsWarper(t)``
``top_k(l, k)``             ``TopKLogitsWarper(k)``
``top_p(l, p)``             ``TopPLogitsWarper(p)``
``repetition_penalty``      ``RepetitionPenaltyLogitsProcessor(penalty)``
``no_repeat_ngram``         ``NoRepeatNGramLogitsProcessor(n)``
``generate(model, ...)``    ``model.generate(...)`` (greedy and multinomial sampling)
==========================  ===================================================

Why a KV cache: a decoder's token t attends to the keys and values of tokens 0..t. Without a
cache every new token recomputes them for the whole prefix (quadratic work); with one, each step
computes q, k, v for the *new* token only and appends k, v to what earlier steps stored. The
cache is the memory that grows with every generated token (``KVCache.nbytes`` equals
`labkit.memory.kv_cache_bytes`), and decode becomes memory-bound: each step reads every weight
and the whole cache to produce one token.

``generate`` runs the model's own modules (embeddings, norms, projections, MLP, rotary
embedding, LM head) but does the attention bookkeeping itself -- the cache, the positions, the
causal prefill -- so it works on the Llama-family models of the labs (``lab-tiny``,
``smollm2-135m``, LoRA-wrapped or not).

Repetition metrics (Li et al. 2016's distinct-n; Holtzman et al. 2020 on degeneration):
``distinct_n(tokens, n)`` is the share of n-grams that are distinct, ``repetition_rate(tokens, n)``
the share of n-gram occurrences that repeat an earlier one (``1 - distinct_n``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import LabkitError
from .rope import apply_rope

__all__ = ["KVCache", "distinct_n", "generate", "no_repeat_ngram", "repetition_grid", "repetition_penalty", "repetition_rate",
           "temperature", "top_k", "top_p"]


# ---------------------------------------------------------------------------
# checks: one line that says what to pass
# ---------------------------------------------------------------------------
def _check_logits(logits) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise LabkitError(f"logits must be a float tensor of shape (batch, vocab), got {shape}")


def _check_ids(input_ids, logits) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise LabkitError(f"input_ids must be an integer tensor of shape (batch, length), got {shape}")
    if input_ids.shape[0] != logits.shape[0]:
        raise LabkitError(f"input_ids has {input_ids.shape[0]} rows but logits has {logits.shape[0]}")


def _positive_number(value, name: str, hint: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise LabkitError(f"{name} must be a positive number, got {value!r}{hint}")
    return float(value)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LabkitError(f"{name} must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------
# the processors
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# repetition metrics
# ---------------------------------------------------------------------------
def _ngrams(tokens, n: int) -> list[tuple]:
    n = _positive_int(n, "n")
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 1:
            raise LabkitError(f"tokens must be one sequence (1-D), got shape {tuple(tokens.shape)}; "
                              "call once per generated sequence")
        tokens = tokens.tolist()
    tokens = list(tokens)
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens, n: int) -> float:
    """Distinct n-grams / all n-grams of one sequence (Li et al. 2016); 0.0 if it has none."""
    grams = _ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(tokens, n: int) -> float:
    """Share of n-gram occurrences that repeat an earlier one: ``1 - distinct_n``; 0.0 if none."""
    grams = _ngrams(tokens, n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


# ---------------------------------------------------------------------------
# the KV cache and a forward pass that uses it
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# python -m labkit decode: the repetition grid of lab 10, section 5
# ---------------------------------------------------------------------------
GRID = {
    "greedy": {},
    "greedy + penalty 1.2": {"repetition_penalty": 1.2},
    "greedy + no-repeat 3-gram": {"no_repeat_ngram_size": 3},
    "sample T=0.7": {"do_sample": True, "temperature": 0.7},
    "top-p 0.9": {"do_sample": True, "top_p": 0.9},
    "top-p 0.9 + penalty 1.2": {"do_sample": True, "top_p": 0.9, "repetition_penalty": 1.2},
}


def _left_pad(prompts, tokenizer):
    """Left-padded ``(input_ids, attention_mask)`` of prompts given as texts or as lists of token ids."""
    if prompts and all(isinstance(p, (list, tuple)) for p in prompts):
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            if not p:
                raise LabkitError(f"prompt {i} has no tokens")
            ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long), 1
        return ids, mask
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise LabkitError("prompts must be a non-empty list of texts or of token-id lists")
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc.input_ids, enc.attention_mask


def repetition_grid(model, tokenizer, prompts: list, settings: dict[str, dict], new_tokens: int,
                    seeds=(0,), n: int = 4, *, eos_token_id=None) -> dict[str, dict]:
    """Repetition rate of the n-grams of each setting's continuations of ``prompts`` (lab 10, §5).

    ``prompts`` are texts (tokenized as they are, no special tokens added) or lists of token ids
    (e.g. `labkit.sft.format_prompt` of a chat model); they are left-padded into one batch.
    ``settings`` maps a name to `generate` keywords. Sampled settings (``do_sample=True``) run once
    per seed of ``seeds`` (the global torch seed is set before each run); greedy ones run once, with
    ``seeds[0]``. With ``eos_token_id`` (an id or a list of ids) a continuation ends at its first
    end token, which is not counted; without it every continuation has ``new_tokens`` tokens.

    Returns ``{setting: {...}}`` with, per setting:

    * ``repetition_rate`` -- mean over prompts of ``per_prompt``;
    * ``per_prompt`` -- each prompt's repetition rate (share of repeated n-grams), mean over runs;
    * ``runs`` -- how many runs the setting had; ``seeds`` -- their seeds;
    * ``per_run`` -- ``[run][prompt]`` repetition rates (``per_prompt`` is their mean over runs);
    * ``distinct_2`` / ``distinct_2_per_prompt`` -- the same for distinct bigrams (`distinct_n`);
    * ``texts`` -- ``[run][prompt]`` decoded continuations (special tokens skipped);
    * ``new_tokens`` -- ``[run][prompt]`` tokens counted in each continuation.
    """
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not seeds:
        raise LabkitError("seeds must name at least one seed")
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    ids, mask = _left_pad(prompts, tokenizer)
    device = model.lm_head.weight.device
    ids, mask = ids.to(device), mask.to(device)
    out = {}
    for name, kw in settings.items():
        runs = list(seeds) if kw.get("do_sample") else [seeds[0]]
        rates, d2, texts, lengths = [], [], [], []
        for seed in runs:
            torch.manual_seed(seed)
            gen = generate(model, ids, new_tokens, attention_mask=mask, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=eos or None, **kw)
            rows = gen[:, ids.shape[1]:].tolist()
            if eos:
                rows = [row[:next((i for i, t in enumerate(row) if t in eos), len(row))] for row in rows]
            rates.append([repetition_rate(row, n) for row in rows])
            d2.append([distinct_n(row, 2) for row in rows])
            texts.append([tokenizer.decode(row, skip_special_tokens=True) for row in rows])
            lengths.append([len(row) for row in rows])
        per_prompt = [sum(col) / len(col) for col in zip(*rates)]
        d2_prompt = [sum(col) / len(col) for col in zip(*d2)]
        out[name] = {"repetition_rate": sum(per_prompt) / len(per_prompt), "per_prompt": per_prompt,
                     "runs": len(runs), "seeds": runs, "per_run": rates,
                     "distinct_2": sum(d2_prompt) / len(d2_prompt), "distinct_2_per_prompt": d2_prompt,
                     "texts": texts, "new_tokens": lengths}
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit decode``: repetition rate of decoding settings on held-out openings."""
    from . import cli, data, env, models, stats

    p = cli.parser("decode", "Repetition rate (repeated 4-grams) of decoding settings on held-out text openings "
                             "(lab 10). With --temperature/--top-p/--top-k/--repetition-penalty/--no-repeat-ngram-size "
                             "the grid gets your setting too.")
    p.add_argument("--model", default="lab-tiny", help="lab-tiny (default) or smollm2-135m")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--no-repeat-ngram-size", type=int, default=None)
    args = p.parse_args(argv)
    mine = {}
    if args.temperature is not None:
        _positive_number(args.temperature, "--temperature")
        mine["temperature"] = args.temperature
    if args.top_p is not None:
        if not 0 < args.top_p <= 1:
            raise LabkitError(f"--top-p must be in (0, 1], got {args.top_p}")
        mine["top_p"] = args.top_p
    if args.top_k is not None:
        mine["top_k"] = _positive_int(args.top_k, "--top-k")
    if args.repetition_penalty is not None:
        mine["repetition_penalty"] = _positive_number(args.repetition_penalty, "--repetition-penalty")
    if args.no_repeat_ngram_size is not None:
        mine["no_repeat_ngram_size"] = _positive_int(args.no_repeat_ngram_size, "--no-repeat-ngram-size")
    if args.model not in ("lab-tiny", "smollm2-135m"):
        raise LabkitError(f"--model must be lab-tiny or smollm2-135m, got {args.model!r}")
    profile = env.check_profile(args.profile) if args.profile else env.profile()
    n_prompts = env.by_profile(smoke=4, cpu=24, full=64, profile_name=profile)
    new_tokens = env.by_profile(smoke=16, cpu=48, full=128, profile_name=profile)
    seeds = stats.default_seeds(profile)
    settings = dict(GRID)
    if mine:
        if any(k in mine for k in ("temperature", "top_p", "top_k")):
            mine = {"do_sample": True, **mine}
        settings["yours: " + ", ".join(f"{k}={v}" for k, v in mine.items() if k != "do_sample")] = mine
    model, tok = models.load(args.model, device=env.device())
    model.eval()
    prompts = [" ".join(d.split()[:6]) for d in data.general_corpus(n_prompts, split="test")]
    grid = repetition_grid(model, tok, prompts, settings, new_tokens, seeds)
    print(f"{args.model}, profile {profile}: {n_prompts} held-out openings x {new_tokens} new tokens, "
          f"sampled settings x {len(seeds)} runs; share of repeated 4-grams:")
    for name, r in grid.items():
        print(f"  {name:<40} {r['repetition_rate']:6.1%}  ({r['runs']} run{'s' if r['runs'] > 1 else ''})")
    if args.json:
        cli.emit_json({"model": args.model, "profile": profile, "prompts": n_prompts, "new_tokens": new_tokens,
                       "n": 4, "grid": {k: {"repetition_rate": v["repetition_rate"], "runs": v["runs"]}
                                        for k, v in grid.items()}})
    return 0

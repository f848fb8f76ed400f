"""Lab 10: generation and repetition -- the exercises at the end of the notebook.

Code exercises run the learner's function on fresh random logits (ties, -inf entries, small
alphabets with many repeated n-grams) against transformers' own processors; the numbers are
computed from labkit's estimator and model configs, never from the notebook.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise, draw_int


def _kv_gb(name: str) -> float:
    from .. import memory, models

    return memory.kv_cache_bytes(models.config(name), 1, 4096, dtype="bf16") / 1e9


def _decode_bound() -> float:
    from .. import models

    n = models.count_params(models.build("llama-2-7b", device="meta"))
    return 3.35e12 / (2 * n)


# ----------------------------------------------------------------------------- code


def _logits(gen):
    import torch

    batch, vocab = draw_int(gen, 1, 5), draw_int(gen, 2, 80)
    x = torch.randn(batch, vocab, generator=gen) * float(torch.empty(1).uniform_(0.3, 5, generator=gen))
    if vocab > 8:                                            # ties and already-removed tokens
        x[:, 1:4] = x[:, :1]
        x[0, vocab // 2:] = -math.inf
    return x


def _ids(gen, batch: int, vocab: int):
    import torch

    alphabet = min(vocab, draw_int(gen, 2, 10))
    return torch.randint(0, alphabet, (batch, draw_int(gen, 1, 16)), generator=gen)


def _top_p_inputs(gen):
    p = [0.05, 0.3, 0.5, 0.8, 0.9, 0.95, 0.999, 1.0][draw_int(gen, 0, 7)]
    return _logits(gen), p


def _top_p_reference(logits, p):
    from transformers.generation.logits_process import TopPLogitsWarper

    return TopPLogitsWarper(p)(None, logits)


def _penalty_inputs(gen):
    x = _logits(gen)
    return x, _ids(gen, x.shape[0], x.shape[1]), [0.5, 0.9, 1.2, 1.5, 3.0][draw_int(gen, 0, 4)]


def _penalty_reference(logits, input_ids, penalty):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    return RepetitionPenaltyLogitsProcessor(float(penalty))(input_ids, logits.clone())


def _ngram_inputs(gen):
    x = _logits(gen)
    return x, _ids(gen, x.shape[0], x.shape[1]), draw_int(gen, 1, 4)


def _ngram_reference(logits, input_ids, n):
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    return NoRepeatNGramLogitsProcessor(n)(input_ids, logits.clone())


def _rate_inputs(gen):
    import torch

    # at least 12 tokens from at most 3 symbols, n-grams of 1 or 2: more n-grams than distinct ones can
    # exist, so every input repeats something (a function returning 0 cannot pass)
    length, alphabet = draw_int(gen, 12, 40), draw_int(gen, 1, 3)
    return torch.randint(0, alphabet, (length,), generator=gen).tolist(), draw_int(gen, 1, 2)


def _rate_reference(tokens, n):
    from .. import decoding

    return decoding.repetition_rate(tokens, n)


EXERCISES = {
    "10.top_p": CodeExercise(
        question="write top_p_s(logits, p): nucleus filtering of (batch, vocab) logits, exactly as transformers' "
                 "TopPLogitsWarper(p)",
        reference=_top_p_reference, inputs=_top_p_inputs, solution="top_p_s", rtol=0, atol=0,
        hint="sort ascending, cumulative softmax; drop a token when it and everything less likely hold at most 1 - p; "
             "always keep the most likely token; scatter the mask back to vocabulary order"),
    "10.repetition_penalty": CodeExercise(
        question="write repetition_penalty_s(logits, input_ids, penalty): CTRL's penalty on every token already in "
                 "input_ids, exactly as RepetitionPenaltyLogitsProcessor",
        reference=_penalty_reference, inputs=_penalty_inputs, solution="repetition_penalty_s", rtol=0, atol=0,
        hint="gather the logits of the seen ids, divide the positive ones by the penalty and multiply the negative "
             "ones, scatter them back: once per distinct token however often it occurs"),
    "10.no_repeat_ngram": CodeExercise(
        question="write no_repeat_ngram_s(logits, input_ids, n): -inf for every token that would complete an n-gram "
                 "already in input_ids (NoRepeatNGramLogitsProcessor)",
        reference=_ngram_reference, inputs=_ngram_inputs, solution="no_repeat_ngram_s", rtol=0, atol=0,
        hint="the last n-1 tokens are the prefix; every earlier place where the same n-1 tokens occur bans the token "
             "that followed them; with fewer than n tokens nothing is banned; n = 1 bans every token seen"),
    "10.repetition_rate": CodeExercise(
        question="write repetition_rate_s(tokens, n): the share of a sequence's n-grams that repeat an earlier one "
                 "(0.0 when it has none)",
        reference=_rate_reference, inputs=_rate_inputs, solution="repetition_rate_s",
        hint="(number of n-grams - number of distinct n-grams) / number of n-grams"),

    "10.kv_cache_gb_llama2_7b": Exercise(
        "GB (1e9 bytes) of Llama-2-7B's bf16 KV cache for one sequence of 4,096 tokens", lambda: _kv_gb("llama-2-7b"),
        0.001, "2 (keys and values) x layers x tokens x kv heads x head dim x 2 bytes"),
    "10.kv_cache_gb_llama3_8b": Exercise(
        "GB of Llama-3-8B's bf16 KV cache for one sequence of 4,096 tokens (grouped-query attention)",
        lambda: _kv_gb("llama-3-8b"), 0.001, "only the 8 key/value heads are cached, not the 32 query heads"),
    "10.decode_tokens_per_s_bound": Exercise(
        "at most how many tokens/s can Llama-2-7B in bf16 decode at batch 1 on a GPU reading 3.35 TB/s, if a step "
        "must read every weight once", _decode_bound, 0.005,
        "bytes per step = parameters x 2 bytes; tokens/s = bandwidth / bytes per step"),
}

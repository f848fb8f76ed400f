"""Lab 11: long context -- the exercises at the end of the notebook.

Code exercises run the learner's function on fresh random shapes, bases, factors and lengths
against `labkit.rope` (which tests/test_rope.py and the lab prove bit-equal to transformers'
``ROPE_INIT_FUNCTIONS`` and BLOOM's ALiBi) or against transformers' ``apply_rotary_pos_emb``
itself. The numbers are computed from labkit's estimator, model configs and formulas, never
from the notebook.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise, draw_int

THETAS = (10_000.0, 500_000.0, 1_000_000.0, 25_000.0)


def _dim(gen) -> int:
    return 2 * draw_int(gen, 2, 128)           # even rotary dims 4..256


def _theta(gen) -> float:
    return THETAS[draw_int(gen, 0, len(THETAS) - 1)]


def _factor(gen) -> float:
    return [2.0, 4.0, 8.0, 16.0, 32.0, 1.5][draw_int(gen, 0, 5)]


# ----------------------------------------------------------------------------- code
def _linear_inputs(gen):
    return _dim(gen), _theta(gen), _factor(gen)


def _linear_reference(dim, theta, factor):
    from .. import rope

    return rope.linear_inv_freq(dim, theta, factor)


def _ntk_inputs(gen):
    max_pos = [256, 2048, 4096, 8192][draw_int(gen, 0, 3)]
    seq_len = [None, max_pos // 2, max_pos, 2 * max_pos, draw_int(gen, max_pos, 8 * max_pos)][draw_int(gen, 0, 4)]
    return _dim(gen), _theta(gen), _factor(gen), max_pos, seq_len


def _ntk_reference(dim, theta, factor, max_position_embeddings, seq_len):
    from .. import rope

    return rope.dynamic_inv_freq(dim, theta, factor, max_position_embeddings, seq_len)


def _yarn_inputs(gen):
    beta_fast, beta_slow = [(32, 1), (16, 2), (64, 1)][draw_int(gen, 0, 2)]
    return _dim(gen), _theta(gen), _factor(gen), [256, 2048, 4096, 8192][draw_int(gen, 0, 3)], beta_fast, beta_slow


def _yarn_reference(dim, theta, factor, original_max_position_embeddings, beta_fast, beta_slow):
    from .. import rope

    return rope.yarn_inv_freq(dim, theta, factor, original_max_position_embeddings, beta_fast, beta_slow)


def _rope_inputs(gen):
    import torch

    from .. import rope

    batch, heads, kv_heads, seq = draw_int(gen, 1, 3), draw_int(gen, 1, 4), 1, draw_int(gen, 1, 24)
    dim = 2 * draw_int(gen, 2, 32)
    positions = torch.arange(seq).repeat(batch, 1) + torch.randint(0, 4000, (batch, 1), generator=gen)
    cos, sin = rope.cos_sin(rope.default_inv_freq(dim, _theta(gen)), positions)
    q = torch.randn(batch, heads, seq, dim, generator=gen)
    k = torch.randn(batch, kv_heads, seq, dim, generator=gen)
    return q, k, cos, sin


def _rope_reference(q, k, cos, sin):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    return apply_rotary_pos_emb(q, k, cos, sin)


def _alibi_inputs(gen):
    return (draw_int(gen, 1, 80),)


def _alibi_reference(n_heads):
    from .. import rope

    return rope.alibi_slopes(n_heads)


# ----------------------------------------------------------------------------- numbers
def _kv_gb_llama2_32k() -> float:
    from .. import memory, models

    return memory.kv_cache_bytes(models.config("llama-2-7b"), 1, 32_768, dtype="fp16") / 1e9


def _ntk_base() -> float:
    from .. import models

    c = models.config("llama-2-7b")
    dim = c.hidden_size // c.num_attention_heads
    theta, factor, trained, length = c.rope_parameters["rope_theta"], 4, 4096, 16_384
    return theta * (factor * length / trained - (factor - 1)) ** (dim / (dim - 2))


def _yarn_temperature() -> float:
    from .. import rope

    return rope.yarn_attention_factor(16.0)


EXERCISES = {
    "11.linear_inv_freq": CodeExercise(
        question="write linear_inv_freq_s(dim, theta, factor): position interpolation's RoPE frequencies, float32 of "
                 "shape (dim // 2,), as transformers' 'linear' rope type",
        reference=_linear_reference, inputs=_linear_inputs, solution="linear_inv_freq_s", rtol=1e-6, atol=0,
        hint="the plain ladder 1 / theta ** (arange(0, dim, 2) / dim), then every frequency divided by the factor"),
    "11.ntk_inv_freq": CodeExercise(
        question="write dynamic_inv_freq_s(dim, theta, factor, max_position_embeddings, seq_len): dynamic NTK "
                 "frequencies, as transformers' 'dynamic' rope type (seq_len None means max_position_embeddings)",
        reference=_ntk_reference, inputs=_ntk_inputs, solution="dynamic_inv_freq_s", rtol=1e-5, atol=0,
        hint="take the length as at least max_position_embeddings; the base becomes theta * (factor * len / max - "
             "(factor - 1)) ** (dim / (dim - 2)); then the plain ladder with that base"),
    "11.yarn_inv_freq": CodeExercise(
        question="write yarn_inv_freq_s(dim, theta, factor, original_max_position_embeddings, beta_fast, beta_slow): "
                 "YaRN's NTK-by-parts frequencies (truncated ramp), as transformers' 'yarn' rope type",
        reference=_yarn_reference, inputs=_yarn_inputs, solution="yarn_inv_freq_s", rtol=1e-5, atol=0,
        hint="the pair whose wavelength fits r times in the original context is dim * ln(L / (2 pi r)) / (2 ln theta); "
             "floor it for beta_fast and ceil it for beta_slow, clamp to [0, dim - 1], ramp linearly between; keep the "
             "frequency below the ramp, divide it by factor above"),
    "11.apply_rope": CodeExercise(
        question="write apply_rope_s(q, k, cos, sin): rotate queries (batch, heads, seq, dim) and keys by cos/sin "
                 "(batch, seq, dim), as transformers' apply_rotary_pos_emb",
        reference=_rope_reference, inputs=_rope_inputs, solution="apply_rope_s", rtol=1e-6, atol=1e-6,
        hint="unsqueeze cos and sin at dim 1 (one table for all heads); x * cos + rotate_half(x) * sin with "
             "rotate_half([x1, x2]) = [-x2, x1] over the two halves of the last dim"),
    "11.alibi_slopes": CodeExercise(
        question="write alibi_slopes_s(n_heads): ALiBi's per-head slopes for any head count, float32, as BLOOM's "
                 "build_alibi_tensor uses them",
        reference=_alibi_reference, inputs=_alibi_inputs, solution="alibi_slopes_s", rtol=1e-6, atol=0,
        hint="for the largest power of two p <= n: (2 ** (-8 / p)) ** h, h = 1..p; the n - p missing ones are "
             "(2 ** (-4 / p)) ** h for odd h = 1, 3, 5, ..."),
    "11.kv_cache_gb_llama2_7b_32k": Exercise(
        "GB (1e9 bytes) of Llama-2-7B's fp16 KV cache for one sequence of 32,768 tokens", _kv_gb_llama2_32k, 0.001,
        "2 (keys and values) x layers x tokens x kv heads x head dim x 2 bytes"),
    "11.ntk_base_llama2_16k": Exercise(
        "dynamic NTK base theta' for Llama-2-7B (head dim 128, theta 10000, 4096 trained positions), factor 4, at "
        "16,384 tokens", _ntk_base, 0.001,
        "theta * (factor * length / trained - (factor - 1)) ** (dim / (dim - 2)); dim is the rotary dimension"),
    "11.yarn_attention_factor_16": Exercise(
        "YaRN's attention temperature (the factor on cos and sin) for a scaling factor of 16", _yarn_temperature, 0.001,
        "0.1 x natural log of the factor, plus one"),
}

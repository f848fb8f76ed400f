"""labkit.rope against transformers: every rope type on random configs, cos/sin, apply_rope, ALiBi, errors.

References (transformers 5.x, no network): ``ROPE_INIT_FUNCTIONS`` for linear /
dynamic / yarn / llama3; ``LlamaRotaryEmbedding.compute_default_rope_parameters``
for the default type (5.x has no ``"default"`` entry in the table; GPT-NeoX's
version for a partial rotary factor, which Llama's ignores); ``LlamaRotaryEmbedding``
and ``apply_rotary_pos_emb``; BLOOM's ``_get_alibi_slopes`` / ``build_alibi_tensor``.
Everything is compared with ``torch.equal`` unless a comment says why not.
"""
import copy
import math
import random
from types import SimpleNamespace

import pytest
import torch

from labkit import rope
from labkit.errors import LabkitError

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.bloom.modeling_bloom import _get_alibi_slopes, build_alibi_tensor  # noqa: E402
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb  # noqa: E402

SEEDS = range(8)
HEAD_DIMS = [8, 16, 32, 64, 80, 96, 128, 256]
THETAS = [10_000.0, 500_000.0, 1_000_000.0]


def _config(rope_parameters, head_dim, max_pos=2048, heads=4, **extra):
    return LlamaConfig(hidden_size=head_dim * heads, num_attention_heads=heads, head_dim=head_dim,
                       intermediate_size=64, num_hidden_layers=1, vocab_size=32,
                       max_position_embeddings=max_pos, rope_parameters=dict(rope_parameters), **extra)


def _reference(config, seq_len=None):
    """transformers' answer, computed on a deep copy (its functions standardize the config in place)."""
    config = copy.deepcopy(config)
    kind = config.rope_parameters["rope_type"]
    if kind == "default":
        fn = ROPE_INIT_FUNCTIONS.get("default", LlamaRotaryEmbedding.compute_default_rope_parameters)
        return fn(config)
    return ROPE_INIT_FUNCTIONS[kind](config, None, seq_len=seq_len)


def _assert_same(config, seq_len=None):
    before = copy.deepcopy(config.rope_parameters)
    ours, our_scale = rope.inv_freq(config, seq_len=seq_len)
    assert config.rope_parameters == before, "inv_freq must not change the config"
    ref, ref_scale = _reference(config, seq_len)
    assert ours.dtype == ref.dtype == torch.float32 and ours.shape == ref.shape
    assert torch.equal(ours, ref), (config.rope_parameters, (ours - ref).abs().max())
    assert isinstance(our_scale, float) and our_scale == float(ref_scale)
    return ours, our_scale


def _random_rope(rng, kind):
    head_dim = rng.choice(HEAD_DIMS)
    theta = rng.choice(THETAS + [rng.uniform(1_000.0, 2_000_000.0)])
    factor = rng.choice([2, 4, 8, 16, 32.0, round(rng.uniform(1.0, 40.0), 3)])
    return head_dim, {"rope_type": kind, "rope_theta": theta, "factor": factor}


# ---------------------------------------------------------------------------
# inv_freq: every rope type on random configs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_default_equals_llama(seed):
    rng = random.Random(seed)
    head_dim, theta = rng.choice(HEAD_DIMS), rng.choice(THETAS + [rng.uniform(100.0, 1e7)])
    freqs, scale = _assert_same(_config({"rope_type": "default", "rope_theta": theta}, head_dim))
    assert scale == 1.0 and freqs[0] == 1.0 and freqs.shape == (head_dim // 2,)


@pytest.mark.parametrize("partial", [0.25, 0.5, 0.75])
def test_default_with_partial_rotary_equals_gpt_neox(partial):
    config = _config({"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": partial}, 64)
    ref, _ = GPTNeoXRotaryEmbedding.compute_default_rope_parameters(copy.deepcopy(config))
    ours, _ = rope.inv_freq(config)
    assert ours.shape == (int(64 * partial) // 2,) and torch.equal(ours, ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_linear(seed):
    head_dim, params = _random_rope(random.Random(seed), "linear")
    freqs, _ = _assert_same(_config(params, head_dim))
    plain = rope.default_inv_freq(head_dim, params["rope_theta"])
    torch.testing.assert_close(freqs * params["factor"], plain)      # every frequency slowed by `factor`


@pytest.mark.parametrize("seed", SEEDS)
def test_dynamic_below_and_above_max_positions(seed):
    rng = random.Random(seed)
    head_dim, params = _random_rope(rng, "dynamic")
    max_pos = rng.choice([512, 2048, 4096])
    config = _config(params, head_dim, max_pos=max_pos)
    base, _ = _assert_same(config)                                    # seq_len None: as at init
    for seq_len in [1, max_pos // 2, max_pos - 1, max_pos]:
        assert torch.equal(_assert_same(config, seq_len)[0], base)    # within the pretraining length: unchanged
    longer = [max_pos + 1, 2 * max_pos, int(params["factor"] * max_pos), rng.randint(max_pos + 1, 20 * max_pos)]
    for seq_len in longer:
        freqs, _ = _assert_same(config, seq_len)
        assert freqs[0] == base[0] and torch.all(freqs[1:] < base[1:])    # pair 0 kept, the rest slowed
    # LlamaRotaryEmbedding passes seq_len as a 0-d int64 tensor (float32 arithmetic): same bits there too
    for seq_len in [max_pos // 2, longer[-1]]:
        _assert_same(config, torch.tensor(seq_len))


YARN_EXTRAS = [{}, {"attention_factor": 0.8}, {"attention_factor": 1.3}, {"beta_fast": 16},
               {"beta_slow": 2}, {"beta_fast": 64, "beta_slow": 0.5}, {"mscale": 1.0, "mscale_all_dim": 1.0},
               {"mscale": 0.707, "mscale_all_dim": 0.707}, {"mscale": 1.0, "mscale_all_dim": 0.5},
               {"mscale": 1.0}, {"truncate": False}, {"truncate": False, "beta_fast": 8, "beta_slow": 3}]


@pytest.mark.parametrize("extra", YARN_EXTRAS, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()) or "plain")
@pytest.mark.parametrize("seed", SEEDS[:4])
def test_yarn(seed, extra):
    rng = random.Random(seed)
    head_dim, params = _random_rope(rng, "yarn")
    original = rng.choice([512, 2048, 4096, 8192])
    params.update(extra, original_max_position_embeddings=original)
    freqs, scale = _assert_same(_config(params, head_dim, max_pos=int(original * params["factor"])))
    if not extra and params["factor"] > 1:
        assert scale == pytest.approx(0.1 * math.log(params["factor"]) + 1.0)
    plain = rope.default_inv_freq(head_dim, params["rope_theta"])
    # every pair lies between "kept" and "interpolated" (float32 rounding allowed at the ends)
    assert torch.all(freqs <= plain * (1 + 1e-6)) and torch.all(freqs >= plain / params["factor"] * (1 - 1e-6))


def test_yarn_without_factor_uses_the_ratio_of_context_lengths():
    # DeepSeek-V3 style: no `factor`, max_position_embeddings / original_max_position_embeddings instead
    config = _config({"rope_type": "yarn", "rope_theta": 10_000.0, "factor": None,
                      "original_max_position_embeddings": 1024}, 64, max_pos=8192)
    freqs, scale = _assert_same(config)
    assert scale == pytest.approx(0.1 * math.log(8) + 1)


def test_yarn_original_max_positions_defaults_to_max_positions():
    config = _config({"rope_type": "yarn", "rope_theta": 10_000.0, "factor": 4.0}, 64, max_pos=4096)
    _assert_same(config)


@pytest.mark.parametrize("seed", SEEDS)
def test_llama3(seed):
    rng = random.Random(seed)
    head_dim, params = _random_rope(rng, "llama3")
    low = rng.choice([0.5, 1.0, 2.0])
    high = low + rng.choice([1.0, 3.0, rng.uniform(0.5, 8.0)])
    original = rng.choice([2048, 8192])
    params.update(low_freq_factor=low, high_freq_factor=high, original_max_position_embeddings=original)
    _assert_same(_config(params, head_dim, max_pos=original * 16))


def test_llama31_8b_frequencies():
    """The real Llama 3.1 8B settings: short wavelengths kept, long ones divided by 8, a blend between."""
    params = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    freqs, _ = _assert_same(_config(params, 128, max_pos=131072))
    plain = rope.default_inv_freq(128, 500_000.0)
    wavelength = 2 * math.pi / plain
    assert torch.equal(freqs[wavelength < 2048], plain[wavelength < 2048])
    assert torch.equal(freqs[wavelength > 8192], plain[wavelength > 8192] / 8)


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn", "llama3"])
def test_partial_rotary_factor(kind):
    params = {"rope_type": kind, "rope_theta": 10_000.0, "factor": 4.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 1024}
    if kind in ("linear", "dynamic"):
        params = {k: params[k] for k in ("rope_type", "rope_theta", "factor")}
    config = _config(params, 64, max_pos=4096, partial_rotary_factor=0.5)
    assert config.rope_parameters["partial_rotary_factor"] == 0.5
    freqs, _ = _assert_same(config, seq_len=8000)
    assert freqs.shape == (16,)


def test_legacy_rope_scaling():
    """Old checkpoints: `rope_scaling={"type": ...}` and a top-level `rope_theta`."""
    config = LlamaConfig(hidden_size=128, num_attention_heads=2, intermediate_size=64, num_hidden_layers=1,
                         vocab_size=32, rope_scaling={"type": "linear", "factor": 3.0}, rope_theta=50_000.0)
    ours, _ = _assert_same(config)
    # a plain object carrying only the legacy fields reads the same
    legacy = SimpleNamespace(hidden_size=128, num_attention_heads=2, max_position_embeddings=2048,
                             rope_scaling={"type": "linear", "factor": 3.0}, rope_theta=50_000.0)
    assert torch.equal(rope.inv_freq(legacy)[0], ours)
    assert torch.equal(rope.inv_freq(SimpleNamespace(hidden_size=128, num_attention_heads=2))[0],
                       rope.default_inv_freq(64, 10_000.0))


def test_inv_freq_on_a_device():
    config = _config({"rope_type": "yarn", "rope_theta": 10_000.0, "factor": 4.0,
                      "original_max_position_embeddings": 512}, 64)
    freqs, _ = rope.inv_freq(config, device="cpu")
    assert freqs.device.type == "cpu"


# ---------------------------------------------------------------------------
# cos/sin and the rotation
# ---------------------------------------------------------------------------
COS_SIN_CONFIGS = [
    {"rope_type": "default", "rope_theta": 10_000.0},
    {"rope_type": "linear", "rope_theta": 500_000.0, "factor": 4.0},
    {"rope_type": "dynamic", "rope_theta": 10_000.0, "factor": 2.0},
    {"rope_type": "yarn", "rope_theta": 10_000.0, "factor": 8.0, "original_max_position_embeddings": 256},
    {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 256},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("params", COS_SIN_CONFIGS, ids=lambda p: p["rope_type"])
def test_cos_sin_equals_llama_rotary_embedding(params, dtype):
    config = _config(params, 64, max_pos=2048)
    emb = LlamaRotaryEmbedding(copy.deepcopy(config))
    g = torch.Generator().manual_seed(0)
    # short positions, then positions past max_position_embeddings (dynamic recomputes its frequencies there)
    for high in (2048, 5000):
        positions = torch.randint(0, high, (2, 9), generator=g)
        ref_cos, ref_sin = emb(torch.zeros(1, dtype=dtype), positions)
        seq_len = positions.max() + 1          # what LlamaRotaryEmbedding hands to dynamic
        freqs, scale = rope.inv_freq(config, seq_len=seq_len)
        cos, sin = rope.cos_sin(freqs, positions, scale, dtype=dtype)
        assert cos.shape == (2, 9, 64) and cos.dtype == dtype
        assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [16, 64, 128])
def test_apply_rope_equals_llama(head_dim, dtype):
    g = torch.Generator().manual_seed(head_dim)
    q = torch.randn(2, 4, 11, head_dim, generator=g).to(dtype)
    k = torch.randn(2, 4, 11, head_dim, generator=g).to(dtype)
    positions = torch.randint(0, 4096, (2, 11), generator=g)
    cos, sin = rope.cos_sin(rope.default_inv_freq(head_dim, 10_000.0), positions, dtype=dtype)
    ours = rope.apply_rope(q, k, cos, sin)
    ref = apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])
    assert torch.equal(rope.rotate_half(rope.rotate_half(q)), -q)


def test_rope_scores_depend_only_on_distance():
    """Why RoPE: q_m . k_n is a function of m - n (float32 rounding: allclose)."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 64, generator=g), torch.randn(1, 1, 1, 64, generator=g)
    freqs = rope.default_inv_freq(64)
    scores = []
    for start in (0, 17, 500):
        cos, sin = rope.cos_sin(freqs, torch.tensor([[start + 5, start]]))
        qr, _ = rope.apply_rope(q, q, cos[:, :1], sin[:, :1])
        _, kr = rope.apply_rope(k, k, cos[:, 1:], sin[:, 1:])
        scores.append((qr * kr).sum().item())
    assert scores[0] == pytest.approx(scores[1], abs=1e-4) == pytest.approx(scores[2], abs=1e-4)
    assert torch.allclose(rope.apply_rope(q, k, *rope.cos_sin(freqs, torch.tensor([[3]])))[0].norm(), q.norm())


# ---------------------------------------------------------------------------
# ALiBi
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_heads", range(1, 65))
def test_alibi_slopes_equal_bloom(n_heads):
    ours = rope.alibi_slopes(n_heads)
    assert ours.dtype == torch.float32 and ours.shape == (n_heads,)
    assert torch.equal(ours, _get_alibi_slopes(n_heads, torch.device("cpu")))


@pytest.mark.parametrize("n_heads", [112, 128, 200])
def test_alibi_slopes_equal_bloom_many_heads(n_heads):
    assert torch.equal(rope.alibi_slopes(n_heads), _get_alibi_slopes(n_heads, torch.device("cpu")))


def test_alibi_slopes_by_hand():
    assert rope.alibi_slopes(8).tolist() == [2.0 ** -i for i in range(1, 9)]
    # 12 heads: the 8 slopes of 8 heads, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (odd slopes of 16 heads)
    expected = [2.0 ** -i for i in range(1, 9)] + [2.0 ** -(i / 2) for i in (1, 3, 5, 7)]
    torch.testing.assert_close(rope.alibi_slopes(12), torch.tensor(expected))


@pytest.mark.parametrize("n_heads", [1, 4, 6, 12, 16])
def test_alibi_bias_against_bloom(n_heads):
    """BLOOM adds slope*j for every query; ours is -slope*(i-j) on the causal part: a per-row constant apart."""
    seq, batch = 10, 2
    bias = rope.alibi_bias(n_heads, seq)
    assert bias.shape == (n_heads, seq, seq) and bias.dtype == torch.float32
    future = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    assert torch.all(bias[:, future] == float("-inf")) and torch.all(bias.diagonal(dim1=1, dim2=2) == 0)
    bloom = build_alibi_tensor(torch.ones(batch, seq, dtype=torch.long), n_heads, torch.float32)
    assert bloom.shape == (batch * n_heads, 1, seq)
    bloom = bloom.view(batch, n_heads, 1, seq)                 # (batch, heads, query broadcast, key)
    slopes = rope.alibi_slopes(n_heads)
    rows = torch.arange(seq, dtype=torch.float32)
    shifted = bloom - slopes[None, :, None, None] * rows[None, None, :, None]   # minus slope*i per query row
    # slope*j - slope*i rounds differently from -slope*(i-j): allclose, not equal
    torch.testing.assert_close(shifted[0].masked_fill(future, float("-inf")), bias, rtol=1e-6, atol=1e-6)
    scores = torch.randn(n_heads, seq, seq, generator=torch.Generator().manual_seed(n_heads))
    ours = torch.softmax(scores + bias, dim=-1)
    theirs = torch.softmax((scores + bloom[1]).masked_fill(future, float("-inf")), dim=-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Bad input: one line that says what to do
# ---------------------------------------------------------------------------
def _one_line(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_unknown_rope_type_lists_the_supported_ones():
    config = SimpleNamespace(hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
                             rope_parameters={"rope_type": "longrope", "rope_theta": 10_000.0})
    with pytest.raises(LabkitError) as excinfo:
        rope.inv_freq(config)
    _one_line(excinfo, "'longrope'", "default, linear, dynamic, yarn, llama3")


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn", "llama3"])
@pytest.mark.parametrize("factor", [0, -2.0, "4"])
def test_non_positive_factor(kind, factor):
    config = SimpleNamespace(hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
                             rope_parameters={"rope_type": kind, "rope_theta": 10_000.0, "factor": factor,
                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0})
    with pytest.raises(LabkitError) as excinfo:
        rope.inv_freq(config)
    _one_line(excinfo, kind, "factor")


@pytest.mark.parametrize("kind", ["linear", "dynamic", "llama3"])
def test_missing_factor(kind):
    config = SimpleNamespace(hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
                             rope_parameters={"rope_type": kind})
    with pytest.raises(LabkitError) as excinfo:
        rope.inv_freq(config)
    _one_line(excinfo, "factor")


def test_llama3_needs_its_band_factors():
    base = {"rope_type": "llama3", "factor": 8.0}
    for params, needle in [(base, "low_freq_factor"), ({**base, "low_freq_factor": 1.0}, "high_freq_factor"),
                           ({**base, "low_freq_factor": 4.0, "high_freq_factor": 4.0}, "high_freq_factor >")]:
        config = SimpleNamespace(hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
                                 rope_parameters=params)
        with pytest.raises(LabkitError) as excinfo:
            rope.inv_freq(config)
        _one_line(excinfo, needle)


@pytest.mark.parametrize("n_heads", [0, -1, 2.5, True])
def test_alibi_rejects_bad_head_counts(n_heads):
    with pytest.raises(LabkitError) as excinfo:
        rope.alibi_slopes(n_heads)
    _one_line(excinfo, "n_heads")
    with pytest.raises(LabkitError):
        rope.alibi_bias(n_heads, 8)


def test_alibi_bias_rejects_empty_sequence():
    with pytest.raises(LabkitError) as excinfo:
        rope.alibi_bias(4, 0)
    _one_line(excinfo, "seq_len")


def test_public_names():
    assert set(rope.__all__) <= set(dir(rope))
    assert rope.ROPE_TYPES == ("default", "linear", "dynamic", "yarn", "llama3")

"""Position encodings from scratch: RoPE, its long-context variants, and ALiBi (lab 11).

Attention by itself cannot tell token 3 from token 300. Two ways to tell it,
both built here and checked against transformers:

* **RoPE** (Su et al. 2021, "RoFormer") -- rotate each pair of query/key
  channels by an angle ``position * inv_freq[i]``. The dot product of a rotated
  query and a rotated key then depends only on their *distance*. Pair ``i``
  turns at ``inv_freq[i] = theta ** (-2i / dim)``: the first pairs spin fast
  (they resolve nearby tokens), the last ones slowly (they carry long range).
  `inv_freq` + `cos_sin` + `apply_rope` are transformers' Llama rotary path.
* **Longer context than the model was trained on** -- positions past the
  pretraining length give angles the slow pairs never saw. Each method changes
  ``inv_freq``, i.e. which frequencies get slowed down and by how much:

  - ``linear`` -- position interpolation (Chen et al. 2023; kaiokendev): divide
    *every* frequency by ``factor``, so ``factor * L`` positions span the
    angles that ``L`` positions spanned in pretraining;
  - ``dynamic`` -- dynamic NTK (bloc97's NTK-aware scaling, made dynamic by
    emozilla): raise ``theta`` instead, which leaves the fast pairs almost
    untouched and slows the slow ones most, and only once the sequence is
    longer than the pretraining length;
  - ``yarn`` -- YaRN (Peng et al. 2023): per pair, keep the frequencies that
    turn many times within the pretraining context, interpolate those that
    turn less than once, ramp linearly in between; plus a temperature on the
    attention logits (``attention_scaling``, applied to cos and sin);
  - ``llama3`` -- Meta's Llama 3.1 scaling: the same three bands as YaRN, cut
    by wavelength, with a smooth blend in the middle band and no temperature.

* **ALiBi** (Press et al. 2022) -- no rotation at all: add ``-slope * distance``
  to the attention logits, one geometric slope per head (`alibi_slopes`,
  `alibi_bias`).

Every ``inv_freq`` variant returns exactly (``torch.equal``) what
``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS[rope_type](config, device,
seq_len=...)`` returns for the same config (``default``: what
``LlamaRotaryEmbedding.compute_default_rope_parameters`` returns, as transformers
5.x keeps no ``"default"`` entry in that table): the same float operations in
the same order. `cos_sin` and `apply_rope` are bit-equal to
``LlamaRotaryEmbedding.forward`` and ``apply_rotary_pos_emb``; `alibi_slopes` to
BLOOM's slopes. Built in lab 11, sections "RoPE from scratch", "RoPE variants"
and "ALiBi".
"""
from __future__ import annotations

import math

import torch

from .errors import require

__all__ = ["ROPE_TYPES", "rope_config", "inv_freq", "default_inv_freq", "linear_inv_freq", "dynamic_inv_freq",
           "yarn_inv_freq", "yarn_attention_factor", "llama3_inv_freq", "cos_sin", "rotate_half", "apply_rope",
           "alibi_slopes", "alibi_bias"]

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
DEFAULT_THETA = 10_000.0      # transformers' RotaryEmbeddingConfigMixin.default_theta


# ---------------------------------------------------------------------------
# Reading a config the way transformers does
# ---------------------------------------------------------------------------
def _check_factor(factor, rope_type: str) -> None:
    require(isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 0,
            f"rope type {rope_type!r} needs a positive scaling factor, got factor={factor!r}: "
            f"set rope_parameters['factor'] to e.g. 2.0 (twice the pretraining length)")


def rope_config(config) -> dict:
    """The RoPE settings of a transformers config as one flat dict, read without changing ``config``.

    Reads what transformers' ``standardize_rope_params`` would, in the same order
    of priority: ``config.rope_parameters`` (transformers >= 4.56), else a legacy
    ``config.rope_scaling`` dict (``{"type": "linear", "factor": 2.0}`` -- old
    checkpoints; transformers 5 still accepts it as a constructor argument and
    moves it into ``rope_parameters``); ``rope_theta`` from that dict, else
    ``config.rope_theta``, else 10000; ``partial_rotary_factor`` likewise (default
    1.0); ``original_max_position_embeddings`` from the config attribute (Phi-3
    keeps it there), else the dict, else ``max_position_embeddings``. The rotary
    dimension is ``int(head_dim * partial_rotary_factor)`` with ``head_dim`` from
    ``config.head_dim`` or ``hidden_size // num_attention_heads``.
    Built in lab 11, section "RoPE variants".
    """
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    params = dict(params)
    rope_type = params.get("rope_type", params.get("type", "default"))
    require(rope_type in ROPE_TYPES,
            f"unknown rope type {rope_type!r}: use one of {', '.join(ROPE_TYPES)}")
    theta = params.get("rope_theta")
    if theta is None:
        theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = getattr(config, "default_theta", DEFAULT_THETA)
    partial = params.get("partial_rotary_factor")
    if partial is None:
        partial = getattr(config, "partial_rotary_factor", None)
    if partial is None:
        partial = 1.0
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    max_pos = getattr(config, "max_position_embeddings", None)
    original = (getattr(config, "original_max_position_embeddings", None)
                or params.get("original_max_position_embeddings") or max_pos)
    params.update(rope_type=rope_type, rope_theta=theta, partial_rotary_factor=partial, head_dim=head_dim,
                  dim=int(head_dim * partial), max_position_embeddings=max_pos,
                  original_max_position_embeddings=original)
    return params


def inv_freq(config, seq_len=None, device=None) -> tuple[torch.Tensor, float]:
    """``(inv_freq, attention_scaling)`` for a transformers config -- what its rotary embedding would use.

    Dispatches on the rope type (``default``, ``linear``, ``dynamic``, ``yarn``,
    ``llama3``) to the function of that name below. ``inv_freq`` is float32 of
    shape ``(dim // 2,)``; ``attention_scaling`` multiplies cos and sin (only
    YaRN's is not 1.0). ``seq_len`` matters only for ``dynamic``: the frequencies
    follow the current sequence length once it passes ``max_position_embeddings``.
    Equal (``torch.equal``) to ``ROPE_INIT_FUNCTIONS[rope_type](config, device,
    seq_len=seq_len)``. ``default`` honours ``partial_rotary_factor`` as GPT-NeoX's
    ``compute_default_rope_parameters`` does (Llama's ignores it; with the factor
    at 1.0 the two agree). Built in lab 11, section "RoPE variants".
    """
    p = rope_config(config)
    kind, dim, theta = p["rope_type"], p["dim"], p["rope_theta"]
    if kind == "default":
        return default_inv_freq(dim, theta, device), 1.0
    require("factor" in p or kind == "yarn",
            f"rope type {kind!r} needs rope_parameters['factor'] (how many times the pretraining length to reach)")
    if kind == "linear":
        return linear_inv_freq(dim, theta, p["factor"], device), 1.0
    if kind == "dynamic":
        return dynamic_inv_freq(dim, theta, p["factor"], p["max_position_embeddings"], seq_len, device), 1.0
    if kind == "yarn":
        factor = p.get("factor")
        if factor is None:      # DeepSeek-V3 style: the factor is the ratio of the two context lengths
            factor = p["max_position_embeddings"] / p["original_max_position_embeddings"]
        freqs = yarn_inv_freq(dim, theta, factor, p["original_max_position_embeddings"],
                              beta_fast=p.get("beta_fast"), beta_slow=p.get("beta_slow"),
                              truncate=p.get("truncate", True), device=device)
        scaling = yarn_attention_factor(factor, p.get("attention_factor"), p.get("mscale"), p.get("mscale_all_dim"))
        return freqs, scaling
    for key in ("low_freq_factor", "high_freq_factor"):
        require(key in p, f"rope type 'llama3' needs rope_parameters[{key!r}] (Llama 3.1 uses low 1.0, high 4.0)")
    return llama3_inv_freq(dim, theta, p["factor"], p["low_freq_factor"], p["high_freq_factor"],
                           p["original_max_position_embeddings"], device), 1.0


# ---------------------------------------------------------------------------
# One function per method
# ---------------------------------------------------------------------------
def default_inv_freq(dim: int, theta: float = DEFAULT_THETA, device=None) -> torch.Tensor:
    """Plain RoPE (Su et al. 2021): pair ``i`` of ``dim`` channels turns at ``theta ** (-2i / dim)`` per position.

    A geometric ladder of frequencies, from 1 radian per token (pair 0) down to
    about ``1 / theta`` (the last pair): wavelengths from ``2 pi`` tokens to
    ``2 pi * theta``. Built in lab 11, section "RoPE from scratch".
    """
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
    return 1.0 / (theta ** exponents)


def linear_inv_freq(dim: int, theta: float, factor: float, device=None) -> torch.Tensor:
    """Position interpolation (Chen et al. 2023; kaiokendev): every frequency divided by ``factor``.

    The same as feeding position ``m / factor`` instead of ``m`` (``angle =
    position * inv_freq``): a ``factor`` times longer sequence is squeezed into
    the angle range seen in pretraining. Costs resolution on the fast pairs,
    which is why it needs a little fine-tuning. Built in lab 11, section "RoPE variants".
    """
    _check_factor(factor, "linear")
    return default_inv_freq(dim, theta, device) / factor


def dynamic_inv_freq(dim: int, theta: float, factor: float, max_position_embeddings: int, seq_len=None,
                     device=None) -> torch.Tensor:
    """Dynamic NTK scaling (bloc97's NTK-aware RoPE, made dynamic by emozilla): a larger ``theta``, only when needed.

    Raising the base by ``s ** (dim / (dim - 2))`` leaves pair 0 exactly as it was
    and slows the last pair by ``s`` -- high frequencies extrapolate, low ones
    interpolate, with no fine-tuning. ``s = factor * L / L_max - (factor - 1)``
    grows with the current length ``L`` (``seq_len``; at least
    ``max_position_embeddings``, where ``s = 1`` and nothing changes).
    ``seq_len`` may be an int or a 0-d tensor (as ``LlamaRotaryEmbedding`` passes
    it; then the arithmetic is float32, like transformers'). Built in lab 11, section "RoPE variants".
    """
    _check_factor(factor, "dynamic")
    require(dim > 2, f"rope type 'dynamic' needs a rotary dimension above 2, got {dim}: use a larger head_dim")
    if seq_len is None:
        seq_len = max_position_embeddings
    elif isinstance(seq_len, torch.Tensor):
        seq_len = torch.maximum(seq_len, torch.tensor(max_position_embeddings, dtype=seq_len.dtype,
                                                      device=seq_len.device))
    else:
        seq_len = max(seq_len, max_position_embeddings)
    theta = theta * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    return default_inv_freq(dim, theta, device)


def yarn_attention_factor(factor: float, attention_factor=None, mscale=None, mscale_all_dim=None) -> float:
    """YaRN's temperature (Peng et al. 2023): ``0.1 * ln(factor) + 1``, multiplied into cos and sin.

    Interpolated positions make attention logits flatter (more entropy); scaling
    q and k each by ``sqrt(1/t)`` -- here both cos and sin by this factor -- sharpens
    them back. An explicit ``attention_factor`` wins; with both ``mscale`` and
    ``mscale_all_dim`` (DeepSeek) it is the ratio of the two ``0.1 * m * ln(factor) + 1``.
    Built in lab 11, section "RoPE variants".
    """
    def mscale_of(scale, m=1):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is not None:
        return float(attention_factor)
    if mscale and mscale_all_dim:
        return float(mscale_of(factor, mscale) / mscale_of(factor, mscale_all_dim))
    return float(mscale_of(factor))


def yarn_inv_freq(dim: int, theta: float, factor: float, original_max_position_embeddings: int,
                  beta_fast=32, beta_slow=1, truncate: bool = True, device=None) -> torch.Tensor:
    """YaRN's "NTK-by-parts" frequencies (Peng et al. 2023): keep the fast pairs, interpolate the slow ones.

    A pair that turns more than ``beta_fast`` (32) times within the pretraining
    context already saw every angle: keep its frequency (extrapolate). A pair
    that turns fewer than ``beta_slow`` (1) times never saw a full turn: divide
    it by ``factor`` (interpolate, as `linear_inv_freq`). Pairs in between blend
    the two along a linear ramp over the pair index. ``beta_fast``/``beta_slow``
    of ``None`` or 0 mean the defaults, as in transformers (``x or 32``). With
    ``truncate`` the ramp ends are rounded out to whole pairs.
    Built in lab 11, section "RoPE variants".
    """
    _check_factor(factor, "yarn")
    beta_fast = beta_fast or 32
    beta_slow = beta_slow or 1

    def pair_turning(num_rotations):
        """The (fractional) pair index whose wavelength fits ``num_rotations`` times in the original context."""
        return (dim * math.log(original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (
            2 * math.log(theta))

    low, high = pair_turning(beta_fast), pair_turning(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001            # a ramp of width zero would divide by zero
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp.to(device=device, dtype=torch.float)     # 1: extrapolate (keep), 0: interpolate

    wavelength_scale = theta ** (torch.arange(0, dim, 2).to(device=device, dtype=torch.float) / dim)
    kept = 1.0 / wavelength_scale
    interpolated = 1.0 / (factor * wavelength_scale)
    return interpolated * (1 - keep) + kept * keep


def llama3_inv_freq(dim: int, theta: float, factor: float, low_freq_factor: float, high_freq_factor: float,
                    original_max_position_embeddings: int, device=None) -> torch.Tensor:
    """Llama 3.1's scaling (Meta 2024): three bands by wavelength, a smooth blend in the middle one.

    With ``L`` the pretraining context (8192 for Llama 3): wavelengths shorter
    than ``L / high_freq_factor`` (4) are kept; longer than ``L / low_freq_factor``
    (1) are divided by ``factor`` (8); in between, ``s = (L / wavelength - low) /
    (high - low)`` blends ``inv / factor`` (s = 0) into ``inv`` (s = 1). Like YaRN
    without the temperature, with the bands cut by wavelength instead of turns.
    Built in lab 11, section "RoPE variants".
    """
    _check_factor(factor, "llama3")
    require(high_freq_factor > low_freq_factor,
            f"rope type 'llama3' needs high_freq_factor > low_freq_factor, got {high_freq_factor} <= "
            f"{low_freq_factor}: Llama 3.1 uses low 1.0, high 4.0")
    inv = default_inv_freq(dim, theta, device)
    wavelength = 2 * math.pi / inv
    long_wave = original_max_position_embeddings / low_freq_factor        # longer: interpolate
    short_wave = original_max_position_embeddings / high_freq_factor      # shorter: keep
    scaled = torch.where(wavelength > long_wave, inv / factor, inv)
    smooth = (original_max_position_embeddings / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv / factor + smooth * inv
    middle = (wavelength >= short_wave) & (wavelength <= long_wave)
    return torch.where(middle, blended, scaled)


# ---------------------------------------------------------------------------
# Applying the rotation
# ---------------------------------------------------------------------------
def cos_sin(inv_freq: torch.Tensor, positions, attention_scaling: float = 1.0,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``position * inv_freq``, shape ``(*positions.shape, 2 * len(inv_freq))``, as Llama builds them.

    The angles are computed in float32 whatever ``dtype`` (bf16 angles would be
    off by whole radians at position 1000) and the table is written twice,
    ``[freqs, freqs]``: Llama rotates channel ``j`` with channel ``j + dim/2``
    (see `rotate_half`), not neighbours ``2j, 2j+1`` as the RoFormer paper does --
    the same rotation on a permuted layout. ``attention_scaling`` (YaRN's
    temperature) multiplies both. Equal to ``LlamaRotaryEmbedding.forward``.
    Built in lab 11, section "RoPE from scratch".
    """
    positions = torch.as_tensor(positions)
    freqs = positions[..., None].float() * inv_freq.to(device=positions.device, dtype=torch.float)
    angles = torch.cat((freqs, freqs), dim=-1)
    cos = angles.cos() * attention_scaling
    sin = angles.sin() * attention_scaling
    return cos.to(dtype), sin.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dim: the "sin" partner of each channel in a 2-D rotation.

    With ``x1`` and ``x2`` the two halves, ``x * cos + rotate_half(x) * sin`` turns
    each pair ``(x1[j], x2[j])`` by its angle. Built in lab 11, section "RoPE from scratch".
    """
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys ``(batch, heads, seq, head_dim)`` by cos/sin ``(batch, seq, head_dim)``.

    Only q and k are rotated, never v: the score ``q_m . k_n`` then depends on
    ``m - n`` alone (a rotation by ``m`` then the inverse of one by ``n``), which
    is the whole point of RoPE (Su et al. 2021). Equal to transformers'
    ``apply_rotary_pos_emb(q, k, cos, sin)`` (``unsqueeze_dim=1``: one table for all heads).
    Built in lab 11, section "RoPE from scratch".
    """
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


# ---------------------------------------------------------------------------
# ALiBi
# ---------------------------------------------------------------------------
def alibi_slopes(n_heads: int, device=None) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al. 2022): the geometric sequence ``2 ** (-8 i / n)``, ``i = 1..n``.

    Head 1 looks far back (its penalty grows slowly) ... head ``n`` looks at its
    neighbours (slope 1/256). For a head count that is not a power of two, the
    paper takes all ``2 ** floor(log2 n)`` slopes of the nearest power of two below,
    then the missing ones from the odd-numbered slopes of twice that count
    (``2 ** (-4 i / closest)``, ``i = 1, 3, 5, ...``) -- those sit between the ones
    already taken. float32, equal to the slopes in BLOOM's ``build_alibi_tensor``.
    Built in lab 11, section "ALiBi".
    """
    require(isinstance(n_heads, int) and not isinstance(n_heads, bool) and n_heads > 0,
            f"ALiBi needs a positive whole number of heads, got n_heads={n_heads!r}")
    closest = 2 ** math.floor(math.log2(n_heads))
    ratio = torch.full((), 2 ** (-8 / closest), device=device, dtype=torch.float32)
    slopes = torch.pow(ratio, torch.arange(1, 1 + closest, device=device, dtype=torch.int32))
    if closest != n_heads:
        extra_ratio = torch.full((), 2 ** (-8 / (2 * closest)), device=device, dtype=torch.float32)
        odd_powers = torch.arange(1, 1 + 2 * (n_heads - closest), 2, device=device, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_ratio, odd_powers)])
    return slopes


def alibi_bias(n_heads: int, seq_len: int, device=None) -> torch.Tensor:
    """The causal ALiBi bias to add to attention logits: ``(n_heads, seq_len, seq_len)``, float32.

    ``bias[h, i, j] = -slope[h] * (i - j)`` for keys ``j <= i`` and ``-inf`` for the
    future ``j > i``: no position embedding at all, just a penalty linear in the
    distance, which extrapolates to lengths never trained on (Press et al. 2022).

    BLOOM builds ``slope[h] * j`` instead (``build_alibi_tensor``: shape
    ``(batch * heads, 1, seq)``, one row broadcast over every query, ``j`` counting
    only unpadded keys) and applies the causal mask separately. The two differ
    by ``slope[h] * i``, a constant per query row, and softmax ignores a constant
    added to a row: same attention weights. Built in lab 11, section "ALiBi".
    """
    slopes = alibi_slopes(n_heads, device)
    require(isinstance(seq_len, int) and seq_len > 0, f"alibi_bias needs seq_len >= 1, got {seq_len!r}")
    pos = torch.arange(seq_len, device=device)
    distance = pos[:, None] - pos[None, :]                       # i - j, query i, key j
    bias = -slopes[:, None, None] * distance.to(torch.float32)
    return bias.masked_fill(distance < 0, float("-inf"))

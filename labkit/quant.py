"""Quantization from scratch: absmax int8, LLM.int8(), NF4, double quantization, a 4-bit linear layer.

Lab 05 builds each piece in the notebook and checks it against this module and
against `bitsandbytes`:

* **absmax int8** -- ``q = round(127 * x / absmax(x))``, one scale per tensor
  or one per row ("vector-wise");
* **LLM.int8()** -- vector-wise int8 matmul, except that the input columns
  holding a value of magnitude >= 6.0 (the "outlier features") are multiplied
  in 16-bit (Dettmers et al. 2022);
* **NF4** -- 16 levels at quantiles of a normal distribution, one fp32 absmax
  per block of 64 weights, two 4-bit codes per byte (Dettmers et al. 2023);
  bit-identical to ``bitsandbytes.functional.quantize_4bit(..., quant_type="nf4")``;
* **FP4** -- bitsandbytes' other 4-bit type (``quant_type="fp4"``): a sign bit and 3 bits
  of a tiny float, its 7 magnitudes E2M1-like values divided by 6; same blocks and packing,
  bit-identical too;
* **double quantization** -- the fp32 absmax constants themselves quantized to
  8 bits in blocks of 256 (bitsandbytes' ``compress_statistics=True``):
  4.5 -> ~4.127 bits per parameter;
* **Linear4bit** -- a frozen linear layer that stores the packed NF4 codes and
  dequantizes them to the compute dtype in every forward *and* backward, so
  no 16-bit copy of the weight is ever kept (QLoRA's base model);
* **quantize_model** -- swap a model's linear layers for labkit's or
  bitsandbytes' 4-bit layer;
* **merge_lora_4bit** -- fold LoRA adapters into a 4-bit base: dequantize,
  add ``s * B @ A`` in fp32, requantize (or keep the merged weight dense).

One deliberate difference from bitsandbytes: a NaN or inf in a tensor to
quantize is an error here. bitsandbytes propagates it without a word -- the
absmax of its block (row, tensor) becomes NaN/inf, so every value sharing that
scale comes back NaN -- while labkit names how many values, where, and asks
for the tensor to be cleaned or clipped first.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LabkitError

INT8_MAX = 127
LLM_INT8_THRESHOLD = 6.0
NF4_BLOCKSIZE = 64
DQ_BLOCKSIZE = 256
# The QLoRA paper's offset 1/2 (1 - 1/(2*15) + 1 - 1/(2*16)) = 0.96770833..., rounded to
# 7 digits as bitsandbytes generated its table (the rounded value reproduces it bit for bit).
NF4_OFFSET = 0.9677083
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_float(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise LabkitError(f"{what} needs a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise LabkitError(f"{what} needs a float32, bfloat16 or float16 tensor, got {x.dtype}")


def _listed(items: list[int], most: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:most])
    return shown + (f", ... ({len(items)} in all)" if len(items) > most else "")


def _check_finite(x: torch.Tensor, what: str, *, blocksize: int | None = None, dim: int | None = None,
                  allow_inf: bool = False) -> None:
    """Refuse NaN/inf: one of them makes the absmax of its whole block (row, tensor) NaN/inf.

    bitsandbytes quantizes such a tensor without a word: the block's absmax becomes NaN (or
    inf, and 0 x inf = NaN), so every value sharing that scale dequantizes to NaN. Here the
    learner is told how many values, in which blocks (``blocksize``: blocks of the flattened
    tensor), rows (``dim``: one scale per slice along ``dim``) or tensor (neither), and where
    the first one is. ``allow_inf``: only NaN is refused (LLM.int8 multiplies +-inf outliers in
    16-bit, where they propagate as in any float matmul).
    """
    bad = torch.isnan(x) if allow_inf else ~torch.isfinite(x)
    if not bool(bad.any()):
        return
    n_bad = int(bad.sum())
    first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    kind = "NaN" if allow_inf else "non-finite (NaN/inf)"
    plural = "s" if n_bad > 1 else ""
    if blocksize is not None:
        blocks = torch.unique(torch.nonzero(bad.reshape(-1)).flatten() // blocksize).tolist()
        where = (f"in block{'s' if len(blocks) > 1 else ''} {_listed(blocks)} (blocks of {blocksize} values "
                 f"of the flattened tensor; each shares one absmax)")
    elif dim is not None and x.dim() > 1:
        d = dim % x.dim()
        rest = bad.any(dim=d)
        groups = [tuple(int(i) for i in g) for g in torch.nonzero(rest).tolist()]
        label = "row" if x.dim() == 2 else "slice"
        names = [str(g[0]) if len(g) == 1 else str(g) for g in groups]
        where = f"in {label}{'s' if len(groups) > 1 else ''} {_listed(names)} (one absmax per {label})"
    else:
        where = "in a tensor that shares one absmax"
    raise LabkitError(f"{what}: {n_bad} {kind} value{plural} {where}, the first at index {first}: the scale "
                      f"becomes NaN/inf and every value sharing it dequantizes to NaN (bitsandbytes would do "
                      f"this silently); clean or clip the tensor first, e.g. torch.nan_to_num(x) or x.clamp(-c, c)")


# ---------------------------------------------------------------------------
# absmax int8: per tensor and vector-wise
# ---------------------------------------------------------------------------
def absmax_quantize(x: torch.Tensor, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8: ``q = round(x * 127 / absmax)``. Returns ``(q int8, absmax float32)``.

    ``dim=None``: one absmax for the whole tensor. ``dim=-1``: one per row
    ("vector-wise", what ``bitsandbytes.functional.int8_vectorwise_quant``
    computes; absmax keeps the reduced dimension, so it broadcasts back).
    A NaN or inf would turn its whole row (tensor) to NaN: a `LabkitError` says where.
    """
    _check_float(x, "absmax_quantize")
    _check_finite(x, "absmax_quantize", dim=dim)
    if dim is None:
        absmax = x.abs().amax().float()
    else:
        absmax = x.abs().amax(dim=dim, keepdim=True).float()
    scale = torch.where(absmax > 0, INT8_MAX / absmax, torch.zeros_like(absmax))
    q = torch.round(x * scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, absmax


def absmax_dequantize(q: torch.Tensor, absmax: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Undo `absmax_quantize`: ``q * absmax / 127``."""
    return (q.float() * (absmax / INT8_MAX)).to(dtype)


def int8_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` with both operands vector-wise int8 (a scale per row of x, one per row of w).

    The integer products are accumulated exactly (int32 on an int8 tensor
    core; here in float64, which is exact for these sizes) and rescaled once:
    ``out[i, j] = acc[i, j] * absmax_x[i] * absmax_w[j] / 127^2``.
    """
    _check_float(x, "int8_matmul")
    _check_float(w, "int8_matmul")
    _check_finite(x, "int8_matmul (input x)", dim=-1)
    _check_finite(w, "int8_matmul (weight w)", dim=-1)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    qx, sx = absmax_quantize(x2, dim=-1)
    qw, sw = absmax_quantize(w, dim=-1)
    acc = qx.double() @ qw.double().T
    out = acc * (sx.double() * sw.double().T) / INT8_MAX**2
    return out.to(x.dtype).reshape(*shape[:-1], w.shape[0])


def outlier_columns(x: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD) -> torch.Tensor:
    """Indices of the feature columns (last dim) where any value has magnitude >= threshold."""
    x2 = x.reshape(-1, x.shape[-1])
    return torch.nonzero((x2.abs() >= threshold).any(dim=0)).flatten()


def llm_int8_matmul(x: torch.Tensor, w: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD,
                    return_outliers: bool = False):
    """LLM.int8(): ``x @ w.T`` as an int8 matmul plus a 16-bit matmul over the outlier columns.

    1. outlier columns ``O``: input features where some value has ``|x| >= threshold``;
    2. the rest, ``x[:, ~O] @ w[:, ~O].T``, runs vector-wise in int8. As in
       bitsandbytes, each row's absmax is taken after the outlier *values* are
       removed, so it is below the threshold;
    3. ``x[:, O] @ w[:, O].T`` runs in x's dtype (a handful of columns);
    4. the two add up.
    """
    _check_float(x, "llm_int8_matmul")
    _check_float(w, "llm_int8_matmul")
    _check_finite(x, "llm_int8_matmul (input x)", dim=-1, allow_inf=True)   # +-inf: an outlier, in 16-bit
    _check_finite(w, "llm_int8_matmul (weight w)", dim=-1)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    cols = outlier_columns(x2, threshold)
    regular = x2.masked_fill(x2.abs() >= threshold, 0)      # row scales without the outlier values
    qx, sx = absmax_quantize(regular, dim=-1)
    qx[:, cols] = 0                                         # whole outlier columns leave the int8 part
    qw, sw = absmax_quantize(w, dim=-1)
    acc = qx.double() @ qw.double().T
    out = acc * (sx.double() * sw.double().T) / INT8_MAX**2
    out = out.to(x.dtype) + x2[:, cols] @ w[:, cols].to(x.dtype).T
    out = out.reshape(*shape[:-1], w.shape[0])
    return (out, cols) if return_outliers else out


# ---------------------------------------------------------------------------
# NF4: NormalFloat levels, blockwise absmax, two codes per byte
# ---------------------------------------------------------------------------
def normal_float_levels(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels: normal quantiles, normalised to [-1, 1], with an exact zero.

    8 positive levels at the quantiles ``linspace(offset, 0.5, 9)[:-1]`` and 7
    negative ones at ``linspace(offset, 0.5, 8)[:-1]`` (mirrored), plus 0: an
    asymmetric type, so that zero is exact and all 16 codes are used. Computed
    the way bitsandbytes generated its table (float32 quantile points, float64
    inverse normal CDF, float32 result divided by its maximum).
    """
    ppf = lambda p: torch.special.ndtri(p.double())  # noqa: E731 -- inverse normal CDF
    positive = ppf(torch.linspace(offset, 0.5, 9)[:-1])
    negative = -ppf(torch.linspace(offset, 0.5, 8)[:-1])
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float()
    levels = levels.sort().values
    return levels / levels.max()


NF4_LEVELS = normal_float_levels()


def _check_blocks(numel: int, blocksize: int, what: str) -> None:
    if not isinstance(blocksize, int) or isinstance(blocksize, bool) or blocksize < 2 or blocksize % 2:
        raise LabkitError(f"blocksize must be a positive even integer, got {blocksize!r}")
    if numel == 0:
        raise LabkitError(f"cannot {what} an empty tensor")


def _n_blocks(numel: int, blocksize: int) -> int:
    """Blocks of a flattened tensor: the last one may be partial (it gets its own absmax)."""
    return -(-numel // blocksize)


QUANT_STORAGE = (torch.uint8, torch.int8, torch.float16, torch.bfloat16, torch.float32, torch.int32)


def _check_storage(quant_storage: torch.dtype, nbytes: int) -> None:
    if quant_storage not in QUANT_STORAGE:
        raise LabkitError(f"quant_storage must be one of {', '.join(str(d) for d in QUANT_STORAGE)}, "
                          f"got {quant_storage!r}")
    size = torch.empty((), dtype=quant_storage).element_size()
    if nbytes % size:
        raise LabkitError(f"{nbytes:,} packed bytes cannot be viewed as {quant_storage} ({size} bytes each); "
                          f"use quant_storage=torch.uint8 or a tensor whose size fills whole {quant_storage} values")


def pack_4bit(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte: the first of each pair in the HIGH nibble."""
    codes = codes.reshape(-1).to(torch.uint8)
    return (codes[0::2] << 4) | codes[1::2]


def unpack_4bit(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_4bit`: a flat tensor of codes 0..15 (int64, ready to index)."""
    packed = packed.reshape(-1)
    return torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1).long()


def nf4_quantize(w: torch.Tensor, blocksize: int = NF4_BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4-quantize ``w``: returns ``(packed uint8 of numel/2, absmax float32 of numel/blocksize)``.

    Blocks are consecutive ``blocksize`` values of the flattened tensor. In
    each block: ``absmax``, ``x / absmax`` in [-1, 1], the nearest NF4 level
    (an exact midpoint goes to the lower level), codes packed two per byte.
    Bit-identical to bitsandbytes (whose packed tensor is shaped (numel/2, 1)) on finite
    tensors. A NaN or inf is where the two part: bitsandbytes propagates it silently (the
    block's absmax becomes NaN/inf, so all ``blocksize`` values of the block dequantize to
    NaN); this teaching copy raises a `LabkitError` naming how many values, which blocks and
    the first index, and asks for the tensor to be cleaned or clipped first.
    """
    return quantize_4bit(w, blocksize, "nf4")


def nf4_dequantize(packed: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = NF4_BLOCKSIZE,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Undo `nf4_quantize`: ``level[code] * absmax`` in float32, then cast to ``dtype``."""
    return dequantize_4bit(packed, absmax, shape, blocksize, "nf4", dtype)


# ---------------------------------------------------------------------------
# FP4: bitsandbytes' 4-bit float
# ---------------------------------------------------------------------------
def fp4_levels() -> torch.Tensor:
    """The 16 FP4 values of bitsandbytes, **in code order** (code = sign bit, then 3 bits).

    A tiny float: 1 sign bit, 2 exponent bits, 1 mantissa bit. The 3 magnitude bits
    ``0b000 .. 0b111`` mean 0, 0.0625 (the one subnormal), 8, 12, 4, 6, 2, 3 -- divided by the
    largest, 12, so the type covers [-1, 1] like NF4; the sign bit (8) negates (code 8 is +0
    again). Evenly spaced in log scale, not in probability as NF4 is: the QLoRA paper
    (Dettmers et al., 2023) compares the two. Lab 05, section 4 builds it.
    """
    magnitudes = [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]
    return torch.tensor([m / 12 for m in magnitudes] + [-m / 12 if m else 0.0 for m in magnitudes],
                        dtype=torch.float32)


FP4_LEVELS = fp4_levels()
QUANT_TYPES = ("nf4", "fp4")


def _byte_pairs(levels: torch.Tensor) -> torch.Tensor:
    """(256, 2): the two levels packed in each possible byte (high nibble first)."""
    return torch.stack([levels[torch.arange(256) >> 4], levels[torch.arange(256) & 15]], dim=1)


_PAIRS = {"nf4": _byte_pairs(NF4_LEVELS), "fp4": _byte_pairs(FP4_LEVELS)}


def levels_4bit(quant_type: str = "nf4") -> torch.Tensor:
    """The code book of a 4-bit type: value of code 0..15 (NF4 sorted, FP4 in bitsandbytes' order)."""
    if quant_type == "nf4":
        return NF4_LEVELS
    if quant_type == "fp4":
        return FP4_LEVELS
    raise LabkitError(f"unknown 4-bit type {quant_type!r}; use one of {', '.join(QUANT_TYPES)}")


def quantize_4bit(w: torch.Tensor, blocksize: int = NF4_BLOCKSIZE, quant_type: str = "nf4",
                  quant_storage: torch.dtype = torch.uint8) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax + nearest level of a 4-bit code book; ``(packed, fp32 absmax)``.

    The nearest level is found on the *sorted* levels (an exact midpoint goes to the lower
    one), then mapped back to its code: for NF4 the order is the identity, for FP4 it is
    not. Bit-identical to ``bitsandbytes.functional.quantize_4bit(w, blocksize, quant_type=...,
    quant_storage=...)`` on finite tensors, including bitsandbytes' handling of sizes that are
    not a multiple of ``blocksize`` (the last, partial block gets its own absmax) and of an odd
    number of values (the last byte's low nibble is the code of 0).

    ``quant_storage``: the dtype the packed bytes are *viewed* as (not converted to), as in
    bitsandbytes; FSDP-QLoRA stores them as bf16 so that every parameter of a layer shares one
    dtype and can be flattened into one shard. The values are the same bytes either way.
    """
    levels = levels_4bit(quant_type)
    name = f"{quant_type}_quantize"
    _check_float(w, name)
    _check_blocks(w.numel(), blocksize, f"{quant_type.upper()}-quantize")
    _check_storage(quant_storage, -(-w.numel() // 2))
    _check_finite(w, name, blocksize=blocksize)
    flat = w.reshape(-1).float()
    full = flat.numel() - flat.numel() % blocksize
    blocks = flat[:full].view(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1), -1, 1).reshape(-1)
    if full < flat.numel():                          # the partial last block (bitsandbytes divides here)
        tail_max = flat[full:].abs().amax().clamp(min=1e-38)
        absmax = torch.cat([absmax, tail_max.reshape(1)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / tail_max, -1, 1)])
    if scaled.numel() % 2:                           # an odd count: pad one 0 to fill the last byte
        scaled = F.pad(scaled, (0, 1))
    order = torch.argsort(levels)                  # code of the i-th smallest level (FP4: +0 and -0 tie)
    ordered = levels[order]
    midpoints = (ordered[:-1] + ordered[1:]) / 2
    rank = torch.bucketize(scaled, midpoints.to(w.device))   # x == midpoint -> lower level
    packed = pack_4bit(order.to(w.device)[rank])
    return (packed if quant_storage == torch.uint8 else packed.view(quant_storage)), absmax


def dequantize_4bit(packed: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = NF4_BLOCKSIZE,
                    quant_type: str = "nf4", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Undo `quantize_4bit`: ``level[code] * absmax`` in float32, then cast to ``dtype``.

    ``packed`` may be stored as any ``quant_storage`` dtype: its bytes are read as uint8."""
    levels_4bit(quant_type)                                    # an unknown type: one line, here
    pairs = _PAIRS[quant_type]
    shape = torch.Size(shape)
    n = shape.numel()
    _check_blocks(n, blocksize, f"{quant_type.upper()}-dequantize")
    if packed.dtype != torch.uint8:
        packed = packed.reshape(-1).view(torch.uint8)
    if packed.numel() != -(-n // 2) or absmax.numel() != _n_blocks(n, blocksize):
        raise LabkitError(f"packed ({packed.numel():,} bytes) and absmax ({absmax.numel():,} blocks) "
                          f"do not describe a tensor of shape {tuple(shape)} in blocks of {blocksize}")
    # one lookup per byte: entry b of the table holds (level[b >> 4], level[b & 15])
    values = pairs.to(packed.device).index_select(0, packed.reshape(-1).long()).reshape(-1)[:n]
    full = n - n % blocksize
    absmax = absmax.float()
    out = (values[:full].view(-1, blocksize) * absmax[: full // blocksize].view(-1, 1)).reshape(-1)
    if full < n:
        out = torch.cat([out, values[full:] * absmax[-1]])
    return out.to(dtype).reshape(shape)


def fp4_quantize(w: torch.Tensor, blocksize: int = NF4_BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """FP4-quantize ``w`` (bitsandbytes ``quant_type="fp4"``): `quantize_4bit` with the FP4 code book."""
    return quantize_4bit(w, blocksize, "fp4")


def fp4_dequantize(packed: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = NF4_BLOCKSIZE,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Undo `fp4_quantize`."""
    return dequantize_4bit(packed, absmax, shape, blocksize, "fp4", dtype)


# ---------------------------------------------------------------------------
# Double quantization: the absmax constants in 8 bits
# ---------------------------------------------------------------------------
def dynamic_map(max_exponent_bits: int = 7, total_bits: int = 8, signed: bool = True) -> torch.Tensor:
    """bitsandbytes' 8-bit "dynamic tree" code (``create_dynamic_map``): 256 sorted values in [-1, 1].

    Each value is ``+-10^e * m``: a decimal exponent e in ``-(max_exponent_bits-1)..0`` and a
    fraction m in (0.1, 1). With the defaults, exponent -6 gets 1 fraction value per sign,
    exponent 0 gets 64: dense near 0, coarse near 1, like a float, with 0 and 1 exact
    (Dettmers 2016, "8-bit approximations for parallelism in deep learning"). Bits left over
    when ``max_exponent_bits < total_bits - 1`` give the last exponent extra fractions. With
    ``total_bits < 8`` the 2^total_bits values are padded with zeros to 256, as bitsandbytes
    does (the table is always indexed by a byte).
    """
    if not (isinstance(total_bits, int) and 2 <= total_bits <= 8):
        raise LabkitError(f"total_bits must be an integer in 2..8, got {total_bits!r}")
    if not (isinstance(max_exponent_bits, int) and max_exponent_bits >= 1):
        raise LabkitError(f"max_exponent_bits must be a positive integer, got {max_exponent_bits!r}")
    non_sign_bits = total_bits - 1
    values = []

    def add(items: int, scale: float) -> None:
        edges = torch.linspace(0.1, 1, items, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0            # fraction values: bin centres in (0.1, 1)
        values.extend((scale * means).tolist())
        if signed:
            values.extend((-scale * means).tolist())

    for i in range(max_exponent_bits):
        items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                    else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        add(items, 10 ** (-(max_exponent_bits - 1) + i))
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    if extra > 0:
        add(extra + 1, 10 ** (-(max_exponent_bits - 1) + max_exponent_bits - 1))
    values += [0.0, 1.0]
    if len(values) != 2**total_bits:
        raise LabkitError(f"max_exponent_bits={max_exponent_bits} does not fill {total_bits} bits "
                          f"({len(values)} values instead of {2**total_bits}); bitsandbytes refuses it too")
    values += [0.0] * (256 - len(values))
    return torch.tensor(sorted(values), dtype=torch.float32)


DYNAMIC_MAP = dynamic_map()


def blockwise_quantize(x: torch.Tensor, code: torch.Tensor = DYNAMIC_MAP,
                       blocksize: int = DQ_BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit blockwise quantization with a code book: ``(uint8 indices, absmax per block)``.

    Each value is divided by its block's absmax and mapped to the nearest code
    value (a tie goes to the lower one). A last, shorter block is allowed: the
    number of blocks of a weight matrix rarely divides by 256. NaN/inf: a `LabkitError`
    (bitsandbytes would silently make the whole block NaN).

    A known quirk of bitsandbytes' CPU kernel (0.50): it searches the 256-entry code book
    approximately, so about 1% of its indices are one step off; where they differ, this exact
    search picks the code value nearer the input (tests/test_quant.py shows both). The 4-bit
    NF4/FP4 quantizers have no such quirk: there labkit and bitsandbytes are bit-identical.
    """
    _check_float(x, "blockwise_quantize")
    _check_finite(x, "blockwise_quantize", blocksize=blocksize)
    flat = x.reshape(-1).float()
    n = flat.numel()
    n_blocks = -(-n // blocksize)
    padded = F.pad(flat, (0, n_blocks * blocksize - n)).view(n_blocks, blocksize)
    absmax = padded.abs().amax(dim=1)
    normed = (padded / absmax.clamp(min=1e-38).unsqueeze(1)).reshape(-1)[:n]
    code = code.to(x.device)
    right = torch.searchsorted(code, normed).clamp(1, code.numel() - 1)   # first code >= value
    left = right - 1
    pick_right = (code[right] - normed).abs() < (normed - code[left]).abs()
    return torch.where(pick_right, right, left).to(torch.uint8).reshape(x.shape), absmax


def blockwise_dequantize(q: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor = DYNAMIC_MAP,
                         blocksize: int = DQ_BLOCKSIZE) -> torch.Tensor:
    """Undo `blockwise_quantize` (float32)."""
    values = code.to(q.device)[q.reshape(-1).long()]
    scale = absmax.repeat_interleave(blocksize)[: values.numel()]
    return (values * scale).reshape(q.shape)


@dataclass
class DoubleQuant:
    """Quantized absmax constants: ``absmax ~ code[codes] * absmax2[block] + offset``."""

    codes: torch.Tensor     # uint8, one per first-level block
    absmax2: torch.Tensor   # float32, one per block of `blocksize` constants
    offset: torch.Tensor    # float32 scalar: the mean, subtracted first (absmax is all positive)
    blocksize: int = DQ_BLOCKSIZE

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + 4 * self.absmax2.numel() + 4


def double_quantize(absmax: torch.Tensor, blocksize: int = DQ_BLOCKSIZE) -> DoubleQuant:
    """Quantize NF4's fp32 absmax constants to 8 bits (bitsandbytes' ``compress_statistics=True``).

    The constants are all positive, so their mean is subtracted first to use
    both halves of the signed 8-bit code; then blockwise dynamic 8-bit.
    """
    if absmax.dtype != torch.float32:
        raise LabkitError(f"double_quantize expects the float32 absmax of nf4_quantize, got {absmax.dtype}")
    offset = absmax.mean()
    codes, absmax2 = blockwise_quantize(absmax - offset, DYNAMIC_MAP, blocksize)
    return DoubleQuant(codes, absmax2, offset, blocksize)


def double_dequantize(dq: DoubleQuant) -> torch.Tensor:
    """The float32 absmax constants back (approximately) from a `DoubleQuant`."""
    return blockwise_dequantize(dq.codes, dq.absmax2, DYNAMIC_MAP, dq.blocksize) + dq.offset


def bits_per_param(blocksize: int = NF4_BLOCKSIZE, double_quant: bool = False,
                   dq_blocksize: int = DQ_BLOCKSIZE, code_bits: int = 4) -> float:
    """Storage per weight: ``4 + 32/64 = 4.5`` bits; with double quantization
    ``4 + 8/64 + 32/(64*256) = 4.127`` (the per-tensor offset is negligible)."""
    if not double_quant:
        return code_bits + 32 / blocksize
    return code_bits + 8 / blocksize + 32 / (blocksize * dq_blocksize)


def nf4_nbytes(numel: int, blocksize: int = NF4_BLOCKSIZE, double_quant: bool = False,
               dq_blocksize: int = DQ_BLOCKSIZE) -> int:
    """Exact bytes of one NF4 tensor: packed codes + absmax (+ second-level constants and offset)."""
    _check_blocks(numel, blocksize, "size")
    blocks = _n_blocks(numel, blocksize)
    codes = -(-numel // 2)
    if not double_quant:
        return codes + 4 * blocks
    return codes + blocks + 4 * -(-blocks // dq_blocksize) + 4


# ---------------------------------------------------------------------------
# A 4-bit linear layer (QLoRA's frozen base)
# ---------------------------------------------------------------------------
class _NF4Linear(torch.autograd.Function):
    """``y = x @ W.T + b`` where W exists only during the call.

    Forward and backward each dequantize W from its 4-bit codes; nothing of W
    is saved for backward. (A plain ``F.linear(x, dequantize(...))`` would let
    autograd keep the 16-bit W of every layer until backward: the memory
    QLoRA exists to save.) The weight and bias are frozen; x gets a gradient,
    so LoRA adapters in *earlier* layers still learn.
    """

    @staticmethod
    def forward(ctx, x, layer, bias):
        ctx.layer = layer
        ctx.has_bias_grad = bias is not None and bias.requires_grad
        return F.linear(x, layer.dequantize(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_out):
        grad_x = grad_out @ ctx.layer.dequantize(grad_out.dtype) if ctx.needs_input_grad[0] else None
        grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if ctx.has_bias_grad else None
        return grad_x, None, grad_b


class QuantizedWeightError(LabkitError, AttributeError):
    """Raised for ``Linear4bit.weight``: there is no dense weight to read or merge into.

    Also an ``AttributeError``, so ``hasattr(layer, "weight")`` is simply False."""


class Linear4bit(nn.Module):
    """A frozen linear layer stored as NF4 or FP4 (+ optional double-quantized absmax).

    ``forward(x)`` casts x to ``compute_dtype`` (None: keep x's dtype, as
    bitsandbytes does for fp32/bf16 inputs), dequantizes W to that dtype,
    multiplies, and casts the result back to x's dtype -- the same steps as
    ``bitsandbytes.nn.Linear4bit`` on CPU, so the outputs are bit-identical.

    The quantization state (absmax, and with double quantization its codes' scales and offset)
    stays float32 under ``.to(torch.bfloat16)`` / ``.half()``, as bitsandbytes keeps its
    ``quant_state``: casting it would change every dequantized weight by up to ~0.4%. The packed
    codes are never cast either (with ``quant_storage=torch.bfloat16`` they are bytes viewed as
    bf16, as in bitsandbytes; a cast would destroy them). The bias does follow the cast, and
    ``dtype`` sets it when the layer is rebuilt empty to load a state dict (``load_state_dict``
    copies into the existing dtype). There is no ``.weight`` (it exists only inside each call): reading it
    raises `QuantizedWeightError`; `dequantize` returns it, `merge_lora_4bit` merges into it.
    """

    _STATE = ("absmax", "absmax2", "absmax_offset")
    _NEVER_CAST = _STATE + ("packed",)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 compute_dtype: torch.dtype | None = None, blocksize: int = NF4_BLOCKSIZE,
                 double_quant: bool = False, quant_type: str = "nf4",
                 quant_storage: torch.dtype = torch.uint8, device=None, dtype: torch.dtype | None = None):
        super().__init__()
        levels_4bit(quant_type)                               # an unknown type: one line, here
        n = in_features * out_features
        _check_blocks(n, blocksize, f"{quant_type.upper()}-quantize")
        _check_storage(quant_storage, -(-n // 2))
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype, self.blocksize, self.double_quant = compute_dtype, blocksize, double_quant
        self.quant_type, self.quant_storage = quant_type, quant_storage
        packed = torch.zeros(-(-n // 2), dtype=torch.uint8, device=device)
        self.register_buffer("packed", packed if quant_storage == torch.uint8 else packed.view(quant_storage))
        n_blocks = _n_blocks(n, blocksize)
        if double_quant:
            self.register_buffer("absmax_codes", torch.zeros(n_blocks, dtype=torch.uint8, device=device))
            self.register_buffer("absmax2", torch.zeros(-(-n_blocks // DQ_BLOCKSIZE), device=device))
            self.register_buffer("absmax_offset", torch.zeros((), device=device))
        else:
            self.register_buffer("absmax", torch.zeros(n_blocks, device=device))
        self.bias = (nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False)
                     if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, compute_dtype: torch.dtype | None = None,
                    blocksize: int = NF4_BLOCKSIZE, double_quant: bool = False,
                    quant_type: str = "nf4", quant_storage: torch.dtype = torch.uint8) -> "Linear4bit":
        """Quantize an ``nn.Linear`` (its weight is not kept; its bias keeps its dtype)."""
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    compute_dtype=compute_dtype, blocksize=blocksize, double_quant=double_quant,
                    quant_type=quant_type, quant_storage=quant_storage, device=w.device)
        layer.quantize_(w)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return layer

    @torch.no_grad()
    def quantize_(self, weight: torch.Tensor) -> "Linear4bit":
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise LabkitError(f"weight of shape {tuple(weight.shape)} does not fit a "
                              f"{self.in_features} -> {self.out_features} layer")
        packed, absmax = quantize_4bit(weight, self.blocksize, self.quant_type, self.quant_storage)
        self.packed.copy_(packed)
        if self.double_quant:
            dq = double_quantize(absmax)
            self.absmax_codes.copy_(dq.codes)
            self.absmax2.copy_(dq.absmax2)
            self.absmax_offset.copy_(dq.offset)
        else:
            self.absmax.copy_(absmax)
        return self

    def block_absmax(self) -> torch.Tensor:
        """The fp32 absmax of each block (dequantized first with double quantization)."""
        if self.double_quant:
            return double_dequantize(DoubleQuant(self.absmax_codes, self.absmax2, self.absmax_offset))
        return self.absmax

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as a dense ``(out_features, in_features)`` tensor of ``dtype``."""
        return dequantize_4bit(self.packed, self.block_absmax(), (self.out_features, self.in_features),
                               self.blocksize, self.quant_type, dtype)

    def __getattr__(self, name):
        # nn.Module.__getattr__ finds parameters and buffers; "weight" is neither here.
        if name != "weight":
            return super().__getattr__(name)
        raise QuantizedWeightError(
            f"a labkit Linear4bit keeps its weight as {self.quant_type.upper()} codes, not as a dense .weight; "
            "use layer.dequantize(dtype) to read it, or quant.merge_lora_4bit(model) to merge LoRA adapters into it")

    def _apply(self, fn, recurse=True):
        # .to(dtype)/.half()/.cuda() reach every buffer through here: move the quantization state
        # and the packed codes to the new device but never change their dtype (bitsandbytes'
        # quant_state is never cast either; packed bytes viewed as bf16 must stay bytes).
        state = {k: self._buffers.pop(k) for k in self._NEVER_CAST if k in self._buffers}
        super()._apply(fn, recurse)
        for k, t in state.items():
            moved = fn(t)
            self._buffers[k] = moved if moved.dtype == t.dtype else t.to(moved.device)
        return self

    @property
    def weight_nbytes(self) -> int:
        """Bytes the quantized weight occupies (codes + constants), bias excluded."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(self.compute_dtype or dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return _NF4Linear.apply(x, self, bias).to(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self.quant_type} blocksize={self.blocksize}, double_quant={self.double_quant}, "
                f"compute_dtype={self.compute_dtype}"
                + ("" if self.quant_storage == torch.uint8 else f", quant_storage={self.quant_storage}"))


def _bnb_linear4bit(linear: nn.Linear, compute_dtype, double_quant: bool, blocksize: int, quant_type: str = "nf4",
                    quant_storage: torch.dtype = torch.uint8):
    """``bitsandbytes.nn.Linear4bit`` (NF4 or FP4) holding ``linear``'s weight, quantized on its device."""
    import bitsandbytes as bnb

    w = linear.weight.detach()
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=double_quant,
                              quant_type=quant_type, quant_storage=quant_storage, device="meta")
    layer.weight = bnb.nn.Params4bit(w, requires_grad=False, blocksize=blocksize, compress_statistics=double_quant,
                                     quant_type=quant_type, quant_storage=quant_storage,
                                     module=layer).to(w.device)   # .to() quantizes
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return layer


BACKENDS = ("labkit", "bnb")


def quantize_model(model: nn.Module, *, backend: str = "labkit", compute_dtype: torch.dtype | None = torch.bfloat16,
                   double_quant: bool = False, blocksize: int = NF4_BLOCKSIZE, skip=("lm_head",),
                   quant_type: str = "nf4", quant_storage: torch.dtype = torch.uint8) -> nn.Module:
    """Replace every ``nn.Linear`` (except the names in ``skip``) with a 4-bit layer, in place.

    ``quant_type``: ``"nf4"`` (QLoRA's NormalFloat) or ``"fp4"``, as in bitsandbytes.
    ``quant_storage``: the dtype the packed codes are viewed as (bitsandbytes' argument; bf16
    lets FSDP shard a QLoRA model whose other parameters are bf16).

    ``backend="labkit"``: `Linear4bit`; ``"bnb"``: ``bitsandbytes.nn.Linear4bit``.
    Embeddings, norms and the output head stay as they are, as in QLoRA. Each
    original weight is freed as soon as its layer is quantized, so the peak is
    one layer above the starting size. The 4-bit layers are frozen; other
    parameters keep their ``requires_grad``, so LoRA adapters injected *before*
    quantizing (``inject_lora`` wraps each frozen ``nn.Linear`` as ``.base``)
    keep training while their bases become 4-bit. Returns the model.
    """
    if backend not in BACKENDS:
        raise LabkitError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    levels_4bit(quant_type)
    if backend == "bnb":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise LabkitError("backend='bnb' needs bitsandbytes (pip install bitsandbytes)") from None
    targets = [name for name, mod in model.named_modules()
               if type(mod) is nn.Linear and name.split(".")[-1] not in skip]
    if not targets:
        raise LabkitError("the model has no nn.Linear layers to quantize (already quantized?)")
    for name in targets:          # names, not modules: each 16-bit weight is freed once replaced
        linear = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if backend == "labkit":
            new = Linear4bit.from_linear(linear, compute_dtype=compute_dtype, blocksize=blocksize,
                                         double_quant=double_quant, quant_type=quant_type,
                                         quant_storage=quant_storage)
        else:
            new = _bnb_linear4bit(linear, compute_dtype, double_quant, blocksize, quant_type, quant_storage)
        setattr(parent, child, new)
        del linear
    return model


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The dense fp32 weight of a labkit or bitsandbytes 4-bit layer (or of an ``nn.Linear``)."""
    if isinstance(layer, Linear4bit):
        return layer.dequantize(torch.float32)
    if type(layer) is nn.Linear:
        return layer.weight.detach().float()
    state = getattr(getattr(layer, "weight", None), "quant_state", None)
    if state is None:
        raise LabkitError(f"cannot read a dense weight from a {type(layer).__name__}")
    import bitsandbytes.functional as bnbF

    return bnbF.dequantize_4bit(layer.weight.data, state).float().reshape(layer.out_features, layer.in_features)


@torch.no_grad()
def merge_lora_4bit(model: nn.Module, requantize: bool = True) -> nn.Module:
    """Merge every LoRA adapter whose base is a 4-bit layer (labkit or bitsandbytes), in place.

    Built in lab 05, section 6 ("merging into a 4-bit base"). A 4-bit weight cannot take
    ``+ s * B @ A`` in place: dequantize it to fp32, add the update once (as peft merges), then
    either **requantize** (``requantize=True``: a labkit `Linear4bit` of the same type, block
    size and double quantization -- small again, but the sum is rounded to 16 levels per block,
    so the merged model is *not* the trained one) or keep the merged weight **dense** in the
    compute dtype (``requantize=False``: exact up to that dtype, 16-bit size). Adapters on
    ordinary ``nn.Linear`` bases are merged as `lora.merge_lora` does. Returns the model.
    """
    from . import lora

    layers = lora.lora_layers(model)
    if not layers:
        raise LabkitError("the model has no LoRA adapters to merge (inject_lora first, or already merged?)")
    for name, layer in layers.items():
        base = layer.base
        w = dequantized_weight(base) + layer.delta_weight().float()
        bias = None if base.bias is None else base.bias.detach().clone()
        if isinstance(base, Linear4bit):
            kind = dict(compute_dtype=base.compute_dtype, blocksize=base.blocksize,
                        double_quant=base.double_quant, quant_type=base.quant_type,
                        quant_storage=base.quant_storage)
        elif type(base) is nn.Linear:
            kind = None
        else:  # bitsandbytes Linear4bit
            st = base.weight.quant_state
            kind = dict(compute_dtype=base.compute_dtype, blocksize=st.blocksize, double_quant=bool(st.nested),
                        quant_type=st.quant_type, quant_storage=base.weight.dtype)
        if kind is not None and requantize:
            new = Linear4bit(layer.in_features, layer.out_features, bias is not None, device=w.device, **kind)
            new.quantize_(w)
            if bias is not None:
                new.bias = nn.Parameter(bias, requires_grad=False)
        else:
            dtype = base.weight.dtype if kind is None else (kind["compute_dtype"] or torch.float32)
            new = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None, device=w.device,
                            dtype=dtype).requires_grad_(False)
            new.weight.copy_(w.to(dtype))
            if bias is not None:
                new.bias.copy_(bias.to(dtype))
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def cast_frozen(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast every frozen floating-point parameter to ``dtype``; trainable ones (LoRA
    adapters) keep theirs -- peft likewise keeps adapters in fp32 on a 16-bit base.
    Buffers (4-bit codes, absmax, rotary frequencies) are left alone."""
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(dtype)
    return model


def model_nbytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (packed 4-bit codes and constants included)."""
    total = 0
    seen = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
        state = getattr(t, "quant_state", None)   # bitsandbytes keeps absmax outside the parameter
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                total += state.state2.absmax.numel() * state.state2.absmax.element_size() + 4
    return total


WEIGHT_FORMATS = ("fp32", "bf16", "int8", "nf4")


def weight_bytes(model: nn.Module, fmt: str) -> int:
    """Bytes of ``model``'s weights stored in ``fmt``, from its shapes alone (a model on ``meta`` works).

    Built in lab 00, section 5 (the model-file size rule). ``"fp32"`` / ``"bf16"``: every
    parameter at 4 / 2 bytes. ``"int8"`` (LLM.int8) and ``"nf4"`` (QLoRA: NF4 with
    double-quantized constants) quantize only the weight matrices bitsandbytes replaces -- every
    ``nn.Linear`` (and GPT-2's ``Conv1D``) except the output head -- and keep the embeddings, the
    head, norms and biases in bf16. int8: one byte per weight plus an fp32 scale per output row;
    nf4, per tensor: 4-bit codes, an 8-bit absmax per block of 64, an fp32 scale per 256 of those
    and their fp32 mean (exactly what `model_nbytes` counts after `quantize_model(...,
    backend="bnb", double_quant=True)`). Tied embeddings count once.
    """
    from transformers.pytorch_utils import Conv1D

    if fmt not in WEIGHT_FORMATS:
        raise LabkitError(f"unknown weight format {fmt!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    rows = {}                                   # id(weight) -> output rows, for the quantized matrices
    for module in model.modules():
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head:
            rows[id(module.weight)] = module.weight.shape[0 if isinstance(module, nn.Linear) else 1]
    total = 0
    for p in model.parameters():                # parameters() yields a tied tensor once
        n = p.numel()
        if fmt in ("fp32", "bf16"):
            total += n * (4 if fmt == "fp32" else 2)
        elif id(p) not in rows:
            total += 2 * n
        elif fmt == "int8":
            total += n + 4 * rows[id(p)]
        else:
            blocks = -(-n // NF4_BLOCKSIZE)
            total += -(-n // 2) + blocks + 4 * -(-blocks // DQ_BLOCKSIZE) + 4
    return total

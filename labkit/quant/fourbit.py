"""The 4-bit types: NF4 and FP4 code books, blockwise absmax, two codes per byte.

Built in lab 05 §4: `normal_float_levels` (NF4's 16 normal quantiles, Dettmers et al. 2023) and
`fp4_levels` (bitsandbytes' tiny float), `pack_4bit` / `unpack_4bit`, and `quantize_4bit` /
`dequantize_4bit` -- one absmax per block of `NF4_BLOCKSIZE` (64) values, bit-identical to
``bitsandbytes.functional.quantize_4bit`` -- with `nf4_quantize` / `fp4_quantize` as the two named
types. `NF4_BLOCKSIZE` is defined here once (`labkit.memory` reads it from here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import LabkitError
from .checks import _check_finite, _check_float

__all__ = ["NF4_BLOCKSIZE", "NF4_OFFSET", "NF4_LEVELS", "FP4_LEVELS", "QUANT_TYPES", "QUANT_STORAGE",
           "normal_float_levels", "fp4_levels", "levels_4bit", "pack_4bit", "unpack_4bit", "quantize_4bit",
           "dequantize_4bit", "nf4_quantize", "nf4_dequantize", "fp4_quantize", "fp4_dequantize"]

NF4_BLOCKSIZE = 64
# The QLoRA paper's offset 1/2 (1 - 1/(2*15) + 1 - 1/(2*16)) = 0.96770833..., rounded to
# 7 digits as bitsandbytes generated its table (the rounded value reproduces it bit for bit).
NF4_OFFSET = 0.9677083


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

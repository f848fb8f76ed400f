"""Double quantization: NF4's fp32 absmax constants stored in 8 bits, and what a weight then costs.

Built in lab 05 §5: `dynamic_map` (bitsandbytes' 8-bit "dynamic tree" code; the lab prints it with
``show(quant.dynamic_map)``), `blockwise_quantize` / `blockwise_dequantize` with that code in blocks
of `DQ_BLOCKSIZE` (256), `double_quantize` / `double_dequantize` and the `DoubleQuant` they exchange;
`bits_per_param` (4.5 -> ~4.127 bits) and `nf4_nbytes` count the storage (lab 05 §5, lab 00 §5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LabkitError
from .checks import _check_finite, _check_float
from .fourbit import NF4_BLOCKSIZE, _check_blocks, _n_blocks

__all__ = ["DQ_BLOCKSIZE", "DYNAMIC_MAP", "dynamic_map", "blockwise_quantize", "blockwise_dequantize",
           "DoubleQuant", "double_quantize", "double_dequantize", "bits_per_param", "nf4_nbytes"]

DQ_BLOCKSIZE = 256


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

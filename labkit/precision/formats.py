"""Binary float formats from their bit counts: `FloatFormat`, the `FORMATS` of the labs, `cast_report`.

Why a module of its own: everything about a format -- range, smallest normal and subnormal, machine
epsilon, the gap between neighbours, rounding (to nearest, ties to even) and the bit patterns --
follows from its exponent and mantissa bit counts, and the loss scaler, the fp16 emulation and the
bf16 optimizer only need torch's casts, not this arithmetic. A value is
``(-1)^s * 2^(e - bias) * 1.m`` (normal) or ``(-1)^s * 2^(1 - bias) * 0.m`` when the exponent field is
0 (subnormal), with ``bias = 2^(E-1) - 1``; the IEEE formats spend the all-ones exponent on inf/NaN,
fp8 e4m3fn ("fn": finite, NaN only) on numbers up to 448.

Built in lab 00 §2 (``decode_float`` and ``encode_float``, proven equal to `FloatFormat.decode` and
`FloatFormat.encode`; `FORMATS` is the table it checks against ``torch.finfo``) and lab 02 §2 (range
from the exponent, precision from the mantissa); `cast_report` in lab 02 §3 (gradients flushed to
zero, subnormal or overflowing in fp16). tests/test_precision.py checks it all against torch, bit
for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import LabkitError

__all__ = ["FloatFormat", "FORMATS", "cast_report"]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: 1 sign bit, ``exponent_bits``, ``mantissa_bits``.

    ``finite_only=True`` is the fp8 "fn" convention: no infinities, and only the
    all-ones exponent *and* mantissa pattern is NaN. ``dtype`` names the torch
    storage type, if there is one (tf32 is a tensor-core compute mode, not a dtype).
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    finite_only: bool = False
    dtype: torch.dtype | None = None

    # --- what the bit counts imply ---------------------------------------
    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def max_exponent(self) -> int:
        """Unbiased exponent of the largest finite number."""
        top_field = 2 ** self.exponent_bits - 1                 # all-ones exponent field
        return (top_field if self.finite_only else top_field - 1) - self.bias

    @property
    def max(self) -> float:
        """Largest finite value: all-ones mantissa (minus one step if that pattern is NaN)."""
        top_mantissa = 2 - 2.0 ** (1 - self.mantissa_bits) if self.finite_only else 2 - 2.0 ** -self.mantissa_bits
        return 2.0 ** self.max_exponent * top_mantissa

    @property
    def smallest_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon: the gap between 1.0 and the next representable number."""
        return 2.0 ** -self.mantissa_bits

    @property
    def decimal_digits(self) -> float:
        """Significant decimal digits: log10(2^(M+1))."""
        return (self.mantissa_bits + 1) * math.log10(2)

    # --- rounding ------------------------------------------------------------
    def spacing(self, x) -> torch.Tensor:
        """Gap from |x| (a value of this format) to the next larger representable magnitude.

        Within one binade [2^e, 2^(e+1)) the ``2^M`` mantissa steps are equal:
        the gap is ``2^(e - M)``; below the smallest normal it is the subnormal step.
        """
        a = torch.as_tensor(x, dtype=torch.float64).abs()
        _, ex = torch.frexp(a)                           # a = f * 2^ex with f in [0.5, 1)
        e = torch.where(a == 0, 1 - self.bias, ex - 1)   # exponent of the leading bit (0: the subnormal step)
        e = e.clamp(min=1 - self.bias)
        return torch.exp2((e - self.mantissa_bits).to(torch.float64))

    def round(self, x, saturate: bool | None = None) -> torch.Tensor:
        """``x`` rounded to this format (to nearest, ties to even), returned as float64.

        Values that round beyond ``max`` overflow: to +-max with ``saturate=True``,
        otherwise to +-inf (IEEE formats) or NaN ("fn" formats have no inf). The
        default saturates "fn" formats only, as PyTorch 2.13's casts do.
        """
        saturate = self.finite_only if saturate is None else saturate
        x = torch.as_tensor(x, dtype=torch.float64)
        a = x.abs()
        step = self.spacing(a)                           # exact power of two
        r = torch.round(a / step) * step                 # torch.round: half to even
        over = torch.full_like(r, self.max if saturate else math.nan if self.finite_only else math.inf)
        r = torch.where(r > self.max, over, r)
        r = torch.where(torch.isnan(x), torch.full_like(r, math.nan), r)
        return torch.copysign(r, x)

    # --- bits ----------------------------------------------------------------
    def encode(self, value: float) -> int:
        """The bit pattern (an int) that stores ``value`` (rounded to this format first).

        Built in lab 00, section 2 (``encode_float``, the encoder), and proven equal to it there.
        NaN becomes the quiet NaN: sign 0, top mantissa bit set (all mantissa bits in "fn" formats)."""
        E, M = self.exponent_bits, self.mantissa_bits
        v = float(self.round(torch.tensor([float(value)]))[0])
        sign = 1 if math.copysign(1.0, v) < 0 else 0
        a = abs(v)
        if math.isnan(v):           # quiet NaN: IEEE sets the top mantissa bit; fn formats set all bits
            sign, exp, man = 0, 2**E - 1, (2**M - 1 if self.finite_only else 2 ** (M - 1))
        elif math.isinf(v):
            exp, man = 2**E - 1, 0
        elif a < self.smallest_normal:                   # subnormal (or zero): 0.m x 2^(1-bias)
            exp, man = 0, int(a / self.smallest_subnormal)
        else:                                            # normal: 1.m x 2^(exp-bias)
            f, ex = math.frexp(a)                        # a = f * 2^ex, f in [0.5, 1)
            exp, man = ex - 1 + self.bias, int((2 * f - 1) * 2**M)
        return (sign << (E + M)) | (exp << M) | man

    def decode(self, code: int) -> float:
        """The value a bit pattern stands for.

        Built in lab 00, section 2 (``decode_float``, the decoder), and proven equal to it there."""
        E, M = self.exponent_bits, self.mantissa_bits
        sign = -1.0 if (code >> (E + M)) & 1 else 1.0
        exp, man = (code >> M) & (2**E - 1), code & (2**M - 1)
        if exp == 2**E - 1:
            if self.finite_only and man == 2**M - 1:
                return math.nan
            if not self.finite_only:
                return sign * math.inf if man == 0 else math.nan
        if exp == 0:
            return sign * man * self.smallest_subnormal
        return sign * 2.0 ** (exp - self.bias) * (1 + man / 2**M)

    def bit_string(self, value: float) -> str:
        """``'s eeeee mmmmmmmmmm'``: sign | exponent | mantissa of the stored value."""
        b = format(self.encode(value), f"0{self.bits}b")
        return f"{b[0]} {b[1:1 + self.exponent_bits]} {b[1 + self.exponent_bits:]}"


FORMATS: dict[str, FloatFormat] = {
    "fp32": FloatFormat("fp32", 8, 23, dtype=torch.float32),
    "tf32": FloatFormat("tf32", 8, 10),                   # fp32 inputs on Ampere+ tensor cores
    "bf16": FloatFormat("bf16", 8, 7, dtype=torch.bfloat16),
    "fp16": FloatFormat("fp16", 5, 10, dtype=torch.float16),
    "fp8_e5m2": FloatFormat("fp8_e5m2", 5, 2, dtype=torch.float8_e5m2),
    "fp8_e4m3fn": FloatFormat("fp8_e4m3fn", 4, 3, finite_only=True, dtype=torch.float8_e4m3fn),
}


def cast_report(values: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> dict:
    """What happens to ``values * scale`` when cast to ``dtype``: fractions of the
    *nonzero* values that flush to zero, land in the subnormal range (fewer
    significant bits), or overflow (inf, or saturate at the format's max).

    Built in lab 02, section 3 (``cast_report``), and proven equal to it there."""
    v = values.detach().flatten().double() * scale
    v = v[v != 0]
    if v.numel() == 0:
        raise LabkitError("cast_report needs at least one nonzero value")
    fi = torch.finfo(dtype)
    cast = v.to(torch.float32).to(dtype).double()   # fp32 first: like a real gradient in memory
    n = v.numel()
    zero = (cast == 0).sum().item()
    over = (~torch.isfinite(cast) | (v.abs() > fi.max)).sum().item()
    sub = ((cast != 0) & (cast.abs() < fi.smallest_normal)).sum().item()
    return {"n": n, "flushed_to_zero": zero / n, "subnormal": sub / n, "overflow": over / n}

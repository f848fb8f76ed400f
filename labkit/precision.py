"""Number formats and loss scaling, from scratch (lab 02).

**Formats.** A binary float stores a sign bit, ``E`` exponent bits and ``M``
mantissa bits; its value is ``(-1)^s * 2^(e - bias) * 1.m`` (normal) or
``(-1)^s * 2^(1 - bias) * 0.m`` when the exponent field is 0 (subnormal), with
``bias = 2^(E-1) - 1``. Everything else -- range, smallest normal and
subnormal, machine epsilon, the gap between neighbours -- follows from ``E``
and ``M``. `FloatFormat` computes those numbers, rounds real numbers to the
format (round to nearest, ties to even), and encodes/decodes bit patterns;
`tests/test_precision.py` checks all of it against ``torch.finfo`` and
PyTorch's own casts, bit for bit.

Two ways to spend the all-ones exponent field:

* **IEEE style** (fp32, tf32, bf16, fp16, fp8 e5m2): it means inf (mantissa 0)
  or NaN (anything else), so the largest finite number uses exponent field
  ``2^E - 2``;
* **"fn" style** (fp8 e4m3fn: *f*inite, *n*aN only): there is no inf, and only
  the all-ones *mantissa* of the top exponent is NaN, so the top exponent
  carries numbers too: max = ``2^8 * 1.75 = 448`` instead of 240. Overflow
  either saturates to 448 or gives NaN (the OCP fp8 spec allows both); PyTorch
  2.13's cast saturates (even inf becomes 448), older versions give NaN.

**Loss scaling.** fp16's smallest subnormal is 2^-24 (about 6e-8): smaller
gradient values flush to zero. `DynamicLossScaler` multiplies the loss by a
large scale ``S`` before backward (so every gradient is ``S`` times larger and
clears the underflow zone), divides the gradients by ``S`` before the optimizer
step, skips the step when a gradient overflowed to inf/NaN, and adapts ``S``:
halve it after an overflow, double it after ``growth_interval`` clean steps.
It makes exactly the decisions `torch.amp.GradScaler` makes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import LabkitError


# ---------------------------------------------------------------------------
# Number formats
# ---------------------------------------------------------------------------
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
        """The bit pattern (an int) that stores ``value`` (rounded to this format first)."""
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
        """The value a bit pattern stands for."""
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
    significant bits), or overflow (inf, or saturate at the format's max)."""
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


# ---------------------------------------------------------------------------
# Dynamic loss scaling
# ---------------------------------------------------------------------------
def _fp32(x: float) -> float:
    """Round a Python float to fp32: GradScaler keeps its scale in an fp32 tensor."""
    return torch.tensor(x, dtype=torch.float64).float().item()


class DynamicLossScaler:
    """Dynamic loss scaling for fp16 mixed precision, with `torch.amp.GradScaler`'s interface.

    Per training step::

        scaler.scale(loss).backward()   # gradients come out S times larger
        scaler.unscale_(optimizer)      # divide them by S, note any inf/NaN (optional here)
        scaler.step(optimizer)          # optimizer.step(), unless a gradient was inf/NaN
        scaler.update()                 # overflow: S *= backoff; growth_interval clean steps: S *= growth

    The scale is kept as an fp32 number, like GradScaler's, so both make the same
    decisions given the same gradients. One optimizer per step (all the labs need).
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000):
        if growth_factor <= 1.0:
            raise LabkitError("growth_factor must be > 1 (it multiplies the scale after clean steps)")
        if not 0.0 < backoff_factor < 1.0:
            raise LabkitError("backoff_factor must be between 0 and 1 (it shrinks the scale after an overflow)")
        if growth_interval < 1:
            raise LabkitError("growth_interval must be at least 1 step")
        self._scale = _fp32(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self._clean_steps = 0          # consecutive steps without inf/NaN since the last change
        self._found_inf = None         # None: this step's gradients are not checked (unscaled) yet
        self.skipped = 0               # optimizer steps skipped so far

    def get_scale(self) -> float:
        return self._scale

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * S``. S is an fp32 tensor, so an fp16 loss is promoted instead of overflowing."""
        return loss * torch.tensor(self._scale, dtype=torch.float32, device=loss.device)

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide every gradient by S in place and record whether any is inf/NaN."""
        if self._found_inf is not None:
            raise RuntimeError("unscale_() was already called for this step; call update() first")
        inv_scale = _fp32(1.0 / self._scale)       # 1/S in float64, then stored as fp32 (as torch does)
        found_inf = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.dtype == torch.float16:
                    raise ValueError("gradients are fp16: keep fp32 master weights (autocast), not model.half()")
                if not torch.isfinite(p.grad).all():
                    found_inf = True
                p.grad.mul_(inv_scale)
        self._found_inf = found_inf

    def step(self, optimizer: torch.optim.Optimizer, *args, **kwargs):
        """Unscale (if not done yet), then step -- or skip the step if a gradient overflowed."""
        if self._found_inf is None:
            self.unscale_(optimizer)
        if self._found_inf:
            self.skipped += 1
            return None
        return optimizer.step(*args, **kwargs)

    def update(self) -> None:
        """Adapt S for the next step from what this step's gradients looked like."""
        if self._found_inf is None:
            raise RuntimeError("update() before step(): there is no gradient check to learn from")
        if self._found_inf:
            self._scale = _fp32(self._scale * self.backoff_factor)
            self._clean_steps = 0
        else:
            self._clean_steps += 1
            if self._clean_steps == self.growth_interval:
                grown = _fp32(self._scale * self.growth_factor)
                if math.isfinite(grown):
                    self._scale = grown
                self._clean_steps = 0
        self._found_inf = None

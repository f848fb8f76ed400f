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
from contextlib import contextmanager
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


# ---------------------------------------------------------------------------
# Dynamic loss scaling
# ---------------------------------------------------------------------------
def _fp32(x: float) -> float:
    """Round a Python float to fp32: GradScaler keeps its scale in an fp32 tensor."""
    return torch.tensor(x, dtype=torch.float64).float().item()


def update_scale(scale: float, growth_tracker: int, found_inf: bool, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> tuple[float, int]:
    """The loss scale and clean-step count after one step: ``(new_scale, new_tracker)``.

    Built in lab 02, section 5 (``scaler_update``), and proven equal to it there and to
    ``torch._amp_update_scale_``, the kernel behind `torch.amp.GradScaler.update`. An overflow
    multiplies the scale by ``backoff_factor`` and restarts the count; the ``growth_interval``-th
    clean step in a row multiplies it by ``growth_factor`` (refused if that overflows fp32) and
    restarts the count. The scale is an fp32 number, as in GradScaler."""
    if found_inf:
        return _fp32(scale * backoff_factor), 0
    if growth_tracker + 1 < growth_interval:
        return scale, growth_tracker + 1
    grown = _fp32(scale * growth_factor)
    return (grown if math.isfinite(grown) else scale), 0


class ScalerStateError(LabkitError, RuntimeError):
    """A `DynamicLossScaler` call out of order (GradScaler raises RuntimeError for the same calls)."""


_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"    # GradScaler's OptState, per optimizer


class DynamicLossScaler:
    """Dynamic loss scaling for fp16 mixed precision, with `torch.amp.GradScaler`'s interface.

    Built in lab 02, section 5 (``LossScaler``, the dynamic loss scaler), and proven equal to
    it there and to `torch.amp.GradScaler`. Per training step::

        scaler.scale(loss).backward()   # gradients come out S times larger
        scaler.unscale_(optimizer)      # divide them by S, note any inf/NaN (optional here)
        scaler.step(optimizer)          # optimizer.step(), unless a gradient was inf/NaN
        scaler.update()                 # overflow: S *= backoff; growth_interval clean steps: S *= growth

    The scale is kept as an fp32 number, like GradScaler's, so both make the same
    decisions given the same gradients.

    **Several optimizers** (one backward, then ``step(opt_a)``, ``step(opt_b)``, one
    ``update()``): each optimizer has its own state, as in GradScaler -- *ready*, *unscaled*
    (its gradients divided by S and checked), *stepped* -- so each one's gradients are
    unscaled and inf-checked exactly once, each one's step is skipped only on its own
    overflow, and ``update()`` backs off if any of them overflowed. ``unscale_`` twice, or
    ``step`` twice, on one optimizer before ``update()`` raises, as GradScaler does: a second
    division by S would be silently wrong.

    ``unscale_`` checks and divides all gradients of one device and dtype in one fused kernel,
    ``torch._amp_foreach_non_finite_check_and_unscale_`` (GradScaler's), and reads the verdict
    back to the host once per optimizer step. The lab's readable version loops over the tensors;
    an earlier labkit version also asked ``torch.isfinite(g).all()`` of each gradient, which is
    five elementwise kernels (``isfinite`` is ``(g == g) & (g.abs() != inf)``) plus a host sync
    per tensor: lab 02, section 5 measures what that cost. Sparse gradients
    (``nn.Embedding(sparse=True)``) are unscaled and checked through their stored values.

    ``device`` is accepted so that ``GradScaler("cpu", ...)`` code runs unchanged; the scale
    itself goes to whatever device the loss is on. ``enabled=False`` turns the scaler into a
    pass-through (``scale`` returns its input, ``step`` is ``optimizer.step``), as GradScaler's.
    """

    def __init__(self, device: str | None = None, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        if device is not None and not isinstance(device, (str, torch.device)):
            raise LabkitError("the first argument is the device, as in GradScaler: pass init_scale=... by keyword")
        self._enabled = bool(enabled)
        if self._enabled:
            _check_factors(growth_factor, backoff_factor, growth_interval)
        self._scale = _fp32(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self._growth_tracker = 0       # consecutive steps without inf/NaN since the last change
        self._per_optimizer: dict[int, dict] = {}    # id(optimizer) -> {"stage", "found_inf"}
        self.skipped = 0               # optimizer steps skipped so far

    # --- the step --------------------------------------------------------------
    def scale(self, outputs):
        """``outputs * S`` for a tensor, or for every tensor in a (nested) list/tuple/iterable.

        S is a 0-dim fp32 tensor, so a 0-dim fp16 loss is promoted instead of overflowing
        (the same type promotion as GradScaler's). Lists and tuples come back as lists and
        tuples, other iterables as a lazy ``map`` -- GradScaler's rules."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, torch.Tensor):
            return outputs * torch.tensor(self._scale, dtype=torch.float32, device=outputs.device)
        if isinstance(outputs, (dict, str, bytes)):
            # GradScaler would iterate a dict's keys (or a string's characters) and return nonsense
            raise LabkitError(f"scale() takes a tensor or an iterable of tensors, not a {type(outputs).__name__}; "
                              "for a dict of losses pass list(d.values())")
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(x) for x in outputs)
        try:
            return map(self.scale, iter(outputs))
        except TypeError:
            raise ValueError("outputs must be a Tensor or an iterable of Tensors") from None

    def _state(self, optimizer) -> dict:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide every gradient of ``optimizer`` by S in place and record whether any is inf/NaN."""
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["stage"] == _UNSCALED:
            raise ScalerStateError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] == _STEPPED:
            raise ScalerStateError("unscale_() is being called after step().")
        inv_scale = _fp32(1.0 / self._scale)       # 1/S in float64, then stored as fp32 (as torch does)
        groups: dict[tuple, list[torch.Tensor]] = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.dtype == torch.float16:
                    raise ValueError("Attempting to unscale FP16 gradients: keep fp32 master weights "
                                     "(autocast), not model.half()")
                # a sparse gradient stores its nonzeros in _values() (duplicates of an index are
                # summed only when read); unscaling and checking those values is GradScaler's way
                grad = p.grad._values() if p.grad.is_sparse else p.grad
                groups.setdefault((grad.device, grad.dtype), []).append(grad)
        flags = []
        for (device, _), grads in groups.items():
            flag = torch.zeros(1, dtype=torch.float32, device=device)
            inv = torch.full((1,), inv_scale, dtype=torch.float32, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, flag, inv)   # g *= inv; flag = 1 on inf/NaN
            flags.append(flag)
        # one host sync per device; None: this optimizer had no gradient to check
        state["found_inf"] = any(bool(f.item()) for f in flags) if flags else None
        state["stage"] = _UNSCALED

    def step(self, optimizer: torch.optim.Optimizer, *args, **kwargs):
        """Unscale (if not done yet), then ``optimizer.step(*args, **kwargs)`` and return what it returns --
        or skip the step and return None if one of this optimizer's gradients overflowed."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise ScalerStateError("Closure use is not currently supported if GradScaler is enabled.")
        state = self._state(optimizer)
        if state["stage"] == _STEPPED:
            raise ScalerStateError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        if state["found_inf"] is None:
            raise ScalerStateError("No inf checks were recorded for this optimizer: none of its parameters "
                                   "has a gradient (call backward() on the scaled loss first)")
        state["stage"] = _STEPPED
        if state["found_inf"]:
            self.skipped += 1
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        """Adapt S for the next step from what this step's gradients looked like (any optimizer's
        overflow backs off), or set it to ``new_scale``; then every optimizer is ready again."""
        if not self._enabled:
            return
        if new_scale is not None:
            if isinstance(new_scale, torch.Tensor):
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise LabkitError("new_scale must be a float or a 1-element tensor that needs no gradient")
                new_scale = new_scale.item()
            self._scale = _fp32(new_scale)
        else:
            checked = [s["found_inf"] for s in self._per_optimizer.values() if s["found_inf"] is not None]
            if not checked:
                raise ScalerStateError("No inf checks were recorded prior to update(): call step(optimizer) "
                                       "(or unscale_) before update()")
            self._scale, self._growth_tracker = update_scale(self._scale, self._growth_tracker, any(checked),
                                                             self.growth_factor, self.backoff_factor,
                                                             self.growth_interval)
        self._per_optimizer = {}

    # --- GradScaler's getters, setters and state --------------------------------
    def get_scale(self) -> float:
        """The current loss scale S (a Python float holding an fp32 value); 1.0 when disabled."""
        return self._scale if self._enabled else 1.0

    def is_enabled(self) -> bool:
        return self._enabled

    def get_growth_factor(self) -> float:
        return self.growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        _check_factors(new_factor, self.backoff_factor, self.growth_interval)
        self.growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self.backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        _check_factors(self.growth_factor, new_factor, self.growth_interval)
        self.backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self.growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        _check_factors(self.growth_factor, self.backoff_factor, new_interval)
        self.growth_interval = new_interval

    def state_dict(self) -> dict:
        """GradScaler's five entries (its keys, so the two can load each other's); empty when disabled.
        Call it after update(), as with GradScaler."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take over a `state_dict` (ours or GradScaler's); a no-op when disabled."""
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise ScalerStateError("The source state dict is empty, possibly because it was saved "
                                   "from a disabled instance of GradScaler.")
        _check_factors(state_dict["growth_factor"], state_dict["backoff_factor"], state_dict["growth_interval"])
        self._scale = _fp32(float(state_dict["scale"]))
        self.growth_factor = float(state_dict["growth_factor"])
        self.backoff_factor = float(state_dict["backoff_factor"])
        self.growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])


def _check_factors(growth_factor, backoff_factor, growth_interval) -> None:
    if growth_factor <= 1.0:
        raise LabkitError("growth_factor must be > 1 (it multiplies the scale after clean steps)")
    if not 0.0 < backoff_factor < 1.0:
        raise LabkitError("backoff_factor must be between 0 and 1 (it shrinks the scale after an overflow)")
    if growth_interval < 1:
        raise LabkitError("growth_interval must be at least 1 step")


# ---------------------------------------------------------------------------
# Stochastic rounding to bf16, and fp16 autocast emulated on any CPU
# ---------------------------------------------------------------------------
def stochastic_round_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """fp32 -> bf16, rounding up with probability equal to the discarded fraction: ``E[result] = x``.

    Built in lab 02, section 8 (``stochastic_round_to_bf16``), and proven equal to it there. The
    bit trick is round-to-nearest's (add, then drop the low 16 bits) with the ``0x7FFF + lsb``
    replaced by a uniform random 16-bit number, so a weight update smaller than half a bf16 gap
    survives on average instead of always rounding away. NaN stays NaN."""
    if x.dtype != torch.float32:
        raise LabkitError(f"stochastic_round_bf16 takes an fp32 tensor, got {x.dtype}")
    bits = x.view(torch.int32).to(torch.int64)
    device = x.device if generator is None else generator.device
    noise = torch.randint(0, 1 << 16, x.shape, generator=generator, dtype=torch.int64, device=device).to(x.device)
    h = (bits + noise) >> 16                               # round the magnitude up with probability low16 / 2^16
    h = torch.where(torch.isnan(x), torch.full_like(h, 0x7FC0), h)
    return h.to(torch.int16).view(torch.bfloat16)


class _Fp16Linear(torch.autograd.Function):
    """``x @ weight.T (+ bias)`` with the roundings fp16 autocast makes, computed in fp32."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        """Round input, weight and bias to fp16, multiply (fp32 accumulation), round the output."""
        x16, w16 = x.half().float(), weight.half().float()
        ctx.save_for_backward(x16, w16)
        ctx.has_bias = bias is not None
        y = x16 @ w16.T
        if bias is not None:
            y = y + bias.half().float()
        return y.half().float()

    @staticmethod
    def backward(ctx, grad):
        """The gradient arrives in fp16 (it belongs to an fp16 tensor); each gradient leaves in fp16."""
        x16, w16 = ctx.saved_tensors
        g16 = grad.half().float()
        grad_x = (g16 @ w16).half().float()
        g2, x2 = g16.reshape(-1, g16.shape[-1]), x16.reshape(-1, x16.shape[-1])
        grad_w = (g2.T @ x2).half().float()
        grad_b = g2.sum(0).half().float() if ctx.has_bias else None
        return grad_x, grad_w, grad_b


@contextmanager
def emulate_fp16_autocast(model: torch.nn.Module):
    """Inside the block, every ``nn.Linear`` of ``model`` computes as under fp16 autocast, in fp32.

    Built in lab 02, section 7 (``Fp16Linear`` and ``emulate_fp16``), and proven equal to it
    there and, to the last bit for all but summation-order ties, to ``torch.autocast("cpu",
    torch.float16)`` on one linear layer. Inputs, weights and outputs are rounded to fp16 and so
    are the gradients that flow through the layer -- fp16's range (underflow below 2^-24,
    overflow above 65,504) and precision -- while the matmul itself runs at fp32 speed: on a CPU
    without fp16 arithmetic a real fp16 matmul is emulated in software and ~100x slower. Ops
    outside the linear layers stay fp32 (autocast keeps norms, softmax and the loss in fp32 too,
    but runs the attention's own matmuls in fp16: those are not emulated)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for lin in linears:
        lin.forward = (lambda x, lin=lin: _Fp16Linear.apply(x, lin.weight, lin.bias))
    try:
        yield model
    finally:
        for lin in linears:
            del lin.forward                                # back to the class's forward


class Bf16AdamW(torch.optim.Optimizer):
    """AdamW for bf16 parameters: fp32 moments, and each updated weight stored by ``rounding``.

    Built in lab 02, section 8 (``Bf16AdamW``), and proven equal to it there and, with
    ``rounding="master"``, to `torch.optim.AdamW` on an fp32 copy, bit for bit (the same
    arithmetic as its single-tensor path). ``rounding``: ``"nearest"`` stores ``bf16(w + update)``
    (what training a ``model.to(torch.bfloat16)`` does; small updates round away),
    ``"stochastic"`` stores `stochastic_round_bf16` of it (unbiased), ``"master"`` keeps an fp32
    master copy that takes the update and gives the bf16 parameter its rounding (mixed precision).
    """

    ROUNDINGS = ("nearest", "stochastic", "master")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, rounding: str = "nearest", generator: torch.Generator | None = None):
        if rounding not in self.ROUNDINGS:
            raise LabkitError(f"rounding must be one of {', '.join(self.ROUNDINGS)}, got {rounding!r}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.rounding, self.generator = rounding, generator

    @torch.no_grad()
    def step(self, closure=None):
        """One AdamW step in fp32 (torch.optim.AdamW's arithmetic), then store each weight in bf16."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    if self.rounding == "master":
                        state["master"] = p.detach().float()
                state["step"] += 1
                w = state["master"] if self.rounding == "master" else p.detach().float()
                g = p.grad.float()
                w.mul_(1 - group["lr"] * group["weight_decay"])
                state["exp_avg"].lerp_(g, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (state["exp_avg_sq"].sqrt() / (1 - beta2 ** state["step"]) ** 0.5).add_(group["eps"])
                w.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1 ** state["step"]))
                p.copy_(stochastic_round_bf16(w, self.generator) if self.rounding == "stochastic" else w)
        return loss

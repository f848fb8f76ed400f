"""Lab 02: mixed precision -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference: PyTorch's own casts (``x.to(torch.bfloat16)``,
``x.to(torch.float16)``) and the kernels behind `torch.amp.GradScaler`
(``torch._amp_update_scale_``, ``torch._amp_foreach_non_finite_check_and_unscale_``).
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise


def _e4m3_max() -> float:
    import torch

    return float(torch.finfo(torch.float8_e4m3fn).max)


def _fp16_min_subnormal() -> float:
    import torch

    return torch.tensor(1, dtype=torch.int16).view(torch.float16).item()  # bit pattern 0...01


def _bf16_swallowed() -> float:
    import torch

    one = torch.tensor(1.0, dtype=torch.bfloat16)
    return max(2.0**-k for k in range(1, 30) if (one + torch.tensor(2.0**-k, dtype=torch.bfloat16)).item() == 1.0)


def _scale_after_overflows() -> float:
    """torch.amp.GradScaler with defaults: 3 overflowing steps, then 2000 clean ones."""
    import torch

    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.0)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.tensor(1.0))
    for step in range(3 + 2000):
        w.grad = torch.tensor([float("inf") if step < 3 else 1.0])
        scaler.step(opt)
        scaler.update()
    return scaler.get_scale()



# ----------------------------------------------------------------------------- code exercises
def _rand(gen) -> float:
    import torch

    return torch.rand(1, generator=gen).item()


def _randint(gen, lo: int, hi: int) -> int:
    import torch

    return int(torch.randint(lo, hi, (1,), generator=gen).item())


def _to_fp32(x: float) -> float:
    import torch

    return torch.tensor(x, dtype=torch.float64).float().item()


def _torch_update(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    """torch.amp.GradScaler's update kernel on one (scale, tracker) pair."""
    import torch

    s = torch.tensor([scale], dtype=torch.float32)
    t = torch.tensor([growth_tracker], dtype=torch.int32)
    torch._amp_update_scale_(s, t, torch.tensor([float(found_inf)]), growth_factor, backoff_factor, growth_interval)
    return s.item(), int(t.item())


def _update_inputs(gen) -> tuple:
    """(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval): often
    the step that completes an interval, sometimes a scale so large that growing it overflows fp32."""
    interval = _randint(gen, 1, 6) if _rand(gen) < 0.7 else 2000
    tracker = interval - 1 if _rand(gen) < 0.5 else _randint(gen, 0, interval)
    found_inf = _rand(gen) < 0.35
    growth = 2.0 if _rand(gen) < 0.5 else 1.0 + 3.0 * _rand(gen)
    backoff = 0.5 if _rand(gen) < 0.5 else 0.05 + 0.9 * _rand(gen)
    kind = _rand(gen)
    if kind < 0.15:
        scale = 2.0**127
    elif kind < 0.3:
        scale = _to_fp32(3.0e38 * (0.5 + 0.5 * _rand(gen)))
    else:
        scale = _to_fp32(2.0 ** _randint(gen, -20, 40) * (1.0 + _rand(gen)))
    return scale, tracker, found_inf, growth, backoff, interval


def _fp32_values(gen, exp_lo: int, exp_hi: int, drop_bits: int, edges: list[float]):
    """A random fp32 tensor (1-D or 2-D) mixing magnitudes across and beyond a format's range,
    exact ties (the dropped bits are 100...0, with even and odd kept bits), fp32 subnormals,
    random bit patterns (inf and NaN among them), +-0, +-inf, NaN and the format's edge cases."""
    import torch

    n = _randint(gen, 1, 200)
    vals = torch.randn(n, generator=gen) * torch.exp2(torch.randint(exp_lo, exp_hi, (n,), generator=gen).float())
    bits = torch.randint(-2**31, 2**31 - 1, (_randint(gen, 1, 60),), generator=gen, dtype=torch.int32)
    ties = ((bits & ~((1 << drop_bits) - 1)) | (1 << (drop_bits - 1))).view(torch.float32)
    patterns = torch.randint(-2**31, 2**31 - 1, (_randint(gen, 1, 30),), generator=gen, dtype=torch.int32)
    subnormal = torch.randint(1, 1 << 23, (3,), generator=gen, dtype=torch.int32).view(torch.float32)
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan] + edges, dtype=torch.float32)
    x = torch.cat([vals, ties, patterns.view(torch.float32), subnormal, special, -special])
    x = x[torch.randperm(x.numel(), generator=gen)]
    if _rand(gen) < 0.5 and x.numel() % 2 == 0:
        x = x.reshape(2, -1)
    return (x.contiguous(),)


def _bf16_inputs(gen) -> tuple:
    return _fp32_values(gen, -150, 128, 16, [1 + 2.0**-8, 1 + 3 * 2.0**-8, 3.3895e38, 3.39e38,
                                             2.0**-133, 2.0**-134, 3 * 2.0**-135, 1e-40])


def _fp16_inputs(gen) -> tuple:
    return _fp32_values(gen, -30, 18, 13, [65504.0, 65519.99, 65520.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26,
                                           2.0**-14 - 2.0**-25, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 1e-9])


def _same_bits(got, want) -> str | None:
    """None if ``got`` stores exactly the bits of ``want`` (any NaN matches any NaN)."""
    import torch

    kind = str(want.dtype).replace("torch.", "")
    if not isinstance(got, torch.Tensor):
        return f"returned {type(got).__name__}, expected a {kind} tensor"
    if got.dtype != want.dtype:
        return f"dtype {str(got.dtype).replace('torch.', '')} instead of {kind} (view the 16-bit codes as {kind})"
    if tuple(got.shape) != tuple(want.shape):
        return f"shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    g, w = got.view(torch.int16), want.view(torch.int16)
    bad = (g != w) & ~(got.isnan() & want.isnan())
    if not bad.any():
        return None
    idx = tuple(int(i) for i in bad.nonzero()[0])
    return (f"{int(bad.sum())} of {bad.numel()} values differ; first at index {idx}: got {got[idx].item():.8g} "
            f"(bits {int(g[idx]) & 0xFFFF:#06x}), expected {want[idx].item():.8g} (bits {int(w[idx]) & 0xFFFF:#06x})")


def _torch_non_finite(grads) -> bool:
    """GradScaler's fused check, with 1/S = 1 so the gradients stay as they are."""
    import torch

    if not grads:
        return False
    found = torch.zeros(1)
    torch._amp_foreach_non_finite_check_and_unscale_(list(grads), found, torch.ones(1))
    return bool(found.item())


def _grads_inputs(gen) -> tuple:
    """A list of 0 to 5 fp32 gradient tensors (some empty, some 2-D); about half the time one
    value somewhere is inf, -inf or NaN -- or a huge finite value, which is not an overflow."""
    import torch

    grads = []
    for _ in range(_randint(gen, 0, 6)):
        shape = [(0,), (_randint(gen, 1, 50),), (_randint(gen, 1, 8), _randint(gen, 1, 8))][_randint(gen, 0, 3)]
        grads.append(torch.randn(shape, generator=gen) * 10.0 ** _randint(gen, -8, 3))
    filled = [g for g in grads if g.numel()]
    if filled and _rand(gen) < 0.5:
        g = filled[_randint(gen, 0, len(filled))].view(-1)
        g[_randint(gen, 0, g.numel())] = [math.inf, -math.inf, math.nan, 3.0e38][_randint(gen, 0, 4)]
    return (grads,)


def _cast_report_ref(values, dtype, scale):
    from .. import precision

    return precision.cast_report(values, dtype, scale)


def _cast_inputs(gen) -> tuple:
    """Gradient-like values spread over many binades (some zeros, at least one nonzero), a 16- or 8-bit
    float dtype, and a power-of-two loss scale that may push some values past the format's max."""
    import torch

    n = _randint(gen, 1, 300)
    values = torch.randn(n, generator=gen) * torch.exp2(torch.randint(-40, 20, (n,), generator=gen).float())
    values[torch.rand(n, generator=gen) < 0.1] = 0.0
    values[_randint(gen, 0, n)] = 1e-3
    dtype = [torch.float16, torch.bfloat16, torch.float8_e5m2, torch.float8_e4m3fn][_randint(gen, 0, 4)]
    return values, dtype, 2.0 ** _randint(gen, 0, 25)


def _same_verdict(got, want) -> str | None:
    import torch

    if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dtype == torch.bool:
        got = bool(got.item())
    if not isinstance(got, bool):
        return f"returned {type(got).__name__}, expected True or False"
    return None if got == want else f"returned {got}, expected {want}"


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "02.e4m3_max": Exercise("largest finite fp8 e4m3fn value", _e4m3_max, 0.0,
                            "e4m3fn has no inf: only exponent 1111 with mantissa 111 is NaN, so the top "
                            "exponent field (15, bias 7) still holds numbers -- all but the all-ones mantissa"),
    "02.fp16_min_subnormal": Exercise("smallest positive fp16 value", _fp16_min_subnormal, 0.0,
                                      "exponent field 0, mantissa 0...01: 2^(1 - bias - mantissa bits)"),
    "02.bf16_swallowed": Exercise("largest power of two d with bf16(1 + d) == 1", _bf16_swallowed, 0.0,
                                  "find bf16's gap after 1.0 from its mantissa bits, then ask what round-to-nearest-even does with a tie"),
    "02.scale_after_overflows": Exercise("GradScaler defaults: the scale after 3 overflowing steps then 2000 "
                                         "clean steps", _scale_after_overflows, 0.0,
                                         "each overflow halves 2^16; every 2000 consecutive clean steps double it"),
    "02.scaler_update": CodeExercise(
        "scaler_update(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval) "
        "-> (new_scale, new_tracker), as GradScaler.update decides it",
        reference=_torch_update, inputs=_update_inputs, solution="scaler_update", rtol=1e-6, atol=0.0,
        hint="an overflow backs off and restarts the count; a clean step only counts, unless it completes "
             "growth_interval -- then the scale grows and the count restarts. The scale is an fp32 number: "
             "round each new scale to fp32, and refuse a growth that would not fit in fp32"),
    "02.round_to_bf16": CodeExercise(
        "round_to_bf16(x): an fp32 tensor rounded to bf16 (to nearest, ties to even) with integer "
        "operations on its bits, returned as a torch.bfloat16 tensor",
        reference=lambda x: x.to(__import__("torch").bfloat16), inputs=_bf16_inputs, solution="round_to_bf16",
        compare=_same_bits,
        hint="bf16 is the top 16 bits of fp32: add half of the dropped range to the bits, minus one unless the "
             "lowest kept bit is 1, then drop the low 16 bits; NaN must stay NaN"),
    "02.round_to_fp16": CodeExercise(
        "round_to_fp16(x): an fp32 tensor rounded to fp16 (to nearest, ties to even; overflow to inf, "
        "subnormals below 2^-14) with integer operations, returned as a torch.float16 tensor",
        reference=lambda x: x.to(__import__("torch").float16), inputs=_fp16_inputs, solution="round_to_fp16",
        compare=_same_bits,
        hint="three cases by |x|: normal (re-bias the exponent from 127 to 15, round away 13 mantissa bits, "
             "cap at the inf pattern), subnormal (count |x| in units of 2^-24, rounding the shifted mantissa "
             "with its implicit 1), and NaN; the sign bit moves from bit 31 to bit 15"),
    "02.cast_report": CodeExercise(
        "cast_report(values, dtype, scale): the shares of the nonzero values * scale that flush to zero, "
        "end subnormal, or overflow when cast to dtype, as a dict with the count n",
        reference=_cast_report_ref, inputs=_cast_inputs, solution="cast_report", rtol=0.0, atol=1e-12,
        hint="leave the zeros out before counting; cast through fp32 as a gradient in memory would be; "
             "subnormal means nonzero yet below torch.finfo(dtype).smallest_normal; an fp8 cast may saturate "
             "instead of giving inf, so also count the values whose magnitude is beyond the format's max"),
    "02.any_non_finite": CodeExercise(
        "any_non_finite(grads): True if any tensor in the list holds an inf or a NaN",
        reference=_torch_non_finite, inputs=_grads_inputs, solution="any_non_finite", compare=_same_verdict,
        hint="a huge finite value is not an overflow, an empty list or an empty tensor holds none, and the "
             "answer is a Python bool (read back from the device once, not once per tensor)"),
}

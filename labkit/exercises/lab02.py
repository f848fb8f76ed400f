"""Lab 02: mixed precision -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
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
}

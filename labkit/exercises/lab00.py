"""Lab 00: setup and hardware -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise


def _fp16_max() -> float:
    import torch

    return float(torch.finfo(torch.float16).max)


def _tf32_eps() -> float:
    return 2.0 ** -10  # 10 mantissa bits, like fp16, with fp32's 8 exponent bits


def _llama2_13b_params() -> float:
    from .. import models

    return float(models.count_params(models.build("llama-2-13b", device="meta")))


def _llama3_8b_bf16_gb() -> float:
    from .. import models

    return 2 * models.count_params(models.build("llama-3-8b", device="meta")) / 1e9




EXERCISES: dict[str, Exercise | CodeExercise] = {
    "00.fp16_max": Exercise("largest finite fp16 value", _fp16_max, 0.0,
                            "the largest exponent field that is not all ones is 30: 2^(30-15) x (2 - 2^-10)"),
    "00.tf32_eps": Exercise("machine epsilon of tf32", _tf32_eps, 0.0,
                            "epsilon is the gap between 1.0 and the next number; count the mantissa bits tf32 keeps"),
    "00.llama2_13b_params": Exercise("parameters of Llama-2-13B", _llama2_13b_params, 0.0,
                                     "per layer: 4 h^2 (attention) + 3 h i (MLP) + 2 h (norms); plus 2 V h + h"),
    "00.llama3_8b_bf16_gb": Exercise("size in GB (1e9 bytes) of Llama-3-8B's weights in bf16",
                                     _llama3_8b_bf16_gb, 0.01, "2 bytes per parameter; count on `meta`"),
}

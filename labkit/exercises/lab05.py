"""Lab 05: quantization and QLoRA -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise

def _int8_absmax_max_error() -> float:
    return 2.54 / (2 * 127)        # half a step; a step is absmax / 127


def _nf4_level_14() -> float:
    import bitsandbytes.functional as bnbf

    return float(bnbf.get_4bit_type("nf4", device="cpu")[14])


def _nf4_dq_bits_blocksize_128() -> float:
    return 4 + 8 / 128 + 32 / (128 * 256)


def _llama2_7b_nf4_gb() -> float:
    import torch

    from .. import models

    model = models.build("llama-2-7b", device="meta")
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    rest = models.count_params(model) - linear
    return (linear // 2 + 4 * (linear // 64) + 2 * rest) / 1e9


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "05.int8_absmax_max_error": Exercise(
        "largest rounding error of per-tensor absmax int8 on a tensor whose largest magnitude is 2.54",
        _int8_absmax_max_error, 1e-9, "one int8 step is absmax / 127; rounding is off by at most half a step"),
    "05.nf4_level_14": Exercise(
        "the second-largest NF4 level (index 14), from the normal quantiles", _nf4_level_14, 1e-6,
        "Phi^-1 at the second of linspace(0.9677083, 0.5, 9), divided by Phi^-1(0.9677083)"),
    "05.nf4_dq_bits_blocksize_128": Exercise(
        "bits per parameter of NF4 with blocks of 128 and double-quantized absmax (8-bit, blocks of 256)",
        _nf4_dq_bits_blocksize_128, 1e-9, "4 bits of code + 8 bits per block + 32 bits per 256 blocks"),
    "05.llama2_7b_nf4_gb": Exercise(
        "GB (1e9 bytes) of Llama-2-7B with its decoder linear layers in NF4 (blocks of 64, fp32 absmax, no double "
        "quantization) and everything else in bf16", _llama2_7b_nf4_gb, 0.001,
        "count the decoder nn.Linear weights on `meta`: 0.5 byte + 4 bytes / 64 each; the rest 2 bytes each"),
}

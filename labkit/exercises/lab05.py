"""Lab 05: quantization and QLoRA -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against bitsandbytes itself (its CPU quantizers) where it has the piece,
and against labkit's copy (proven equal to bitsandbytes in lab 05) where it does not.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise, draw_int

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


# ----------------------------------------------------------------------------- code


def _int8_inputs(gen):
    import torch

    rows, cols = draw_int(gen, 1, 9), draw_int(gen, 1, 40)
    x = torch.randn(rows, cols, generator=gen) * 10 ** float(torch.empty(1).uniform_(-2, 2, generator=gen))
    dim = None if draw_int(gen, 0, 1) else -1
    dtype = (torch.float32, torch.float16, torch.bfloat16)[draw_int(gen, 0, 2)]
    return x.to(dtype), dim


def _int8_reference(x, dim):
    from .. import quant

    return quant.absmax_quantize(x, dim)


def _weights_4bit(gen):
    """A weight matrix of whole blocks of 64, sometimes with exact zeros, in a float dtype."""
    import torch

    rows, blocks = draw_int(gen, 1, 6), draw_int(gen, 1, 4)
    w = torch.randn(rows, 64 * blocks, generator=gen) * 10 ** float(torch.empty(1).uniform_(-3, 1, generator=gen))
    if draw_int(gen, 0, 1):
        w.view(-1)[:: draw_int(gen, 3, 17)] = 0.0
    return (w.to((torch.float32, torch.bfloat16, torch.float16)[draw_int(gen, 0, 2)]),)


def _bnb_4bit(quant_type):
    def reference(w):
        import bitsandbytes.functional as bnbf

        packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type=quant_type)
        return packed.view(-1), state.absmax
    return reference


def _merge_inputs(gen):
    import torch

    from .. import quant

    (w,) = _weights_4bit(gen)
    w = w.float()
    r = draw_int(gen, 1, 8)
    a = torch.randn(r, w.shape[1], generator=gen) * 0.05
    b = torch.randn(w.shape[0], r, generator=gen) * 0.05
    packed, absmax = quant.nf4_quantize(w)
    return packed, absmax, tuple(w.shape), a, b, float(torch.empty(1).uniform_(0.5, 4, generator=gen))


def _merge_reference(packed, absmax, shape, a, b, scaling):
    from .. import quant

    merged = quant.nf4_dequantize(packed, absmax, shape) + scaling * (b @ a)
    return quant.nf4_quantize(merged)


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "05.absmax_int8": CodeExercise(
        question="write absmax_int8(x, dim=None): int8 codes and the float32 absmax scale(s) -- one for the whole "
                 "tensor (dim=None) or one per row (dim=-1, kept as a column)",
        reference=_int8_reference, inputs=_int8_inputs, solution="absmax_int8", check_dtype=True,
        hint="q = round(127 x / absmax), clamped to [-127, 127], as torch.int8; compute absmax in float32 and keep "
             "its dimension for dim=-1 (keepdim) so it broadcasts back"),
    "05.nf4_quantize": CodeExercise(
        question="write nf4_quantize_scratch(w, blocksize=64): the packed NF4 bytes (two codes per byte, first in the "
                 "high nibble) and the float32 absmax of every block, exactly as bitsandbytes' quantize_4bit",
        reference=_bnb_4bit("nf4"), inputs=_weights_4bit, solution="nf4_quantize_scratch", check_dtype=True,
        hint="blocks of 64 consecutive values of the flattened tensor in float32; multiply by 1/absmax (not divide); "
             "the nearest of the 16 levels with an exact midpoint going to the lower one (torch.bucketize)"),
    "05.fp4_quantize": CodeExercise(
        question="write fp4_quantize_scratch(w, blocksize=64): the packed bytes and float32 absmax of bitsandbytes' "
                 "FP4 type (quant_type='fp4')",
        reference=_bnb_4bit("fp4"), inputs=_weights_4bit, solution="fp4_quantize_scratch", check_dtype=True,
        hint="the same blocks as NF4, but the 16 FP4 levels are not sorted by code: find the nearest level on the "
             "sorted values, then map its rank back to its code"),
    "05.merge_requantize": CodeExercise(
        question="write merge_requantize(packed, absmax, shape, A, B, scaling): merge a LoRA update into an NF4 "
                 "weight and return the new (packed, absmax)",
        reference=_merge_reference, inputs=_merge_inputs, solution="merge_requantize", check_dtype=True,
        hint="a 4-bit weight cannot take an addition: dequantize it to float32, add scaling * B @ A once, quantize "
             "the sum again with the same block size"),

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

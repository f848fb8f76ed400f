"""Lab 07: data parallelism to FSDP -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise

def _llama2_7b_params() -> float:
    from .. import models

    return float(models.count_params(models.build("llama-2-7b", device="meta")))


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "07.zero3_gb_70b_64gpus": Exercise(
        "GB (1e9 bytes) of model states per GPU for a 70e9-parameter model, ZeRO-3, 64 GPUs, mixed-precision Adam",
        lambda: 16 * 70e9 / 64 / 1e9, 0.001, "(2 + 2 + 12) bytes per parameter, all of it divided by N"),
    "07.zero2_gb_llama2_7b_8gpus": Exercise(
        "GB per GPU of model states for Llama-2-7B under ZeRO-2 on 8 GPUs (K = 12)",
        lambda: (2 * _llama2_7b_params() + 14 * _llama2_7b_params() / 8) / 1e9, 0.001,
        "stage 2 keeps the bf16 weights whole (2 bytes) and shards gradients + optimizer (2 + 12 bytes)"),
    "07.ring_allreduce_sent_gb": Exercise(
        "GB each of 8 GPUs sends in a ring all-reduce of a 1 GB gradient buffer",
        lambda: 2 * 7 / 8 * 1.0, 0.001, "reduce-scatter then all-gather: each sends (N-1)/N of the buffer twice"),
    "07.zero3_seconds_llama2_7b_ib400": Exercise(
        "seconds of ZeRO-3 communication per step for Llama-2-7B in bf16 on 400 Gbit/s InfiniBand (no overlap)",
        lambda: 3 * _llama2_7b_params() * 2 * 8 / 400e9, 0.01, "3 x params x 2 bytes x 8 bits / 400e9 bit/s"),
    "07.bubble_p8_m32": Exercise(
        "idle (bubble) fraction of an 8-stage pipeline with 32 micro-batches",
        lambda: 7 / 39, 0.001, "(p - 1) / (m + p - 1)"),
}

"""Lab 07: data parallelism to FSDP -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference: labkit's canonical copy in `labkit.dist`, which lab 07
proves equal to torch (``reduce_scatter_tensor`` / ``all_reduce`` on 2 gloo ranks, FSDP2's
per-rank bytes) and to the ZeRO paper's formulas.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise, draw_int

def _llama2_7b_params() -> float:
    from .. import models

    return float(models.count_params(models.build("llama-2-7b", device="meta")))


def _numel_world(gen) -> tuple[int, int]:
    """A flat parameter's length and a world size; sometimes an edge case (0, 1, a multiple)."""
    world = draw_int(gen, 1, 16)
    numel = (0, 1, world * draw_int(gen, 1, 50), draw_int(gen, 1, 10**6))[draw_int(gen, 0, 3)]
    return numel, world


def _per_rank_tensors(gen) -> tuple[list]:
    """World size W in 1..8 and one flat float tensor per rank, length a multiple of W."""
    import torch

    world = draw_int(gen, 1, 8)
    n = world * draw_int(gen, 1, 12)
    dtype = (torch.float32, torch.float64)[draw_int(gen, 0, 1)]
    return ([torch.randn(n, generator=gen, dtype=torch.float64).to(dtype) for _ in range(world)],)


def _ring_reference(per_rank):
    from .. import dist

    results, sent = dist.ring_allreduce_sim(per_rank)
    return results, sent


def _zero_inputs(gen) -> tuple[int, int, int]:
    return draw_int(gen, 0, 10**9), draw_int(gen, 1, 1024), draw_int(gen, 0, 3)


def _zero_reference(n_params, world, stage):
    from .. import dist

    return {k: float(v) for k, v in dist.zero_parts(n_params, world, stage).items()}


def _layout_reference(numel, world):
    from .. import dist

    return dist.shard_layout(numel, world)


def _rs_reference(per_rank):
    from .. import dist

    return dist.reduce_scatter_sim(per_rank)


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "07.shard_layout": CodeExercise(
        question="shard_layout(numel, world): (padded length, shard length) of a flat parameter of numel "
                 "elements zero-padded so that world ranks hold equal shards",
        reference=_layout_reference, inputs=_numel_world, solution="shard_layout",
        hint="the shard is the ceiling of numel / world; the padded length is world shards"),
    "07.reduce_scatter": CodeExercise(
        question="reduce_scatter_sim(per_rank): the list of what each rank holds after a reduce-scatter "
                 "(sum) of the per-rank flat tensors",
        reference=_rs_reference, inputs=_per_rank_tensors, solution="reduce_scatter_sim", rtol=1e-5, atol=1e-5,
        hint="sum the ranks' tensors element by element, then cut the sum into world equal chunks; "
             "rank r keeps chunk r"),
    "07.ring_allreduce": CodeExercise(
        question="ring_allreduce_sim(per_rank): (every rank's all-reduced tensor, bytes each rank sent) for a "
                 "ring of N-1 reduce-scatter steps then N-1 all-gather steps, one chunk per step",
        reference=_ring_reference, inputs=_per_rank_tensors, solution="ring_allreduce_sim", rtol=1e-5, atol=1e-5,
        hint="each rank sends exactly one chunk (1/N of the tensor) per step; after the reduce-scatter phase "
             "rank r owns the finished chunk r + 1"),
    "07.zero_bytes": CodeExercise(
        question="zero_bytes_per_rank(n_params, world, stage): {'params', 'grads', 'optimizer'} bytes per rank "
                 "for ZeRO stage 0-3, mixed-precision Adam (2 + 2 + 12 bytes per parameter)",
        reference=_zero_reference, inputs=_zero_inputs, solution="zero_bytes_per_rank",
        hint="stage 1 divides the optimizer bytes by world, stage 2 also the gradients, stage 3 also the "
             "parameters"),
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

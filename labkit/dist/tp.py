"""Splitting the model instead of the data: tensor parallelism and the pipeline bubble (lab 07 §11-12).

Data parallelism and ZeRO shard the model's *states*; tensor and pipeline parallelism split its
*computation*. Lab 07 §11 shows Megatron-LM's two layers from scratch and runs them on gloo ranks
(``labs/scripts/fsdp_train.py``, part ``tp``); §12 plots the bubble a pipeline pays:

* `ColumnParallelLinear` / `RowParallelLinear` / `tp_mlp_forward`: a Llama MLP split over ranks
  with ONE all-reduce in its forward (shown in lab 07 §11);
* `bubble_fraction`: the idle share of a GPipe / 1F1B pipeline (lab 07 §12-13,
  `labkit.parallelism`).
"""
from __future__ import annotations

from ..errors import LabkitError

__all__ = ["ColumnParallelLinear", "RowParallelLinear", "tp_mlp_forward", "bubble_fraction"]


# ---------------------------------------------------------------------------
# Tensor parallelism from scratch (Megatron-LM's two layers)
# ---------------------------------------------------------------------------
class ColumnParallelLinear:
    """Rank r keeps rows [r*k, (r+1)*k) of W (k = out/N): y_r = x W_r^T is its slice of the output.

    No communication: every rank has the whole input x and produces a slice of
    the output features -- exactly what the next, row-parallel layer wants.
    """

    def __init__(self, weight, rank: int, world: int):
        out = weight.shape[0]
        if out % world:
            raise LabkitError(f"{out} output features do not split over {world} ranks")
        k = out // world
        self.weight = weight[rank * k:(rank + 1) * k].detach().clone()

    def __call__(self, x):
        return x @ self.weight.T


class RowParallelLinear:
    """Rank r keeps columns [r*k, (r+1)*k) of W: x_r W_r^T is a partial sum; one all-reduce adds them."""

    def __init__(self, weight, rank: int, world: int):
        inp = weight.shape[1]
        if inp % world:
            raise LabkitError(f"{inp} input features do not split over {world} ranks")
        k = inp // world
        self.weight = weight[:, rank * k:(rank + 1) * k].detach().clone()

    def __call__(self, x_slice, reduce: bool = True):
        import torch.distributed as dist

        y = x_slice @ self.weight.T
        if reduce:
            dist.all_reduce(y)  # the ONE collective of a TP MLP's forward
        return y


def tp_mlp_forward(mlp, x, rank: int, world: int):
    """A Llama MLP, down(silu(gate x) * up x), split over ranks: gate/up column-, down row-parallel."""
    import torch.nn.functional as F

    gate = ColumnParallelLinear(mlp.gate_proj.weight, rank, world)
    up = ColumnParallelLinear(mlp.up_proj.weight, rank, world)
    down = RowParallelLinear(mlp.down_proj.weight, rank, world)
    return down(F.silu(gate(x)) * up(x))


# ---------------------------------------------------------------------------
# Pipeline parallelism: the bubble
# ---------------------------------------------------------------------------
def bubble_fraction(stages: int, micro_batches: int) -> float:
    """Idle fraction of a GPipe / 1F1B pipeline: (p - 1) / (m + p - 1) for p stages, m micro-batches."""
    if stages < 1 or micro_batches < 1:
        raise LabkitError("stages and micro_batches must be at least 1")
    return (stages - 1) / (micro_batches + stages - 1)

"""Lab 03: gradient checkpointing -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise

def _saved_bytes_8_layers_every4() -> float:
    import torch

    from .. import checkpointing, memory, models

    cfg = models.config("lab-tiny", num_hidden_layers=8)
    model = models.build(cfg, device="cpu", seed=0).train()
    ids = torch.randint(0, cfg.vocab_size, (2, 128), generator=torch.Generator().manual_seed(0))
    checkpointing.apply_checkpointing(model, every=4)
    return float(memory.saved_activation_bytes(model, ids, use_cache=False))


def _recompute_flops_fraction_1b() -> float:
    from .. import models

    model = models.build("llama-3.2-1b", device="meta")
    layers = sum(p.numel() for p in model.model.layers.parameters())
    head = model.config.vocab_size * model.config.hidden_size
    return layers / (3 * (layers + head))      # one extra forward of the layers over (forward + 2 x forward)


def _checkpointing_saves_7b_gb() -> float:
    from .. import memory

    plain, ckpt = (memory.estimate("llama-2-7b", batch_size=1, seq_len=4096, precision="bf16-mixed",
                                   gradient_checkpointing=gc) for gc in (False, True))
    return (plain.activations - ckpt.activations) / 1e9


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "03.saved_bytes_8_layers_every4": Exercise(
        "bytes saved by the 8-layer lab-tiny-shaped model, batch 2 x 128, with every=4", _saved_bytes_8_layers_every4,
        0.01, "from the 4-layer table: A - B = (none - every=1) / 4 per checkpointed layer; outside the layers = "
              "none - 4 A; then 8 layers with 2 checkpointed keep outside + 6 A + 2 B"),
    "03.recompute_flops_fraction_1b": Exercise(
        "extra matmul FLOPs from checkpointing every layer of Llama-3.2-1B, as a fraction of forward + backward",
        _recompute_flops_fraction_1b, 0.02,
        "count parameters on `meta`: layers L, head V x h; the step costs 3 x (L + head), the recompute adds L"),
    "03.checkpointing_saves_7b_gb": Exercise(
        "GB of activations removed by checkpointing, Llama-2-7B, batch 1 x 4096, bf16-mixed (estimator)",
        _checkpointing_saves_7b_gb, 0.01, "memory.estimate(..., gradient_checkpointing=False) minus =True, activations"),
    "03.grad_accum_steps": Exercise(
        "grad_accum for an effective batch of 48 with micro-batches of 3 on 2 data-parallel GPUs",
        lambda: 48 / (3 * 2), 0.0, "effective batch = micro-batch x grad_accum x number of GPUs"),
}

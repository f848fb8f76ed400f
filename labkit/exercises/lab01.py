"""Lab 01: memory estimation -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise

def _lab_small_bytes_per_token_layer() -> float:
    """Measured, not from a formula: saved bytes of a 2-layer minus a 1-layer lab-small, per token."""
    import torch

    from .. import memory, models

    def saved(layers):
        cfg = models.config("lab-small", num_hidden_layers=layers)
        model = models.build(cfg, device="cpu", seed=0).train()
        return memory.saved_activation_bytes(model, torch.zeros(2, 16, dtype=torch.long))

    return (saved(2) - saved(1)) / (2 * 16)


def _llama2_13b_states_gb() -> float:
    from .. import memory

    e = memory.estimate("llama-2-13b", batch_size=1, seq_len=1, precision="bf16-mixed")
    return (e.weights + e.gradients + e.optimizer) / 1e9


def _llama3_8b_kv_bytes() -> float:
    from .. import memory, models

    return float(memory.kv_cache_bytes(models.config("llama-3-8b"), batch_size=8, seq_len=8192, dtype="bf16"))


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "01.lab_small_bytes_per_token_layer": Exercise(
        "bytes of activations saved per token per decoder layer of lab-small (fp32, sdpa)",
        _lab_small_bytes_per_token_layer, 0.0, "4 x (8h + 2kd + a + 2 + 4i) with h=512, i=1536, a=k=8, d=64"),
    "01.llama2_13b_states_gb": Exercise(
        "weights + gradients + AdamW states of Llama-2-13B in bf16-mixed, in GB (1e9 bytes)",
        _llama2_13b_states_gb, 0.001, "16 bytes per parameter; count the parameters on `meta`"),
    "01.llama3_8b_kv_bytes": Exercise(
        "KV cache of Llama-3-8B, batch 8 x 8192 tokens, bf16, in bytes",
        _llama3_8b_kv_bytes, 0.0, "2 (K and V) x 32 layers x batch x seq x 8 KV heads x 128 x 2 bytes"),
}

"""Measuring a model's weights: the bytes it holds now, and the bytes it would take in another format.

`model_nbytes` counts every parameter and buffer (packed 4-bit codes and bitsandbytes' quant_state
included; lab 05 §7 compares models with it); `weight_bytes` predicts, from the shapes alone, the size
of a model in fp32, bf16, int8 or nf4 -- the model-file size rule of lab 00 §5.
"""
from __future__ import annotations

from torch import nn

from ..errors import LabkitError
from .double import DQ_BLOCKSIZE
from .fourbit import NF4_BLOCKSIZE

__all__ = ["model_nbytes", "WEIGHT_FORMATS", "weight_bytes"]


def model_nbytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (packed 4-bit codes and constants included)."""
    total = 0
    seen = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
        state = getattr(t, "quant_state", None)   # bitsandbytes keeps absmax outside the parameter
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                total += state.state2.absmax.numel() * state.state2.absmax.element_size() + 4
    return total


WEIGHT_FORMATS = ("fp32", "bf16", "int8", "nf4")


def weight_bytes(model: nn.Module, fmt: str) -> int:
    """Bytes of ``model``'s weights stored in ``fmt``, from its shapes alone (a model on ``meta`` works).

    Built in lab 00, section 5 (the model-file size rule). ``"fp32"`` / ``"bf16"``: every
    parameter at 4 / 2 bytes. ``"int8"`` (LLM.int8) and ``"nf4"`` (QLoRA: NF4 with
    double-quantized constants) quantize only the weight matrices bitsandbytes replaces -- every
    ``nn.Linear`` (and GPT-2's ``Conv1D``) except the output head -- and keep the embeddings, the
    head, norms and biases in bf16. int8: one byte per weight plus an fp32 scale per output row;
    nf4, per tensor: 4-bit codes, an 8-bit absmax per block of 64, an fp32 scale per 256 of those
    and their fp32 mean (exactly what `model_nbytes` counts after `quantize_model(...,
    backend="bnb", double_quant=True)`). Tied embeddings count once.
    """
    from transformers.pytorch_utils import Conv1D

    if fmt not in WEIGHT_FORMATS:
        raise LabkitError(f"unknown weight format {fmt!r}; use one of {', '.join(WEIGHT_FORMATS)}")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    rows = {}                                   # id(weight) -> output rows, for the quantized matrices
    for module in model.modules():
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head:
            rows[id(module.weight)] = module.weight.shape[0 if isinstance(module, nn.Linear) else 1]
    total = 0
    for p in model.parameters():                # parameters() yields a tied tensor once
        n = p.numel()
        if fmt in ("fp32", "bf16"):
            total += n * (4 if fmt == "fp32" else 2)
        elif id(p) not in rows:
            total += 2 * n
        elif fmt == "int8":
            total += n + 4 * rows[id(p)]
        else:
            blocks = -(-n // NF4_BLOCKSIZE)
            total += -(-n // 2) + blocks + 4 * -(-blocks // DQ_BLOCKSIZE) + 4
    return total

"""Weights, gradients and optimizer states: the resident part of the bill.

`_Setup` holds what decides dtypes and which parameters train (precision, optimizer, LoRA,
quantization); the functions turn an `Architecture` and a setup into bytes: weights as stored
(NF4 / int8 bases, fp32 LoRA adapters), the trainable tensors, AdamW / 8-bit AdamW / SGD states
and the scratch of ``optimizer.step()``. Lab 01 §2 ("The memory bill") builds the same table by
hand as ``training_state_bytes``; §9's OOM table shows the optimizer step's transient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .arch import Architecture
from .constants import ADAM8BIT_BLOCKSIZE, ADAM8BIT_MIN_SIZE, BYTES, NF4_BLOCKSIZE

__all__: list[str] = []   # internals of `labkit.memory.estimate`; re-exported by the package under their old names


@dataclass(frozen=True)
class _Setup:
    """Everything about a run that decides dtypes and which parameters train."""

    precision: str
    optimizer: str
    lora_rank: int | None
    lora_targets: tuple[str, ...]
    quantization: str | None

    @property
    def param_dtype(self) -> str:
        """dtype of the stored (master) weights that are not quantized."""
        return "bf16" if self.precision == "bf16" else "fp32"

    @property
    def autocast(self) -> str | None:
        """dtype autocast computes matmuls in, or None without autocast."""
        return {"bf16-mixed": "bf16", "fp16-mixed": "fp16"}.get(self.precision)

    @property
    def compute_dtype(self) -> str:
        return self.autocast or self.param_dtype

    @property
    def lora_dtype(self) -> str:
        # peft keeps adapters in fp32 even on a bf16 model (get_peft_model's
        # autocast_adapter_dtype=True): small tensors, better updates.
        return "fp32"


def _lora_tensors(arch: Architecture, setup: _Setup) -> list[int]:
    """numel of every LoRA matrix: A is r x in, B is out x r, for each target in each layer."""
    if not setup.lora_rank:
        return []
    r, sizes = setup.lora_rank, []
    for name, (n_in, n_out, _) in arch.linears().items():
        if name in setup.lora_targets:
            sizes += [r * n_in, n_out * r] * arch.layers
    return sizes


def _weight_bytes(arch: Architecture, setup: _Setup) -> int:
    """Bytes of all parameters as stored: base model (maybe quantized) plus LoRA adapters."""
    total = 0
    for _, numel, role in arch.param_tensors():
        if role == "linear" and setup.quantization == "nf4":
            total += math.ceil(numel / 2) + 4 * math.ceil(numel / NF4_BLOCKSIZE)
        elif role == "linear" and setup.quantization == "int8":
            total += numel  # + the per-row scales, added below
        else:
            total += numel * BYTES[setup.param_dtype]
    if setup.quantization == "int8":
        total += 4 * arch.layers * sum(n_out for _, n_out, _ in arch.linears().values())
    total += sum(_lora_tensors(arch, setup)) * BYTES[setup.lora_dtype]
    return total


def _trainable_tensors(arch: Architecture, setup: _Setup) -> tuple[list[int], str]:
    """numel of each trainable tensor, and their dtype."""
    if setup.lora_rank:
        return _lora_tensors(arch, setup), setup.lora_dtype
    return [n for _, n, _ in arch.param_tensors()], setup.param_dtype


def _optimizer_bytes(sizes: list[int], dtype: str, optimizer: str) -> int:
    """Optimizer state: AdamW keeps m and v, SGD with momentum keeps one buffer, plain SGD nothing.
    (Built in lab 01, section 2, inside ``training_state_bytes``.)

    States have the dtype of their parameter (bf16 for a pure-bf16 model).
    bitsandbytes' AdamW8bit stores m and v as uint8 with an fp32 absmax per
    block of 256 values; tensors under 4096 values keep 32-bit states."""
    n = sum(sizes)
    if optimizer == "adamw":
        return 2 * n * BYTES[dtype]
    if optimizer == "sgd-momentum":
        return n * BYTES[dtype]
    if optimizer == "sgd":
        return 0
    total = 0  # adamw-8bit
    for numel in sizes:
        if numel >= ADAM8BIT_MIN_SIZE:
            total += 2 * (numel + 4 * math.ceil(numel / ADAM8BIT_BLOCKSIZE))
        else:
            total += 2 * numel * 4
    return total


def _optimizer_scratch(sizes: list[int], dtype: str, optimizer: str, device: str | None) -> int:
    """Temporary memory of ``optimizer.step()``.

    On CUDA, torch's AdamW defaults to the *foreach* implementation, which
    computes sqrt(v) for all parameters of one dtype at once: one extra tensor
    the size of v. On CPU it loops over parameters: ``v.sqrt() / c`` makes two
    temporaries the size of the largest parameter."""
    if optimizer != "adamw" or not sizes:
        return 0
    if device == "cpu":
        return 2 * max(sizes) * BYTES[dtype]
    return sum(sizes) * BYTES[dtype]


"""The numbers every part of the memory estimator shares: units, the options it knows, bytes per dtype,
and the sizes bitsandbytes and CUDA add.

They live apart so that the bill (`labkit.memory.bill`), the replay (`labkit.memory.replay`,
`labkit.memory.ops`) and the measurements (`labkit.memory.measure`) read one definition. Lab 01 §2
lists `OPTIMIZERS` in its bytes-per-parameter table; §11 answers "what does the CUDA context cost?"
with `CUDA_CONTEXT_BYTES` beside the context measured on an H100.
"""
from __future__ import annotations

__all__ = ["GB", "MiB", "OPTIMIZERS", "QUANTIZATIONS", "ATTENTIONS", "DEVICES", "DEFAULT_LORA_TARGETS",
           "LINEAR_NAMES", "BYTES", "NF4_BLOCKSIZE", "ADAM8BIT_BLOCKSIZE", "ADAM8BIT_MIN_SIZE", "CUDA_CONTEXT_BYTES",
           "CUBLAS_WORKSPACE_BYTES"]

GB = 1e9
MiB = 2**20

OPTIMIZERS = ("adamw", "adamw-8bit", "sgd", "sgd-momentum")
QUANTIZATIONS = (None, "int8", "nf4")
ATTENTIONS = ("sdpa", "eager")
DEVICES = (None, "cuda", "cpu")
DEFAULT_LORA_TARGETS = ("q_proj", "v_proj")
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int64": 8, "bool": 1, "int8": 1}

# NF4 as bitsandbytes stores it (bnb_4bit_use_double_quant=False, the default):
# two 4-bit codes per byte, plus one fp32 absmax per block of 64 weights.
from ..quant.fourbit import NF4_BLOCKSIZE  # noqa: E402 -- one definition, labkit.quant (lab 05 §4)
# LLM.int8 (Linear8bitLt): one int8 per weight plus one fp32 scale per output row.
# bitsandbytes' 8-bit optimizers: one uint8 per state value plus an fp32 absmax
# per block of 256; tensors smaller than 4096 values keep fp32 states.
ADAM8BIT_BLOCKSIZE = 256
ADAM8BIT_MIN_SIZE = 4096

# What the CUDA context (driver, kernels, library handles) takes *outside*
# PyTorch's allocator: (total - free) from torch.cuda.mem_get_info() minus
# torch.cuda.memory_reserved(). `labkit.bench.memory` measured 751-779 MiB on an
# H100 80GB (torch 2.11, CUDA 13, driver 580); it differs between GPUs, drivers
# and the libraries a process loads.
CUDA_CONTEXT_BYTES = 770 * MiB
# cuBLAS keeps a workspace per (thread, stream) handle, allocated through
# PyTorch's allocator on the first matmul and kept, so it counts in
# torch.cuda.memory_allocated(): 32 MiB for cuBLAS + 1 MiB for cuBLASLt on a
# Hopper GPU, once for the forward (main thread) and once for the backward
# (autograd's device thread). Measured: 66 MiB above weights + optimizer states.
CUBLAS_WORKSPACE_BYTES = 2 * (32 + 1) * MiB

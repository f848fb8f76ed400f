"""How much GPU memory does training take? Estimate it, then measure it.

A training step keeps four kinds of tensors in memory:

* **weights**     -- the parameters;
* **gradients**   -- one per *trainable* parameter;
* **optimizer**   -- AdamW keeps two running averages (m, v) per trainable
  parameter, SGD with momentum one, plain SGD none;
* **activations** -- the tensors autograd saves during the forward pass so the
  backward pass can compute gradients. They grow with batch x sequence length.

The famous "16 bytes per parameter" rule for full fine-tuning with AdamW:

* ``fp32``:        weights 4 + gradients 4 + m 4 + v 4 = 16;
* ``bf16-mixed``:  the *master* weights stay fp32 (4), so do their gradients
  (4) and AdamW's m and v (4 + 4): again 16. Autocast makes bf16 copies of the
  weights for the matmuls, but those copies live only during the step -- they
  are saved for backward, so we count them as *activations*, not weights;
* ``bf16`` (pure): weights, gradients, m and v all in bf16: 2 + 2 + 2 + 2 = 8.

Lab 01, section 2 ("The memory bill") builds this table, 8-bit AdamW included, as
``training_state_bytes``; the other labs quote their bytes per parameter from it.

Activations are derived op by op, not fitted: `llama_layer_ops` replays a decoder
layer on symbolic tensors (sizes and dtypes), each op recording what autograd
keeps for its backward -- attention, MLP, norms, RoPE, LoRA, the loss.
`saved_activation_bytes` measures the very same quantity on a real model, on
any device, with `torch.autograd.graph.saved_tensors_hooks`.

The *peak* of a real step is not the sum of the four parts: gradients do not
exist yet while the activations are largest (``zero_grad`` frees them), and the
activations are gone when the optimizer runs. The same op-by-op replay, run
forward and then backward the way autograd does (freeing each op's saved
tensors, creating each input's gradient), gives the peak of every phase; see
`MemoryEstimate` for what ``total`` counts.

Measure on a GPU with `measure_training_step`; on a CPU, `live_peak_bytes`
tracks every tensor alive during any function, so the peak of a whole training
step can be checked without a GPU.

From a terminal::

    python -m labkit memory --model llama-2-7b --batch-size 1 --seq-len 2048 --precision bf16-mixed

The package is split by role (every name is re-exported here, so ``labkit.memory.X`` works):

* `labkit.memory.bill` -- `estimate`, `MemoryEstimate`, `kv_cache_bytes` (the bill);
* `labkit.memory.arch` -- `architecture`, `Architecture`, `supported_models` (reading a config);
* `labkit.memory.states` -- weights, gradients and optimizer-state bytes;
* `labkit.memory.replay` -- symbolic tensors, the tape, the forward and backward peaks;
* `labkit.memory.ops` -- the per-op models and `llama_layer_ops` (one decoder layer);
* `labkit.memory.step` -- the whole step on a tape, and the numbers read from it;
* `labkit.memory.measure` -- `saved_activation_bytes`, `live_peak_bytes`, `measure_training_step`, ...;
* `labkit.memory.cli` -- ``python -m labkit memory``;
* `labkit.memory.constants` -- units, options, bytes per dtype, CUDA's fixed costs.
"""
from __future__ import annotations

from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from ..train import PRECISIONS, autocast
from .arch import FAMILIES, Architecture, _Arch, _arch, _supported_names, architecture, supported_models
from .cli import main
from .constants import (ADAM8BIT_BLOCKSIZE, ADAM8BIT_MIN_SIZE, ATTENTIONS, BYTES, CUBLAS_WORKSPACE_BYTES,
                        CUDA_CONTEXT_BYTES, DEFAULT_LORA_TARGETS, DEVICES, GB, LINEAR_NAMES, NF4_BLOCKSIZE,
                        OPTIMIZERS, QUANTIZATIONS, MiB)
from .bill import (MemoryEstimate, _check, _check_lora_rank, _context_warning, _peak, estimate,
                       kv_cache_bytes)
from .measure import (LiveTensors, _as_batch, _cdata, _storage_key, cuda_context_bytes, live_peak_bytes,
                      make_optimizer, measure_training_step, saved_activation_bytes, training_step)
from .ops import (LayerContext, _ask_transformers_cache, _attention, _cache_values_follow_keys, _layer_weights,
                  _linear, _Linear, _llama_layer, _matmul, _rmsnorm, _rope, _sdpa_backward_scratch,
                  cache_values_follow_keys, llama_layer_ops, sdpa_kernel)
from .replay import _T, _Backward, _external, _forward_peak, _Op, _promote, _saved_storages, _Tape
from .states import _lora_tensors, _optimizer_bytes, _optimizer_scratch, _Setup, _trainable_tensors, _weight_bytes
from .step import _record_step, _simulate, _StepMemory

# Does the KV cache store values in the keys' dtype? None: ask the installed transformers
# (`cache_values_follow_keys`); True/False: force it (to re-estimate measurements taken with
# another transformers version, as ``python -m labkit.bench.memory --reestimate`` does).
CACHE_VALUES_FOLLOW_KEYS: bool | None = None

__all__ = ["MemoryEstimate", "estimate", "kv_cache_bytes", "Architecture", "architecture", "FAMILIES",
           "supported_models", "LayerContext", "llama_layer_ops", "sdpa_kernel", "cache_values_follow_keys",
           "CACHE_VALUES_FOLLOW_KEYS", "saved_activation_bytes", "LiveTensors", "live_peak_bytes", "make_optimizer",
           "training_step", "cuda_context_bytes", "measure_training_step", "main", "PRECISIONS", "autocast",
           "GB", "MiB", "OPTIMIZERS", "QUANTIZATIONS", "ATTENTIONS", "DEVICES", "DEFAULT_LORA_TARGETS",
           "LINEAR_NAMES", "BYTES", "NF4_BLOCKSIZE", "ADAM8BIT_BLOCKSIZE", "ADAM8BIT_MIN_SIZE", "CUDA_CONTEXT_BYTES",
           "CUBLAS_WORKSPACE_BYTES"]

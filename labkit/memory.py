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

Activations are derived op by op, not fitted: `_llama_layer` replays a decoder
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
"""
from __future__ import annotations

import contextlib
import functools
import gc
import math
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field, replace
from itertools import count

import torch

from .errors import LabkitError
from .train import PRECISIONS, autocast  # one definition of the precision modes, shared with the training loop

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
NF4_BLOCKSIZE = 64
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


# ---------------------------------------------------------------------------
# The answer
# ---------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    """Bytes of one training step. Every size field is an integer number of bytes.

    ``weights``, ``gradients``, ``optimizer``: the parameters, the gradients of
    the trainable ones, the optimizer states. ``activations``: what autograd
    saves for backward in ``model(ids, labels=ids)`` (`saved_activation_bytes`
    measures the same thing).

    ``peak_allocated`` predicts ``torch.cuda.max_memory_allocated()`` of a step
    (``zero_grad(set_to_none=True)``, forward, backward, ``optimizer.step()``):
    weights + optimizer states + the batch + ``framework`` (the cuBLAS
    workspaces) + the largest of three phases, replayed tensor by tensor:

    * ``forward``: saved activations pile up; at the end the output still holds
      the logits (and their fp32 copy), the last hidden state and the KV cache;
    * ``backward``: activations are freed op by op while gradients appear;
    * ``optimizer step``: all gradients plus the optimizer's scratch.

    ``transient`` is what that phase holds beyond activations (forward,
    backward) or gradients (optimizer step); ``peak_phase`` names it.
    ``total = peak_allocated + cuda_context``: the CUDA context lives outside
    PyTorch's allocator (``cuda_context`` is 0 for ``device="cpu"``).
    ``naive_sum`` is the back-of-envelope weights + gradients + optimizer +
    activations, for comparison. ``activations_per_layer``: what one decoder
    layer in the middle of the model saves, without checkpointing.

    Lab 01 builds these terms by hand: weights + gradients + optimizer in
    section 2 (``training_state_bytes``), ``activations_per_layer`` and
    ``activations`` for a model stored in one dtype in section 3
    (``layer_activation_bytes``, ``activation_bytes``).
    """

    weights: int
    gradients: int
    optimizer: int
    activations: int
    total: int
    n_params: int
    n_trainable: int
    transient: int = 0
    peak_allocated: int = 0
    cuda_context: int = 0
    framework: int = 0
    peak_phase: str = ""
    model: str = ""
    batch_size: int = 0
    seq_len: int = 0
    precision: str = ""
    optimizer_name: str = ""
    gradient_checkpointing: bool = False
    lora_rank: int | None = None
    quantization: str | None = None
    attn_implementation: str = ""
    activations_per_layer: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # about the request itself (e.g. seq beyond context)

    @property
    def naive_sum(self) -> int:
        """weights + gradients + optimizer + activations: the usual back-of-envelope sum."""
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        setup = (f"{self.model or 'model'}: batch {self.batch_size} x seq {self.seq_len}, {self.precision}, "
                 f"{self.optimizer_name}, attn {self.attn_implementation}"
                 + (", grad-ckpt" if self.gradient_checkpointing else "")
                 + (f", LoRA r={self.lora_rank}" if self.lora_rank else "")
                 + (f", {self.quantization} base" if self.quantization else ""))
        params = f"{self.n_params / 1e9:.3f}B params, {self.n_trainable / 1e6:,.2f}M trainable"
        rows = [("weights", self.weights), ("gradients", self.gradients), ("optimizer states", self.optimizer),
                ("activations (saved)", self.activations), (f"transient ({self.peak_phase})", self.transient),
                ("cuBLAS workspace", self.framework), ("peak allocated", self.peak_allocated),
                ("CUDA context", self.cuda_context), ("total", self.total)]
        width = max(len(name) for name, _ in rows)
        lines = [setup, params, "-" * (width + 14)]
        for name, value in rows:
            if name in ("peak allocated", "total"):
                lines.append("-" * (width + 14))
            lines.append(f"{name:<{width}}  {value / GB:>9.3f} GB")
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Architecture: which parameters a model has
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Arch:
    """The sizes of a decoder-only transformer that memory depends on."""

    kind: str                 # "llama": Llama, Qwen2, Mistral (the only family modelled)
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    attn_dropout: float
    name: str = ""
    context: int = 0          # max_position_embeddings: the sequence length the model was trained for (0: unknown)

    def linears(self) -> dict[str, tuple[int, int, bool]]:
        """Linear layers of one decoder layer: name -> (in_features, out_features, has_bias)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q, self.qkv_bias), "k_proj": (h, kv, self.qkv_bias), "v_proj": (h, kv, self.qkv_bias),
                "o_proj": (q, h, self.o_bias), "gate_proj": (h, i, self.mlp_bias),
                "up_proj": (h, i, self.mlp_bias), "down_proj": (i, h, self.mlp_bias)}

    def param_tensors(self) -> list[tuple[str, int, str]]:
        """Every parameter tensor as (name, numel, role); role is 'linear', 'bias', 'norm', 'embed' or 'head'.

        Only 'linear' weights of the decoder layers are quantized by bitsandbytes
        (the embedding and the output head stay in 16/32-bit)."""
        per_layer = []
        for name, (n_in, n_out, bias) in self.linears().items():
            per_layer.append((name, n_in * n_out, "linear"))
            if bias:
                per_layer.append((name + ".bias", n_out, "bias"))
        per_layer += [("input_layernorm", self.hidden, "norm"), ("post_attention_layernorm", self.hidden, "norm")]
        tensors = [("embed_tokens", self.vocab * self.hidden, "embed")]
        for layer in range(self.layers):
            tensors += [(f"layers.{layer}.{name}", n, role) for name, n, role in per_layer]
        tensors.append(("norm", self.hidden, "norm"))
        if not self.tied:
            tensors.append(("lm_head", self.vocab * self.hidden, "head"))
        return tensors

    @property
    def n_params(self) -> int:
        """Parameter count from the shapes (built in lab 00, section 4, as ``llama_params``)."""
        return sum(n for _, n, _ in self.param_tensors())


FAMILIES = ("llama", "qwen2", "mistral")   # the model types the replay of `_llama_layer` models


def _arch(config) -> _Arch:
    from . import models

    if isinstance(config, str) and config not in models.names():
        # models' own message lists every architecture it knows, gpt2 included; list what works here
        raise LabkitError(f"unknown model {config!r}; memory estimates know {', '.join(supported_models())} "
                          "(or pass a Llama-family transformers config)")
    cfg = models.resolve_config(config)
    model_type = getattr(cfg, "model_type", "")
    if model_type in FAMILIES:
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        qwen = model_type == "qwen2"
        if getattr(cfg, "use_sliding_window", False) and qwen:
            raise LabkitError("sliding-window attention is not modelled; set use_sliding_window=False")
        return _Arch(kind="llama", vocab=cfg.vocab_size, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                     heads=heads, kv_heads=getattr(cfg, "num_key_value_heads", None) or heads, head_dim=head_dim,
                     intermediate=cfg.intermediate_size, tied=bool(cfg.tie_word_embeddings),
                     qkv_bias=True if qwen else bool(getattr(cfg, "attention_bias", False)),
                     o_bias=False if qwen else bool(getattr(cfg, "attention_bias", False)),
                     mlp_bias=bool(getattr(cfg, "mlp_bias", False)),
                     attn_dropout=float(getattr(cfg, "attention_dropout", 0.0) or 0.0),
                     name=config if isinstance(config, str) else model_type,
                     context=int(getattr(cfg, "max_position_embeddings", 0) or 0))
    what = f"{config!r} ({model_type})" if isinstance(config, str) and config != model_type else repr(model_type)
    raise LabkitError(f"memory estimates support Llama-family models ({', '.join(FAMILIES)}), not {what}; "
                      f"use one of {', '.join(supported_models())} or a Llama-family transformers config")


@functools.lru_cache(maxsize=1)
def _supported_names() -> tuple[str, ...]:
    from . import models

    return tuple(n for n in models.names() if getattr(models.config(n), "model_type", "") in FAMILIES)


def supported_models() -> list[str]:
    """The `labkit.models` names `estimate` accepts: the Llama-family ones (not gpt2, not the GPT-NeoX stand-in)."""
    return list(_supported_names())


# ---------------------------------------------------------------------------
# Weights, gradients and optimizer states
# ---------------------------------------------------------------------------
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


def _lora_tensors(arch: _Arch, setup: _Setup) -> list[int]:
    """numel of every LoRA matrix: A is r x in, B is out x r, for each target in each layer."""
    if not setup.lora_rank:
        return []
    r, sizes = setup.lora_rank, []
    for name, (n_in, n_out, _) in arch.linears().items():
        if name in setup.lora_targets:
            sizes += [r * n_in, n_out * r] * arch.layers
    return sizes


def _weight_bytes(arch: _Arch, setup: _Setup) -> int:
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


def _trainable_tensors(arch: _Arch, setup: _Setup) -> tuple[list[int], str]:
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


# ---------------------------------------------------------------------------
# Replaying a training step with sizes only
# ---------------------------------------------------------------------------
# The forward pass is written out op by op, the way transformers runs it, on
# symbolic tensors (`_T`: a size, a dtype, whether autograd tracks it). Each op
# records the tensors autograd saves for its backward. Three questions then
# have exact answers without running anything:
#
# * activations: the bytes of all saved tensors (each storage once);
# * forward peak: saved tensors + the ones still in use + the logits and KV cache;
# * backward peak: walk the ops in reverse, as autograd does: each op frees its
#   saved tensors and its output's gradient, and allocates its inputs' gradients;
#   parameters' gradients stay.
@dataclass(eq=False)
class _T:
    """A symbolic tensor. ``base`` is set for views, which share their base's memory."""

    numel: int
    dtype: str
    grad: bool
    param: bool = False
    base: "_T | None" = None

    @property
    def nbytes(self) -> int:
        return self.numel * BYTES[self.dtype]

    @property
    def storage(self) -> "_T":
        return self.base or self


@dataclass(eq=False)
class _Op:
    name: str
    inputs: list
    out: _T
    saved: list
    shares_grad: bool = False     # backward hands its output's gradient on unchanged (add, cat)
    scratch: int = 0              # bytes its backward needs briefly, besides the gradients
    segment: list | None = None   # a checkpointed layer: its ops, recomputed during backward


def _promote(a: str, b: str) -> str:
    """Result dtype of an elementwise op on two float tensors (fp32 wins)."""
    return a if a == b else "fp32"


class _Tape:
    """Records ops on symbolic tensors. ``autocast``: the dtype autocast casts matmuls to."""

    def __init__(self, autocast: str | None):
        self.autocast = autocast
        self.ops: list[_Op] = []
        self.keep: list[_T] = []        # held by the model's output until forward returns (logits, KV cache)
        self.held: list[_T] = []        # held by the graph until backward ends, though not "saved"

    @staticmethod
    def param(numel: int, dtype: str, trainable: bool) -> _T:
        return _T(int(numel), dtype, trainable, param=True)

    def op(self, name: str, inputs, numel: int, dtype: str, saved=(), shares_grad=False,
           view=False, scratch=0) -> _T:
        grad = any(t.grad for t in inputs)
        out = _T(int(numel), dtype, grad, base=inputs[0].storage if view else None)
        # autograd saves only for ops it records, i.e. when the output needs a gradient
        kept = [t for t in saved if not t.param] if grad else []
        self.ops.append(_Op(name, list(inputs), out, kept, shares_grad, scratch))
        return out

    def cast(self, t: _T, dtype: str) -> _T:
        """``t.to(dtype)``: a new tensor unless the dtype already matches."""
        return t if t.dtype == dtype else self.op("to", [t], t.numel, dtype)

    def for_matmul(self, t: _T) -> _T:
        """Autocast casts a matmul's operands (weights too) to the low-precision dtype."""
        return self.cast(t, self.autocast) if self.autocast else t

    @contextlib.contextmanager
    def checkpoint(self, x: _T):
        """Record a checkpointed layer: in forward only its input is saved; its ops are kept
        aside and recomputed in backward."""
        outer, self.ops = self.ops, []
        try:
            yield
        finally:
            segment, self.ops = self.ops, outer
            out = segment[-1].out
            self.ops.append(_Op("checkpoint", [x], out, [x], segment=segment))


def _saved_storages(ops) -> dict:
    return {t.storage: t.storage.nbytes for op in ops for t in op.saved}


def _external(ops) -> set:
    """Storages ``ops`` use but did not create (a layer's input, cos/sin)."""
    born = {op.out.storage for op in ops}
    return {t.storage for op in ops for t in op.inputs} - born


def _forward_peak(ops, keep=(), keep_saved=True) -> tuple[int, int]:
    """(peak, bytes alive at the end) of running ``ops``, counting only tensors they create.

    A tensor is freed after its last use unless it is saved for backward (and
    ``keep_saved``) or kept by the model output. Checkpointed segments run with
    their saves dropped."""
    last = {}
    for i, op in enumerate(ops):
        for t in op.inputs:
            last[t.storage] = i
    stay = set(_saved_storages(ops)) if keep_saved else set()
    stay |= {t.storage for t in keep}
    alive: dict = {}
    current = peak = 0
    for i, op in enumerate(ops):
        if op.segment is not None:
            inner, _ = _forward_peak(op.segment, keep=[op.out], keep_saved=False)
            peak = max(peak, current + inner)
        born = [op.out] if op.out.base is None else []
        born += [t for t in op.saved if t.storage not in last and t is not op.out]   # e.g. the logsumexp
        for t in born:
            if t.storage not in alive:
                alive[t.storage] = t.storage.nbytes
                current += t.storage.nbytes
        peak = max(peak, current)
        for t in [*op.inputs, op.out]:
            st = t.storage
            if st in alive and last.get(st, -1) <= i and st not in stay:
                current -= alive.pop(st)
    return peak, current


class _Backward:
    """Autograd's backward pass, sizes only: ops run in reverse order of the forward."""

    def __init__(self, alive: int):
        self.current = self.peak = alive      # bytes above the resident weights/optimizer states
        self.buffers: dict[int, list] = {}    # gradient buffer id -> [bytes, number of tensors sharing it]
        self.grad_of: dict = {}               # tensor storage -> gradient buffer id
        self.param_grads: set = set()
        self._ids = count()

    def _alloc(self, nbytes: int) -> int:
        bid = next(self._ids)
        self.buffers[bid] = [nbytes, 0]
        self.current += nbytes
        return bid

    def _release(self, bid: int) -> None:
        self.buffers[bid][1] -= 1
        if self.buffers[bid][1] <= 0:
            self.current -= self.buffers.pop(bid)[0]

    def _attach(self, t: _T, bid: int) -> None:
        """Hand gradient buffer ``bid`` to tensor ``t``."""
        fresh = self.buffers[bid][1] == 0
        if t.param and t not in self.param_grads:
            self.param_grads.add(t)        # becomes .grad: stays until the optimizer step
            self.buffers.pop(bid)          # (still counted in `current`)
        elif t.param or t.storage in self.grad_of:
            if fresh:                      # added into the existing gradient, then freed
                self.current -= self.buffers.pop(bid)[0]
        else:
            self.grad_of[t.storage] = bid
            self.buffers[bid][1] += 1

    def run(self, ops, external=frozenset(), seed: _T | None = None) -> None:
        """Backward through ``ops``, starting from ``seed``'s gradient (``loss.backward()``);
        ``external`` storages are owned (and freed) by someone else."""
        if seed is not None:               # the gradient of the loss: a 1-element tensor of ones
            self._attach(seed, self._alloc(seed.nbytes))
        refs: dict = {}
        for op in ops:
            for t in op.saved:
                refs[t.storage] = refs.get(t.storage, 0) + 1
        for op in reversed(ops):
            if not op.out.grad:
                continue
            if op.segment is not None:     # checkpointed layer: recompute it, then backprop through it
                outside = _external(op.segment)
                inner, _ = _forward_peak(op.segment, keep=[op.out])
                self.peak = max(self.peak, self.current + inner)
                self.current += sum(n for st, n in _saved_storages(op.segment).items() if st not in outside)
                self.run(op.segment, external=outside)
            else:
                self._step(op)
            for t in op.saved:
                refs[t.storage] -= 1
                if refs[t.storage] == 0 and t.storage not in external:
                    self.current -= t.storage.nbytes

    def _step(self, op: _Op) -> None:
        bid = self.grad_of.pop(op.out.storage, None)
        if bid is None:
            return
        # each input's gradient: a new tensor, or (add, cat) the output's gradient itself
        new = [(t, bid if op.shares_grad and t.dtype == op.out.dtype else self._alloc(t.nbytes))
               for t in op.inputs if t.grad]
        # an op that promoted a bf16 input to fp32 (bf16 q times fp32 cos) computes that
        # input's gradient in fp32 first, then casts it down: one fp32 temporary
        promoted = max([t.numel * BYTES[op.out.dtype] for t in op.inputs if t.grad and not op.shares_grad
                        and op.name != "to" and BYTES[t.dtype] < BYTES[op.out.dtype]], default=0)
        self.peak = max(self.peak, self.current + op.scratch + promoted)
        for t, b in new:
            self._attach(t, b)
        self._release(bid)

    @property
    def param_grad_bytes(self) -> int:
        return sum(t.nbytes for t in self.param_grads)


@dataclass(frozen=True)
class _Linear:
    n_in: int
    n_out: int
    weight: _T             # the parameter (resident; trainable in full fine-tuning)
    quantized: str | None  # "nf4" or "int8": a frozen bitsandbytes layer
    lora_a: _T | None      # LoRA adapter matrices (trainable), or None
    lora_b: _T | None


def _matmul(tape: _Tape, x: _T, w: _T, n_in: int, n_out: int) -> _T:
    """``y = x @ W.T``: backward needs x for dW and W for dx.

    A parameter itself never counts (it is a weight, not an activation), but
    under autocast the bf16 *copy* of W is a new tensor, saved when dx is needed."""
    xc, wc = tape.for_matmul(x), tape.for_matmul(w)
    saved = ([xc] if w.grad else []) + ([wc] if x.grad else [])
    return tape.op("mm", [xc, wc], x.numel // n_in * n_out, xc.dtype, saved)


def _linear(tape: _Tape, x: _T, lin: _Linear, setup: "_Setup") -> _T:
    """nn.Linear, a bitsandbytes 4/8-bit Linear, and peft's LoRA around either."""
    rows = x.numel // lin.n_in
    if lin.quantized == "nf4":
        # bnb Linear4bit: x.to(bf16) -> an autograd Function that keeps nothing
        # in saved_tensors (backward dequantizes W to bf16 again) -> back to x's dtype.
        y = tape.op("matmul_4bit", [tape.cast(x, "bf16")], rows * lin.n_out, "bf16",
                    scratch=lin.n_in * lin.n_out * BYTES["bf16"])
        y = tape.cast(y, x.dtype)
    elif lin.quantized == "int8":
        # bnb Linear8bitLt (LLM.int8): its Function keeps x on its context -- real
        # memory, though outside saved_tensors -- and dequantizes W in backward.
        y = tape.op("matmul_8bit", [x], rows * lin.n_out, x.dtype, saved=[x],
                    scratch=lin.n_in * lin.n_out * BYTES[x.dtype])
    else:
        y = _matmul(tape, x, lin.weight, lin.n_in, lin.n_out)
    if lin.lora_a is None:
        return y
    # LoRA: y + B(A(x)) * scaling, with A, B in fp32 (peft). peft's plain Linear
    # casts x to A's dtype first; its bitsandbytes Linears only without autocast
    # (and the 4-bit one clones the base output first).
    rank = lin.lora_a.numel // lin.n_in
    if lin.quantized == "nf4":
        y = tape.op("clone", [y], y.numel, y.dtype)
    xa = x if (lin.quantized and tape.autocast) else tape.cast(x, setup.lora_dtype)
    a = _matmul(tape, xa, lin.lora_a, lin.n_in, rank)        # saves x (or its bf16 copy): for dA
    b = _matmul(tape, a, lin.lora_b, rank, lin.n_out)        # saves a: r values per token, for dB
    b = tape.op("mul", [b], b.numel, b.dtype)                # * scaling (a Python float: saves nothing)
    if lin.quantized and tape.autocast:
        return tape.op("add", [y, b], y.numel, _promote(y.dtype, b.dtype), shares_grad=True)
    if lin.quantized:
        b = tape.cast(b, y.dtype)
    out = tape.op("add", [y, b], y.numel, _promote(y.dtype, b.dtype), shares_grad=True)
    return tape.cast(out, y.dtype)                           # peft casts back to the base layer's dtype


def _rmsnorm(tape: _Tape, x: _T, weight: _T, hidden: int) -> _T:
    """LlamaRMSNorm: ``weight * (x32 * rsqrt(mean(x32**2) + eps)).to(x.dtype)``, in fp32."""
    tokens = x.numel // hidden
    x32 = tape.cast(x, "fp32")
    sq = tape.op("pow", [x32], x.numel, "fp32", saved=[x32])
    var = tape.op("mean", [sq], tokens, "fp32")
    var = tape.op("add", [var], tokens, "fp32", shares_grad=True)
    inv_rms = tape.op("rsqrt", [var], tokens, "fp32")        # one value per token...
    tape.ops[-1].saved = [inv_rms] if inv_rms.grad else []  # ...which rsqrt keeps (its own output)
    normed = tape.op("mul", [x32, inv_rms], x.numel, "fp32", saved=[x32, inv_rms])
    normed = tape.cast(normed, x.dtype)
    saved = ([normed] if weight.grad else []) + ([weight] if normed.grad else [])
    return tape.op("mul", [weight, normed], x.numel, _promote(weight.dtype, x.dtype), saved=saved)


def _rope(tape: _Tape, q: _T, cos: _T, sin: _T) -> _T:
    """``q * cos + rotate_half(q) * sin``: the muls keep cos and sin (shared by every layer)."""
    dtype = _promote(q.dtype, cos.dtype)
    qc = tape.op("mul", [q, cos], q.numel, dtype, saved=[cos])
    half = q.numel // 2
    x1 = tape.op("slice", [q], half, q.dtype, view=True)
    x2 = tape.op("slice", [q], half, q.dtype, view=True)
    rot = tape.op("cat", [tape.op("neg", [x2], half, q.dtype), x1], q.numel, q.dtype, shares_grad=True)
    rs = tape.op("mul", [rot, sin], q.numel, dtype, saved=[sin])
    return tape.op("add", [qc, rs], q.numel, dtype, shares_grad=True)


def sdpa_kernel(device: str | None, dtype: str, gqa: bool) -> str:
    """Which kind of scaled_dot_product_attention kernel a training forward uses.

    ``"flash"`` stands for the fused kernels that keep q, k, v, the output and
    a per-row logsumexp: CPU's flash kernel (every dtype, GQA included) and, on
    CUDA for fp16/bf16, FlashAttention or cuDNN attention (an H100 with torch
    2.11 picks cuDNN; both save the same). For fp32, CUDA uses the memory-
    efficient kernel -- which has no GQA support, so fp32 with GQA falls back
    to the math kernel, which keeps the seq x seq attention matrix like eager."""
    if device == "cuda" and dtype == "fp32":
        return "math" if gqa else "efficient"
    return "flash"


def _sdpa_backward_scratch(kernel: str, device: str | None, arch: "_Arch", batch: int, seq: int,
                           dtype: str) -> int:
    """Work buffers a CUDA attention backward allocates besides dq, dk, dv.

    FlashAttention-2 accumulates dq in fp32 (seq rounded up to 128, head_dim
    to 32) and keeps one fp32 value per query row; with GQA it computes dk, dv
    for every query head before summing them per KV head. (cuDNN's buffers
    measured about the same; CPU kernels' internal buffers are invisible to
    `live_peak_bytes`, so they are left out for CPU.)"""
    if device != "cuda" or kernel != "flash":
        return 0
    seq_r = 128 * math.ceil(seq / 128)
    dim_r = 32 * math.ceil(arch.head_dim / 32)
    scratch = batch * seq_r * arch.heads * dim_r * 4 + batch * arch.heads * seq_r * 4
    if arch.kv_heads != arch.heads:
        scratch += 2 * batch * seq * arch.heads * arch.head_dim * BYTES[dtype]
    return scratch


def _attention(tape: _Tape, q: _T, k: _T, v: _T, arch: "_Arch", batch: int, seq: int,
               attn: str, device: str | None, mask: _T | None = None) -> _T:
    """Attention core; returns the (batch, seq, heads * head_dim) output fed to o_proj."""
    bhsd = batch * arch.heads * seq * arch.head_dim
    bhss = batch * arch.heads * seq * seq
    kernel = "eager" if attn == "eager" else sdpa_kernel(device, tape.autocast or q.dtype,
                                                          arch.kv_heads != arch.heads)
    if kernel == "flash" and arch.attn_dropout > 0 and device != "cuda":
        kernel = "math"                    # CPU's flash kernel has no dropout
    if kernel in ("flash", "efficient"):
        # One autograd node keeps q, k, v (k and v with their own KV heads: GQA
        # is native), the output, and a per-head logsumexp (fp32) of the softmax.
        qc, kc, vc = tape.for_matmul(q), tape.for_matmul(k), tape.for_matmul(v)
        rows = seq if kernel == "flash" else 32 * math.ceil(seq / 32)     # efficient pads to 32
        lse = _T(batch * arch.heads * rows, "fp32", False)
        out = tape.op("sdpa", [qc, kc, vc], bhsd, qc.dtype, scratch=_sdpa_backward_scratch(
            kernel, device, arch, batch, seq, qc.dtype))
        if out.grad:
            tape.ops[-1].saved = [qc, kc, vc, out, lse]
        return out                        # laid out (batch, seq, heads, dim): o_proj uses it as is
    # Eager (and the math kernel): p = softmax(q k^T / sqrt(d)); out = p v.
    # k, v are repeated to all heads (GQA); the batched matmuls work on
    # contiguous copies of q, k, v in the compute dtype (fp32 in the math kernel).
    cdt = "fp32" if kernel == "math" else (tape.autocast or q.dtype)
    q2, k2, v2 = (tape.op("copy", [t], bhsd, cdt) for t in (q, k, v))
    scores = tape.op("bmm", [q2, k2], bhss, cdt, saved=([q2] if k2.grad else []) + ([k2] if q2.grad else []))
    scores = tape.op("mul", [scores], bhss, cdt)                     # * 1/sqrt(d)
    scores = tape.op("add", [scores] + ([mask] if mask else []), bhss, cdt, shares_grad=True)  # + causal mask
    p32 = tape.op("softmax", [tape.cast(scores, "fp32")], bhss, "fp32")
    tape.ops[-1].saved = [p32] if p32.grad else []                   # softmax keeps its output
    p = tape.cast(p32, q.dtype if kernel == "eager" else "fp32")
    if arch.attn_dropout > 0:
        # which probabilities survive: CUDA's fused dropout keeps a bool mask,
        # CPU multiplies by a float noise tensor and keeps that
        keep = _T(bhss, "bool" if device == "cuda" else p.dtype, False)
        p = tape.op("dropout", [p], bhss, p.dtype, saved=[keep])
    p2 = tape.for_matmul(p) if kernel == "eager" else p
    out = tape.op("bmm", [p2, v2], bhsd, cdt, saved=([p2] if v2.grad else []) + ([v2] if p2.grad else []))
    out = tape.cast(out, tape.autocast or q.dtype)  # the math kernel returns the input dtype
    return tape.op("copy", [out], bhsd, out.dtype)  # transpose(1, 2).contiguous()


def _llama_layer(tape: _Tape, x: _T, w: dict, arch: "_Arch", setup: "_Setup", batch: int, seq: int,
                 attn: str, device: str | None, cos: _T, sin: _T, cache: bool, mask: _T | None = None) -> _T:
    """One decoder layer (Llama, Qwen2), op by op as transformers runs it."""
    residual = x
    h = _rmsnorm(tape, x, w["input_layernorm"], arch.hidden)
    q = _rope(tape, _linear(tape, h, w["q_proj"], setup), cos, sin)
    k = _rope(tape, _linear(tape, h, w["k_proj"], setup), cos, sin)
    v = _linear(tape, h, w["v_proj"], setup)
    if cache:
        # use_cache=True (the default, even in training): DynamicCache.update
        # concatenates k, v onto empty tensors -- copies -- and attention uses
        # the copies. The cache keeps them until the model's output is dropped.
        k = tape.op("cat", [k], k.numel, k.dtype, shares_grad=True)
        v = tape.op("cat", [v], v.numel, k.dtype if _cache_values_follow_keys() else v.dtype, shares_grad=True)
        tape.keep += [k, v]
    o = _linear(tape, _attention(tape, q, k, v, arch, batch, seq, attn, device, mask), w["o_proj"], setup)
    x = tape.op("add", [residual, o], x.numel, _promote(residual.dtype, o.dtype), shares_grad=True)
    residual = x
    h = _rmsnorm(tape, x, w["post_attention_layernorm"], arch.hidden)
    gate, up = _linear(tape, h, w["gate_proj"], setup), _linear(tape, h, w["up_proj"], setup)
    act = tape.op("silu", [gate], gate.numel, gate.dtype, saved=[gate])
    m = tape.op("mul", [act, up], gate.numel, _promote(act.dtype, up.dtype),
                saved=([up] if act.grad else []) + ([act] if up.grad else []))
    y = _linear(tape, m, w["down_proj"], setup)
    return tape.op("add", [residual, y], x.numel, _promote(residual.dtype, y.dtype), shares_grad=True)


# None: ask the installed transformers (below); True/False: force it (to re-estimate
# measurements taken with another transformers version).
CACHE_VALUES_FOLLOW_KEYS: bool | None = None


def _cache_values_follow_keys() -> bool:
    """Does this transformers' DynamicCache store values in the *keys'* dtype?

    Some versions (5.17) create both empty cache tensors with the keys' dtype,
    so under autocast (fp32 keys after RoPE, bf16 values) the cached values
    become an fp32 copy. Asked of the library itself on two 1-element tensors."""
    if CACHE_VALUES_FOLLOW_KEYS is not None:
        return CACHE_VALUES_FOLLOW_KEYS
    return _ask_transformers_cache()


@functools.lru_cache(maxsize=None)
def _ask_transformers_cache() -> bool:
    try:
        from transformers.cache_utils import DynamicLayer

        layer = DynamicLayer()
        layer.lazy_initialization(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16))
        return layer.values.dtype == torch.float32
    except Exception:  # noqa: BLE001 -- an unknown cache layout: assume values keep their dtype
        return False


def _layer_weights(tape: _Tape, arch: "_Arch", setup: "_Setup") -> dict:
    full = not setup.lora_rank
    pdt = setup.param_dtype
    w = {}
    for name, (n_in, n_out, _) in arch.linears().items():
        lora = setup.lora_rank if name in setup.lora_targets else None
        w[name] = _Linear(n_in, n_out, tape.param(n_in * n_out, pdt, full), setup.quantization,
                          tape.param(lora * n_in, setup.lora_dtype, True) if lora else None,
                          tape.param(n_out * lora, setup.lora_dtype, True) if lora else None)
    for name in ("input_layernorm", "post_attention_layernorm"):
        w[name] = tape.param(arch.hidden, pdt, full)
    return w


def _record_step(arch: "_Arch", setup: "_Setup", batch: int, seq: int, attn: str,
                 checkpointing: bool, device: str | None) -> tuple[_Tape, _T]:
    """Record ``model(input_ids, labels=input_ids).loss`` on a tape; returns (tape, loss)."""
    tape = _Tape(setup.autocast)
    full = not setup.lora_rank
    pdt = setup.param_dtype
    tokens = batch * seq
    embed = tape.param(arch.vocab * arch.hidden, pdt, full)
    x = tape.op("embedding", [embed], tokens * arch.hidden, pdt)     # keeps only the token ids
    # rotary cos/sin: (1, seq, head_dim) each, in the embedding's dtype, shared by all layers
    positions = tape.op("position_ids", [], seq, "int64")
    cos = tape.op("rope_cos", [positions], seq * arch.head_dim, pdt)
    sin = tape.op("rope_sin", [positions], seq * arch.head_dim, pdt)
    mask = tape.op("causal_mask", [], batch * seq * seq, pdt) if attn == "eager" else None
    if checkpointing:                  # each checkpoint holds its layer's keyword arguments
        tape.held += [t for t in (positions, cos, sin, mask) if t is not None]
    for _ in range(arch.layers):
        w = _layer_weights(tape, arch, setup)
        if checkpointing:              # transformers turns the KV cache off with checkpointing
            with tape.checkpoint(x):
                out = _llama_layer(tape, x, w, arch, setup, batch, seq, attn, device, cos, sin, False, mask)
            x = out
        else:
            x = _llama_layer(tape, x, w, arch, setup, batch, seq, attn, device, cos, sin, True, mask)
    h = _rmsnorm(tape, x, tape.param(arch.hidden, pdt, full), arch.hidden)
    head = embed if arch.tied else tape.param(arch.vocab * arch.hidden, pdt, full)
    logits = _matmul(tape, h, head, arch.hidden, arch.vocab)
    tape.keep += [h, logits]                          # the model's outputs hold both until it returns
    # transformers' loss: logits.float() -> cross_entropy = log_softmax + nll_loss
    log_probs = tape.op("log_softmax", [tape.cast(logits, "fp32")], tokens * arch.vocab, "fp32")
    tape.ops[-1].saved = [log_probs] if log_probs.grad else []      # log_softmax keeps its output
    padded = tape.op("pad_labels", [], batch * (seq + 1), "int64")  # labels padded by one...
    labels = tape.op("shift_labels", [padded], tokens, "int64")     # ...shifted: a contiguous copy
    loss = tape.op("nll_loss", [log_probs], 1, "fp32", saved=[labels, _T(1, "fp32", False)])
    tape.keep += [padded, loss]
    return tape, loss


@dataclass
class _StepMemory:
    activations: int     # bytes saved for backward (each storage once)
    forward_peak: int    # most bytes alive during the forward, above weights/optimizer states
    backward_peak: int   # most bytes alive during the backward (gradients of parameters included)
    gradients: int       # parameter gradients at the end of backward
    per_layer: int       # bytes one (middle) layer saves without checkpointing


def _simulate(arch, setup, batch, seq, attn, checkpointing, device) -> _StepMemory:
    tape, loss = _record_step(arch, setup, batch, seq, attn, checkpointing, device)
    activations = sum(_saved_storages(tape.ops).values())
    forward_peak, _ = _forward_peak(tape.ops, keep=tape.keep + tape.held)
    bwd = _Backward(alive=activations + sum(t.nbytes for t in tape.held))
    bwd.run(tape.ops, seed=loss)
    # one layer in the middle of the model: its input needs a gradient
    probe = _Tape(setup.autocast)
    x = _T(batch * seq * arch.hidden, setup.param_dtype, True)
    cos, sin = _T(seq * arch.head_dim, setup.param_dtype, False), _T(seq * arch.head_dim, setup.param_dtype, False)
    _llama_layer(probe, x, _layer_weights(probe, arch, setup), arch, setup, batch, seq, attn, device,
                 cos, sin, cache=False)
    per_layer = sum(n for st, n in _saved_storages(probe.ops).items() if st not in (cos, sin))
    return _StepMemory(activations, forward_peak, bwd.peak, bwd.param_grad_bytes, per_layer)


# ---------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------
def _check(batch_size, seq_len, precision, optimizer, lora_rank, lora_targets, quantization,
           attn_implementation, device) -> None:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise LabkitError(f"{name} must be a positive integer, got {value!r}")
    if precision not in PRECISIONS:
        raise LabkitError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if optimizer not in OPTIMIZERS:
        raise LabkitError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if attn_implementation not in ATTENTIONS:
        raise LabkitError(f"unknown attention {attn_implementation!r}; use one of {', '.join(ATTENTIONS)}")
    if device not in DEVICES:
        raise LabkitError(f"device must be 'cuda', 'cpu' or None, got {device!r}")
    if lora_rank is not None and (not isinstance(lora_rank, int) or isinstance(lora_rank, bool) or lora_rank <= 0):
        raise LabkitError(f"lora_rank must be a positive integer (or None for full fine-tuning), got {lora_rank!r}")
    unknown = [t for t in lora_targets if t not in LINEAR_NAMES]
    if unknown:
        raise LabkitError(f"unknown LoRA target(s) {unknown}; choose from {', '.join(LINEAR_NAMES)}")
    if lora_rank and not lora_targets:
        raise LabkitError("lora_targets is empty; name at least one layer, e.g. ('q_proj', 'v_proj')")
    if quantization not in QUANTIZATIONS:
        raise LabkitError(f"unknown quantization {quantization!r}; use 'int8', 'nf4' or None")
    if quantization and not lora_rank:
        raise LabkitError(f"a {quantization} base model is frozen: add a LoRA rank (e.g. lora_rank=16) to train it")
    if quantization and precision == "fp32":
        raise LabkitError(f"{quantization} layers compute in 16-bit; use precision 'bf16' or 'bf16-mixed'")
    if quantization and device == "cpu" and quantization == "int8":
        raise LabkitError("int8 (LLM.int8) training is a GPU-only combination; use device='cuda' or nf4")
    if optimizer == "adamw-8bit" and device == "cpu":
        raise LabkitError("adamw-8bit (bitsandbytes) keeps its states on a GPU; use device='cuda' or adamw")
    if precision == "fp16-mixed" and device == "cpu":
        raise LabkitError("fp16-mixed needs a GPU (autocast fp16 + GradScaler); on CPU use bf16-mixed")


def estimate(config, *, batch_size: int, seq_len: int, precision: str = "bf16-mixed", optimizer: str = "adamw",
             gradient_checkpointing: bool = False, lora_rank: int | None = None, quantization: str | None = None,
             attn_implementation: str = "sdpa", lora_targets=DEFAULT_LORA_TARGETS, device: str | None = None,
             cuda_context: int | None = None) -> MemoryEstimate:
    """Estimate the memory of one training step of a causal LM.

    ``config``: a transformers config or a name from `labkit.models` (Llama
    family: llama, qwen2, mistral). ``precision``: ``fp32``; ``bf16-mixed`` /
    ``fp16-mixed`` (autocast over fp32 master weights); ``bf16`` (pure bf16
    weights, gradients and optimizer states). ``optimizer``: ``adamw``,
    ``adamw-8bit`` (bitsandbytes), ``sgd-momentum``, ``sgd`` (no state).

    LoRA (``lora_rank``, adapters on ``lora_targets``): only the adapters
    train; they are fp32, as peft makes them even on a bf16 model; the frozen
    base weights still cost activations: under autocast their bf16 copies are
    saved for the input gradients. ``quantization`` applies to the decoder's
    linear layers (bitsandbytes keeps embeddings, norms and the head in 16/32
    bits, in fp32 under ``bf16-mixed`` as peft's prepare_model_for_kbit_training
    leaves them): ``"nf4"`` (QLoRA: 4-bit codes + one fp32 absmax per 64
    weights, no double quantization) or ``"int8"`` (LLM.int8: int8 + an fp32
    scale per row; modelled, not measured).

    ``activations`` is what autograd saves in ``model(ids, labels=ids)`` --
    the quantity `saved_activation_bytes` measures. ``device`` picks kernel
    rules where CPU and CUDA differ:

    * ``None``: what CPU kernels save (CUDA's flash/cuDNN attention saves the
      same), with a GPU's overheads in the peak (cuBLAS workspace, CUDA context,
      foreach AdamW scratch);
    * ``"cuda"``: CUDA's kernels: fp32 attention runs the memory-efficient or
      (with GQA) the math kernel, attention backward work buffers, bool dropout masks;
    * ``"cpu"``: CPU's: for-loop AdamW, no workspace, no CUDA context.

    ``total = peak_allocated + cuda_context`` (default `CUDA_CONTEXT_BYTES`):
    about what nvidia-smi shows, minus allocator fragmentation. The replay
    assumes a step like `training_step` with transformers' default
    ``use_cache=True`` (the returned KV cache is alive until the forward
    returns; checkpointing turns it off).
    """
    lora_targets = tuple(lora_targets or ())
    _check(batch_size, seq_len, precision, optimizer, lora_rank, lora_targets, quantization,
           attn_implementation, device)
    arch = _arch(config)
    _check_lora_rank(arch, lora_rank, lora_targets)
    setup = _Setup(precision, optimizer, lora_rank, lora_targets, quantization)
    weights = _weight_bytes(arch, setup)
    sizes, train_dtype = _trainable_tensors(arch, setup)
    n_trainable = sum(sizes)
    gradients = n_trainable * BYTES[train_dtype]
    opt = _optimizer_bytes(sizes, train_dtype, optimizer)
    step = _simulate(arch, setup, batch_size, seq_len, attn_implementation, gradient_checkpointing, device)
    phase, transient, peak = _peak(weights, opt, step, batch_size * seq_len,
                                   _optimizer_scratch(sizes, train_dtype, optimizer, device))
    framework = 0 if device == "cpu" else CUBLAS_WORKSPACE_BYTES
    context = 0 if device == "cpu" else (CUDA_CONTEXT_BYTES if cuda_context is None else int(cuda_context))
    peak_allocated = peak + framework
    notes = []
    warnings = [_context_warning(arch, seq_len)] if arch.context and seq_len > arch.context else []
    if attn_implementation == "sdpa" and sdpa_kernel("cuda", setup.compute_dtype, arch.kv_heads != arch.heads) == "math" \
            and device != "cpu":
        notes.append("fp32 + grouped-query attention: CUDA sdpa falls back to the math kernel "
                     "(estimate with device='cuda' for its seq x seq matrices)" if device is None else
                     "fp32 + grouped-query attention: CUDA sdpa uses the math kernel (seq x seq matrices)")
    return MemoryEstimate(
        weights=int(weights), gradients=int(gradients), optimizer=int(opt), activations=int(step.activations),
        total=int(peak_allocated + context), n_params=arch.n_params + sum(_lora_tensors(arch, setup)),
        n_trainable=int(n_trainable), transient=int(transient), peak_allocated=int(peak_allocated),
        cuda_context=int(context), framework=int(framework), peak_phase=phase,
        model=config if isinstance(config, str) else arch.name, batch_size=batch_size, seq_len=seq_len,
        precision=precision, optimizer_name=optimizer, gradient_checkpointing=bool(gradient_checkpointing),
        lora_rank=lora_rank, quantization=quantization, attn_implementation=attn_implementation,
        activations_per_layer=int(step.per_layer), notes=notes, warnings=warnings)


def _context_warning(arch: _Arch, seq_len: int) -> str:
    return (f"seq_len {seq_len} is beyond the {arch.context} tokens {arch.name or 'the model'} was trained for "
            "(max_position_embeddings); the estimate is computed anyway, but the model would need a longer "
            "context (e.g. RoPE scaling) to use such sequences")


def _check_lora_rank(arch: _Arch, lora_rank: int | None, lora_targets) -> None:
    """A LoRA update B @ A of an (in -> out) layer has rank <= min(in, out): a larger rank only adds parameters."""
    if not lora_rank:
        return
    linears = arch.linears()
    name = min(lora_targets, key=lambda t: min(linears[t][:2]))
    n_in, n_out, _ = linears[name]
    if lora_rank > min(n_in, n_out):
        raise LabkitError(f"lora_rank {lora_rank} exceeds min(in, out) = {min(n_in, n_out)} of {name} "
                          f"({n_in} -> {n_out}): its update B @ A has rank at most {min(n_in, n_out)}, so a larger "
                          f"rank only adds parameters; use lora_rank <= {min(n_in, n_out)}")


def _peak(weights: int, opt: int, step: "_StepMemory", tokens: int, opt_scratch: int) -> tuple[str, int, int]:
    """The largest moment of a step -> (its name, its short-lived bytes, bytes allocated then).

    The step is ``zero_grad(set_to_none=True); loss = model(...).loss;
    loss.backward(); optimizer.step()``. Weights, optimizer states and the
    batch are there the whole time; on top of them:

    * forward: the saved activations pile up; at the end the logits (and
      their fp32 copy for the loss) and the KV cache the output returns;
    * backward: activations are freed op by op while gradients appear (the
      first ones are the loss's: tokens x vocab in fp32, twice);
    * optimizer step: all gradients, plus the optimizer's scratch.
    """
    resident = weights + opt + tokens * BYTES["int64"]
    moments = {
        "forward": (step.forward_peak, step.activations),
        "backward": (step.backward_peak, step.activations),
        "optimizer step": (step.gradients + opt_scratch, step.gradients),
    }
    name = max(moments, key=lambda k: moments[k][0])
    above, held = moments[name]
    return name, above - held, resident + above


def kv_cache_bytes(config, batch_size: int, seq_len: int, dtype="bf16") -> int:
    """Inference KV cache: keys and values of every layer, for every token in the batch.

    ``2 x layers x batch x seq x kv_heads x head_dim x bytes``. With grouped-
    query attention only the KV heads are cached (Llama-3-8B: 8 of 32 heads).
    Built in lab 01, section 7 (``kv_cache_bytes``), checked there against the
    DynamicCache transformers returns.
    """
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise LabkitError(f"{name} must be a positive integer, got {value!r}")
    aliases = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
               "int8": "int8", "fp8": "int8"}
    if isinstance(dtype, torch.dtype):
        size = torch.empty((), dtype=dtype).element_size()
    elif isinstance(dtype, str) and aliases.get(dtype, dtype) in ("bf16", "fp16", "fp32", "int8"):
        size = BYTES[aliases.get(dtype, dtype)]
    else:
        raise LabkitError(f"unknown dtype {dtype!r}; use 'bf16', 'fp16', 'fp32', 'fp8' or a torch dtype")
    arch = _arch(config)
    return 2 * arch.layers * batch_size * seq_len * arch.kv_heads * arch.head_dim * size


# ---------------------------------------------------------------------------
# Measuring: saved activations (any device), live tensors (CPU), CUDA peak
# ---------------------------------------------------------------------------
def _storage_key(t: torch.Tensor):
    """Identity of the memory under a tensor (views of one storage share it)."""
    try:
        st = t.untyped_storage()
    except (RuntimeError, NotImplementedError):   # e.g. tensor subclasses without storage
        return None, 0
    return (st.device.type, st.data_ptr()), st.nbytes()


def saved_activation_bytes(model, input_ids: torch.Tensor, **forward_kwargs) -> int:
    """Bytes autograd saves for backward during ``model(input_ids, labels=input_ids)``.

    Every tensor an op keeps for its backward passes through a
    `saved_tensors_hooks` pack hook; we add up the storages, each once (by
    data pointer), skipping parameters (and buffers) and the input ids. Runs in
    whatever state the caller set up: ``model.train()``, an autocast context,
    ``gradient_checkpointing_enable()``. The forward's graph is dropped after.
    Built in lab 01, section 3 (``saved_tensors`` / ``saved_bytes``).
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise LabkitError("input_ids must be a (batch, seq) tensor of token ids")
    skip = {_storage_key(p)[0] for p in model.parameters()} | {_storage_key(b)[0] for b in model.buffers()}
    skip.add(_storage_key(input_ids)[0])
    seen: dict = {}

    def pack(t):
        key, nbytes = _storage_key(t)
        if key is not None and key not in skip:
            seen[key] = nbytes
        # Return a detached alias: returning `t` itself would tie a tensor that an op
        # saved from its own output into a reference cycle the GC never frees (a leak
        # of every forward's outputs). This graph is never backpropagated anyway.
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids, labels=input_ids, **forward_kwargs)
    del out
    return sum(seen.values())


def _cdata(t: torch.Tensor):
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):
        return None


class LiveTensors:
    """A TorchDispatchMode that tracks the bytes of every storage created inside it.

    Each op's outputs are registered (new storages only, views are free); a
    `weakref.finalize` on the storage subtracts its bytes when PyTorch frees it.
    ``current`` and ``peak`` count only storages created inside the mode.
    """

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(mode, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inputs = {_cdata(t) for t in torch.utils._pytree.tree_flatten((args, kwargs))[0]
                          if isinstance(t, torch.Tensor)}
                for t in torch.utils._pytree.tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and _cdata(t) not in inputs:   # views, in-place: no new memory
                        self._alloc(t)
                return out

        self._mode = _Mode()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _alloc(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        if st.device.type == "meta" or st._cdata in self._live:
            return
        self._live[st._cdata] = st.nbytes()
        self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, st._cdata)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def live_peak_bytes(fn, *args, **kwargs) -> int:
    """Peak bytes of tensors alive during ``fn(*args, **kwargs)``, above what existed before.

    Works on any device, CPU included: run a whole training step inside it to
    check a peak-memory model without a GPU. (Tensors that existed before the
    call are not counted, even if fn frees them.)
    """
    gc.collect()
    with LiveTensors() as tracker:
        fn(*args, **kwargs)
    return tracker.peak


def make_optimizer(params, name: str = "adamw", lr: float = 1e-4):
    """The optimizers the estimator knows, with torch's defaults (AdamW: foreach on CUDA)."""
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adamw-8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise LabkitError("adamw-8bit needs bitsandbytes (pip install bitsandbytes)") from None
        return bnb.optim.AdamW8bit(params, lr=lr)
    raise LabkitError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def training_step(model, batch: dict, optimizer, precision: str = "bf16-mixed", scaler=None) -> float:
    """One step the way the estimator assumes it: grads set to None, forward under autocast, backward, step."""
    optimizer.zero_grad(set_to_none=True)
    device_type = batch["input_ids"].device.type
    with autocast(device_type, precision):
        loss = model(**batch).loss
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _as_batch(batch) -> dict:
    if isinstance(batch, torch.Tensor):
        return {"input_ids": batch, "labels": batch}
    if isinstance(batch, dict) and "input_ids" in batch:
        return {"labels": batch["input_ids"], **batch}
    raise LabkitError("batch must be a (batch, seq) tensor of token ids or a dict with 'input_ids'")


def cuda_context_bytes() -> int:
    """Device memory this process holds outside PyTorch's allocator (the CUDA context).

    ``(total - free)`` from `torch.cuda.mem_get_info` minus
    `torch.cuda.memory_reserved`. Assumes no other process uses this GPU."""
    free, total = torch.cuda.mem_get_info()
    return int(total - free - torch.cuda.memory_reserved())


def measure_training_step(model, batch, optimizer: str = "adamw", precision: str = "bf16-mixed",
                          steps: int = 2, lr: float = 1e-4) -> dict:
    """Run real training steps on CUDA and measure the last one's peak memory.

    The first ``steps - 1`` steps warm up (optimizer states, cuBLAS workspace,
    autocast kernels); then peak stats are reset and one more step is measured.
    Returns bytes: ``peak_allocated`` (torch.cuda.max_memory_allocated),
    ``peak_reserved`` (the caching allocator's high-water mark, which adds
    fragmentation), ``start_allocated`` (before the measured step: weights,
    optimizer states, workspaces) and ``cuda_context`` (`cuda_context_bytes`).
    Build the model in the dtype you mean: bfloat16 for ``precision="bf16"``.
    """
    if not torch.cuda.is_available():
        raise LabkitError("measure_training_step needs a CUDA GPU; on CPU use saved_activation_bytes "
                          "or live_peak_bytes")
    if precision not in PRECISIONS:
        raise LabkitError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if not isinstance(steps, int) or steps < 2:
        raise LabkitError("steps must be an integer >= 2 (one warm-up step, then the measured one)")
    batch = _as_batch(batch)
    if batch["input_ids"].device.type != "cuda":
        batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    model.train()
    opt = make_optimizer(model.parameters(), optimizer, lr)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16-mixed" else None
    for _ in range(steps - 1):
        training_step(model, batch, opt, precision, scaler)
    opt.zero_grad(set_to_none=True)            # the measured step starts without gradients
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    loss = training_step(model, batch, opt, precision, scaler)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result = {"peak_allocated": int(torch.cuda.max_memory_allocated()),
              "peak_reserved": int(torch.cuda.max_memory_reserved()),
              "start_allocated": int(start), "cuda_context": cuda_context_bytes(),
              "step_seconds": seconds, "loss": loss, "device": torch.cuda.get_device_name()}
    opt.zero_grad(set_to_none=True)
    del opt
    return result


# ---------------------------------------------------------------------------
# python -m labkit memory
# ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from . import cli

    p = cli.parser("memory", "Estimate the GPU memory of one training step (weights, gradients, "
                             "optimizer states, activations, peak).")
    p.add_argument("--model", required=True, help="a Llama-family labkit model: " + ", ".join(supported_models()))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--precision", default="bf16-mixed", help=", ".join(PRECISIONS))
    p.add_argument("--optimizer", default="adamw", help=", ".join(OPTIMIZERS))
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lora-rank", type=int, default=None)
    p.add_argument("--lora-targets", default=",".join(DEFAULT_LORA_TARGETS),
                   help="comma-separated LoRA target layers (default q_proj,v_proj)")
    p.add_argument("--quantization", default=None, help="nf4 or int8 (needs --lora-rank)")
    p.add_argument("--attn", default="sdpa", help="sdpa or eager")
    p.add_argument("--device", default=None, help="cuda or cpu: apply that device's kernel rules")
    args = p.parse_args(argv)
    est = estimate(args.model, batch_size=args.batch_size, seq_len=args.seq_len, precision=args.precision,
                   optimizer=args.optimizer, gradient_checkpointing=args.gradient_checkpointing,
                   lora_rank=args.lora_rank, quantization=args.quantization, attn_implementation=args.attn,
                   lora_targets=tuple(t for t in args.lora_targets.split(",") if t), device=args.device)
    print(replace(est, warnings=[]))   # warnings go to stderr (the table and a --json last line stay clean)
    for warning in est.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        cli.emit_json(est.to_dict())
    return 0

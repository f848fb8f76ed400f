"""The memory bill of one training step: `estimate` -> `MemoryEstimate`, and the KV cache of inference.

`estimate` checks a request, reads the architecture (`labkit.memory.arch`), prices the
resident state (`labkit.memory.states`: weights, gradients, optimizer states), replays the step
(`labkit.memory.step`) for the activations and the peak of each phase, and adds what CUDA
holds (cuBLAS workspaces, the context). `MemoryEstimate` is the answer, printable as a table.
Lab 01 builds its terms by hand -- §2 the resident bill, §3 the activations of a one-dtype
model -- and then uses `estimate` from §4 on (§5 against a GPU, §6 the rules of thumb, §8 the
calculator, §9 the OOM fixes); §7 builds `kv_cache_bytes`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..errors import LabkitError
from ..train import PRECISIONS  # one definition of the precision modes, shared with the training loop
from .arch import Architecture, architecture
from .constants import (ATTENTIONS, BYTES, CUBLAS_WORKSPACE_BYTES, CUDA_CONTEXT_BYTES, DEFAULT_LORA_TARGETS, DEVICES,
                        GB, LINEAR_NAMES, OPTIMIZERS, QUANTIZATIONS)
from .ops import sdpa_kernel
from .states import _lora_tensors, _optimizer_bytes, _optimizer_scratch, _Setup, _trainable_tensors, _weight_bytes
from .step import _simulate, _StepMemory

__all__ = ["MemoryEstimate", "estimate", "kv_cache_bytes"]


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
    arch = architecture(config)
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


def _context_warning(arch: Architecture, seq_len: int) -> str:
    return (f"seq_len {seq_len} is beyond the {arch.context} tokens {arch.name or 'the model'} was trained for "
            "(max_position_embeddings); the estimate is computed anyway, but the model would need a longer "
            "context (e.g. RoPE scaling) to use such sequences")


def _check_lora_rank(arch: Architecture, lora_rank: int | None, lora_targets) -> None:
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


def _peak(weights: int, opt: int, step: _StepMemory, tokens: int, opt_scratch: int) -> tuple[str, int, int]:
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
    arch = architecture(config)
    return 2 * arch.layers * batch_size * seq_len * arch.kv_heads * arch.head_dim * size


"""Measuring memory on real models: what autograd saves, what is alive, what CUDA peaks at.

The estimator's claims are checked against these, on any device: `saved_activation_bytes`
(the tensors a forward saves for backward, via ``saved_tensors_hooks``), `LiveTensors` /
`live_peak_bytes` (every storage created inside a dispatch mode: the peak of a whole step on a
CPU), and on a GPU `measure_training_step` (``max_memory_allocated`` of one step after a
warm-up) with `cuda_context_bytes`. `training_step` is the step the estimator assumes.
Lab 01 §3 builds ``saved_bytes`` (= `saved_activation_bytes`), §2 and §9 measure with
`training_step` / `live_peak_bytes`, §5 runs `measure_training_step` (via `labkit.bench.memory`);
labs 03 and 11 track CPU memory with `LiveTensors`.
"""
from __future__ import annotations

import gc
import time
import weakref

import torch

from ..errors import LabkitError
from ..train import PRECISIONS, train_step  # one definition of the precision modes and the step, shared with the training loop
from .constants import OPTIMIZERS

__all__ = ["saved_activation_bytes", "LiveTensors", "live_peak_bytes", "make_optimizer", "training_step",
           "cuda_context_bytes", "measure_training_step"]


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
    """One step the way the estimator assumes it: grads set to None, forward under autocast, backward, step.

    `labkit.train.train_step` with no gradient clipping (it would allocate the norm's buffers)
    and the gradients kept after the step (lab 01 reads ``p.grad``); they are set to None first.
    """
    optimizer.zero_grad(set_to_none=True)
    loss, _ = train_step(model, batch, optimizer, precision=precision, scaler=scaler,
                         max_grad_norm=None, zero_grad=False)
    return loss


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


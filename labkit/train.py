"""One plain training loop for every lab.

Later labs change *options* of this loop (precision, checkpointing, gradient
accumulation, an extra loss term for EWC, a callback that runs probes), never
copy it. It is deliberately the loop you would write by hand:

    for step in range(steps):
        for micro in range(grad_accum):
            with autocast:                     # lab 02
                loss = model(**batch).loss / grad_accum
            backward(loss)                     # scaled in fp16 (lab 02)
        clip, optimizer.step(), scheduler.step(), zero_grad

plus a learning-rate schedule, a progress bar and periodic evaluation. The body of the
outer loop -- one optimizer step -- is ``train_step``, for code that drives its own loop.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Mapping
from typing import Callable, Iterator

import torch

from .errors import LabkitError

__all__ = ["PRECISIONS", "SCHEDULES", "History", "TrainConfig", "autocast", "eval_batches", "evaluate_loss",
           "lr_at", "pack_documents", "random_batches", "train", "train_step"]

PRECISIONS = ("fp32", "fp16-mixed", "bf16-mixed", "bf16")
SCHEDULES = ("cosine", "linear", "constant")


# ---------------------------------------------------------------------------
# Batches: documents -> one token stream -> random windows
# ---------------------------------------------------------------------------
def pack_documents(tokenizer, docs: list[str]) -> torch.Tensor:
    """Concatenate ``<bos> doc <eos>`` for every document into one 1-D token tensor.

    Pretraining does not pad: it cuts fixed-length windows out of this stream.
    """
    ids: list[int] = []
    encoded = tokenizer(docs, add_special_tokens=False)["input_ids"]
    for doc in encoded:
        ids.append(tokenizer.bos_token_id)
        ids.extend(doc)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def random_batches(tokens: torch.Tensor, batch_size: int, seq_len: int, seed: int = 0,
                   device: str | torch.device = "cpu") -> Iterator[dict]:
    """An endless, seeded iterator of ``{"input_ids", "labels"}`` windows of the stream."""
    if tokens.numel() <= seq_len + 1:
        raise LabkitError(f"only {tokens.numel()} tokens: need more than seq_len={seq_len}; use more data or a shorter seq_len")
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, tokens.numel() - seq_len, (batch_size,), generator=gen)
        x = torch.stack([tokens[s:s + seq_len] for s in starts.tolist()]).to(device)
        yield {"input_ids": x, "labels": x}


def eval_batches(tokens: torch.Tensor, batch_size: int, seq_len: int, max_batches: int | None = None,
                 device: str | torch.device = "cpu") -> list[dict]:
    """Consecutive, non-overlapping windows: the same every time, for comparable eval losses."""
    n_windows = tokens.numel() // seq_len
    windows = tokens[: n_windows * seq_len].view(n_windows, seq_len)
    batches = [windows[i:i + batch_size] for i in range(0, n_windows, batch_size)]
    if max_batches is not None:
        batches = batches[:max_batches]
    return [{"input_ids": b.to(device), "labels": b.to(device)} for b in batches]


@torch.no_grad()
def evaluate_loss(model, batches: list[dict], precision: str = "fp32") -> float:
    """Mean next-token loss over fixed batches (token-weighted)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for batch in batches:
        with autocast(device, precision):
            out = model(**batch)
        n = (batch["labels"][:, 1:] != -100).sum().item()
        total += out.loss.float().item() * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


# ---------------------------------------------------------------------------
# Precision and schedules
# ---------------------------------------------------------------------------
def autocast(device: torch.device | str, precision: str):
    """The autocast context for a precision name (a no-op for fp32 and pure bf16)."""
    device = torch.device(device)
    if precision == "fp16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def lr_at(step: int, total: int, base_lr: float, warmup: int = 0, schedule: str = "cosine",
          min_ratio: float = 0.1) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine/linear decay to
    ``min_ratio * base_lr``, or constant."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        factor = 1 - progress
    return base_lr * (min_ratio + (1 - min_ratio) * factor)


@dataclass
class TrainConfig:
    steps: int = 100
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.95)
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_accum: int = 1
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    max_grad_norm: float | None = 1.0
    eval_every: int = 0           # 0: evaluate only at the end (if eval batches are given)
    log_every: int = 1
    progress: bool = True
    desc: str = "train"

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise LabkitError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.schedule not in SCHEDULES:
            raise LabkitError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.steps < 1 or self.grad_accum < 1:
            raise LabkitError("steps and grad_accum must be at least 1")
        if self.lr <= 0:
            raise LabkitError("lr must be positive")


@dataclass
class History:
    """What happened during training, ready to plot."""
    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    eval_step: list = field(default_factory=list)
    eval_loss: list = field(default_factory=list)
    skipped_steps: int = 0        # fp16 steps skipped by the loss scaler (inf/NaN gradients)
    seconds: float = 0.0
    tokens: int = 0

    @property
    def final_loss(self) -> float:
        return self.loss[-1]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------
# One optimizer step, and the loop
# ---------------------------------------------------------------------------
def train_step(model, batch, optimizer, *, precision: str = "fp32", scaler=None,
               extra_loss: Callable | None = None, max_grad_norm: float | None = 1.0,
               zero_grad: bool = True) -> tuple[float, bool]:
    """One optimizer step; returns ``(loss, skipped)``.

    Forward under the precision's autocast (lab 02), the loss plus ``extra_loss(model)`` (EWC's
    penalty, lab 06), backward (scaled by ``scaler`` in fp16, lab 02 §5), unscale and clip the
    gradients of the trainable parameters to ``max_grad_norm``, then step. With a scaler the
    step is *skipped* when the gradients held inf/NaN (the scaler then lowers its scale):
    ``skipped`` says so. Gradients are set to None afterwards unless ``zero_grad=False``
    (`labkit.memory.training_step` keeps them, so lab 01 can read ``p.grad`` after the step).

    ``batch`` is a dict the model accepts, or a list of micro-batches whose gradients add up
    into this one step (gradient accumulation, lab 03 §9): each loss is divided by their number,
    and the returned loss is the sum of those parts, i.e. their mean.
    """
    micro_batches = [batch] if isinstance(batch, Mapping) else list(batch)
    device = next(model.parameters()).device
    step_loss = 0.0
    for micro in micro_batches:
        with autocast(device, precision):
            loss = model(**micro).loss
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            if len(micro_batches) > 1:  # one batch: no division (no extra tensor in a memory measurement)
                loss = loss / len(micro_batches)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        step_loss += loss.detach().float().item()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    skipped = False
    if scaler is not None:
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped = scaler.get_scale() < scale_before
    else:
        optimizer.step()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    return step_loss, skipped


def train(model, batches: Iterator[dict], cfg: TrainConfig, *, eval_data: list[dict] | None = None,
          optimizer: torch.optim.Optimizer | None = None, scaler=None,
          extra_loss: Callable | None = None, callback: Callable | None = None) -> History:
    """Train ``model`` for ``cfg.steps`` optimizer steps and return a `History`.

    * ``batches``: iterator of dicts the model accepts (``input_ids``, ``labels``, ...).
    * ``optimizer``: default AdamW over the parameters with ``requires_grad``
      (so LoRA and frozen bases need nothing special).
    * ``scaler``: a loss scaler with the `torch.amp.GradScaler` interface
      (``scale``, ``unscale_``, ``step``, ``update``); created for fp16-mixed.
    * ``extra_loss(model) -> tensor``: added to the loss (EWC's penalty, lab 06).
    * ``callback(step, model, history)``: called after each optimizer step
      (probes every N steps, lab 06).
    """
    cfg.check()
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LabkitError("the model has no trainable parameters (did you freeze everything?)")
    if cfg.precision == "bf16":
        bad = [p.dtype for p in params if p.dtype != torch.bfloat16]
        if bad:
            raise LabkitError("precision='bf16' trains bf16 weights: call model.to(torch.bfloat16) first")
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if scaler is None and cfg.precision == "fp16-mixed":
        scaler = torch.amp.GradScaler(device.type)
    already_on = getattr(model, "is_activation_checkpointing", None)
    if already_on is None:
        already_on = getattr(model, "is_gradient_checkpointing", False)
    enabled_checkpointing = cfg.gradient_checkpointing and not already_on
    if enabled_checkpointing:
        _set_checkpointing(model, True)
    model.train()

    history = History()
    bar = _progress(cfg)
    start = time.perf_counter()
    for step in range(cfg.steps):
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro_batches = [next(batches) for _ in range(cfg.grad_accum)]
        step_loss, skipped = train_step(model, micro_batches, optimizer, precision=cfg.precision, scaler=scaler,
                                        extra_loss=extra_loss, max_grad_norm=cfg.max_grad_norm)
        history.skipped_steps += skipped
        history.tokens += sum(batch["input_ids"].numel() for batch in micro_batches)

        history.step.append(step + 1)
        history.loss.append(step_loss)
        history.lr.append(lr)
        last = step + 1 == cfg.steps
        if eval_data is not None and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last):
            history.eval_step.append(step + 1)
            history.eval_loss.append(evaluate_loss(model, eval_data, cfg.precision))
        if callback is not None:
            callback(step + 1, model, history)
        if bar is not None:
            postfix = {"loss": f"{step_loss:.3f}", "lr": f"{lr:.1e}"}
            if history.eval_loss:
                postfix["eval"] = f"{history.eval_loss[-1]:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    history.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    if enabled_checkpointing:  # leave the model as we found it (generation wants its KV cache back)
        _set_checkpointing(model, False)
    model.eval()
    return history


def _set_checkpointing(model, on: bool) -> None:
    """transformers' own gradient checkpointing (renamed `activation_checkpointing_*` in v5.2x)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if on and hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
            disable()
    if hasattr(model, "config"):
        model.config.use_cache = not on


def _progress(cfg: TrainConfig):
    if not cfg.progress:
        return None
    from .progress import progress

    return progress(total=cfg.steps, desc=cfg.desc, leave=True, mininterval=1.0)

"""Dynamic loss scaling for fp16 mixed precision: `DynamicLossScaler`, `update_scale`.

Why a module of its own: fp16's smallest subnormal is 2^-24 (about 6e-8), so smaller gradient values
flush to zero. `DynamicLossScaler` multiplies the loss by a large scale ``S`` before backward (so every
gradient is ``S`` times larger and clears the underflow zone), divides the gradients by ``S`` before
the optimizer step, skips the step when a gradient overflowed to inf/NaN, and adapts ``S``: halve it
after an overflow, double it after ``growth_interval`` clean steps. It makes exactly the decisions
`torch.amp.GradScaler` makes, with the same interface and state, which is the whole of its job.

Built in lab 02 §5 (``scaler_update`` and ``LossScaler``, proven equal to `update_scale` and
`DynamicLossScaler`, and to GradScaler; "Why labkit's scaler was slower than GradScaler on the H100"
measures the fused unscale kernel); used by the experiments of lab 02 §6-7.
"""
from __future__ import annotations

import math

import torch

from ..errors import LabkitError

__all__ = ["update_scale", "ScalerStateError", "DynamicLossScaler"]


def _fp32(x: float) -> float:
    """Round a Python float to fp32: GradScaler keeps its scale in an fp32 tensor."""
    return torch.tensor(x, dtype=torch.float64).float().item()


def update_scale(scale: float, growth_tracker: int, found_inf: bool, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> tuple[float, int]:
    """The loss scale and clean-step count after one step: ``(new_scale, new_tracker)``.

    Built in lab 02, section 5 (``scaler_update``), and proven equal to it there and to
    ``torch._amp_update_scale_``, the kernel behind `torch.amp.GradScaler.update`. An overflow
    multiplies the scale by ``backoff_factor`` and restarts the count; the ``growth_interval``-th
    clean step in a row multiplies it by ``growth_factor`` (refused if that overflows fp32) and
    restarts the count. The scale is an fp32 number, as in GradScaler."""
    if found_inf:
        return _fp32(scale * backoff_factor), 0
    if growth_tracker + 1 < growth_interval:
        return scale, growth_tracker + 1
    grown = _fp32(scale * growth_factor)
    return (grown if math.isfinite(grown) else scale), 0


class ScalerStateError(LabkitError, RuntimeError):
    """A `DynamicLossScaler` call out of order (GradScaler raises RuntimeError for the same calls)."""


_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"    # GradScaler's OptState, per optimizer


class DynamicLossScaler:
    """Dynamic loss scaling for fp16 mixed precision, with `torch.amp.GradScaler`'s interface.

    Built in lab 02, section 5 (``LossScaler``, the dynamic loss scaler), and proven equal to
    it there and to `torch.amp.GradScaler`. Per training step::

        scaler.scale(loss).backward()   # gradients come out S times larger
        scaler.unscale_(optimizer)      # divide them by S, note any inf/NaN (optional here)
        scaler.step(optimizer)          # optimizer.step(), unless a gradient was inf/NaN
        scaler.update()                 # overflow: S *= backoff; growth_interval clean steps: S *= growth

    The scale is kept as an fp32 number, like GradScaler's, so both make the same
    decisions given the same gradients.

    **Several optimizers** (one backward, then ``step(opt_a)``, ``step(opt_b)``, one
    ``update()``): each optimizer has its own state, as in GradScaler -- *ready*, *unscaled*
    (its gradients divided by S and checked), *stepped* -- so each one's gradients are
    unscaled and inf-checked exactly once, each one's step is skipped only on its own
    overflow, and ``update()`` backs off if any of them overflowed. ``unscale_`` twice, or
    ``step`` twice, on one optimizer before ``update()`` raises, as GradScaler does: a second
    division by S would be silently wrong.

    ``unscale_`` checks and divides all gradients of one device and dtype in one fused kernel,
    ``torch._amp_foreach_non_finite_check_and_unscale_`` (GradScaler's), and reads the verdict
    back to the host once per optimizer step. The lab's readable version loops over the tensors;
    an earlier labkit version also asked ``torch.isfinite(g).all()`` of each gradient, which is
    five elementwise kernels (``isfinite`` is ``(g == g) & (g.abs() != inf)``) plus a host sync
    per tensor: lab 02, section 5 measures what that cost. Sparse gradients
    (``nn.Embedding(sparse=True)``) are unscaled and checked through their stored values.

    ``device`` is accepted so that ``GradScaler("cpu", ...)`` code runs unchanged; the scale
    itself goes to whatever device the loss is on. ``enabled=False`` turns the scaler into a
    pass-through (``scale`` returns its input, ``step`` is ``optimizer.step``), as GradScaler's.
    """

    def __init__(self, device: str | None = None, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        if device is not None and not isinstance(device, (str, torch.device)):
            raise LabkitError("the first argument is the device, as in GradScaler: pass init_scale=... by keyword")
        self._enabled = bool(enabled)
        if self._enabled:
            _check_factors(growth_factor, backoff_factor, growth_interval)
        self._scale = _fp32(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self._growth_tracker = 0       # consecutive steps without inf/NaN since the last change
        self._per_optimizer: dict[int, dict] = {}    # id(optimizer) -> {"stage", "found_inf"}
        self.skipped = 0               # optimizer steps skipped so far

    # --- the step --------------------------------------------------------------
    def scale(self, outputs):
        """``outputs * S`` for a tensor, or for every tensor in a (nested) list/tuple/iterable.

        S is a 0-dim fp32 tensor, so a 0-dim fp16 loss is promoted instead of overflowing
        (the same type promotion as GradScaler's). Lists and tuples come back as lists and
        tuples, other iterables as a lazy ``map`` -- GradScaler's rules."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, torch.Tensor):
            return outputs * torch.tensor(self._scale, dtype=torch.float32, device=outputs.device)
        if isinstance(outputs, (dict, str, bytes)):
            # GradScaler would iterate a dict's keys (or a string's characters) and return nonsense
            raise LabkitError(f"scale() takes a tensor or an iterable of tensors, not a {type(outputs).__name__}; "
                              "for a dict of losses pass list(d.values())")
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(x) for x in outputs)
        try:
            return map(self.scale, iter(outputs))
        except TypeError:
            raise ValueError("outputs must be a Tensor or an iterable of Tensors") from None

    def _state(self, optimizer) -> dict:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide every gradient of ``optimizer`` by S in place and record whether any is inf/NaN."""
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["stage"] == _UNSCALED:
            raise ScalerStateError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] == _STEPPED:
            raise ScalerStateError("unscale_() is being called after step().")
        inv_scale = _fp32(1.0 / self._scale)       # 1/S in float64, then stored as fp32 (as torch does)
        groups: dict[tuple, list[torch.Tensor]] = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.dtype == torch.float16:
                    raise ValueError("Attempting to unscale FP16 gradients: keep fp32 master weights "
                                     "(autocast), not model.half()")
                # a sparse gradient stores its nonzeros in _values() (duplicates of an index are
                # summed only when read); unscaling and checking those values is GradScaler's way
                grad = p.grad._values() if p.grad.is_sparse else p.grad
                groups.setdefault((grad.device, grad.dtype), []).append(grad)
        flags = []
        for (device, _), grads in groups.items():
            flag = torch.zeros(1, dtype=torch.float32, device=device)
            inv = torch.full((1,), inv_scale, dtype=torch.float32, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, flag, inv)   # g *= inv; flag = 1 on inf/NaN
            flags.append(flag)
        # one host sync per device; None: this optimizer had no gradient to check
        state["found_inf"] = any(bool(f.item()) for f in flags) if flags else None
        state["stage"] = _UNSCALED

    def step(self, optimizer: torch.optim.Optimizer, *args, **kwargs):
        """Unscale (if not done yet), then ``optimizer.step(*args, **kwargs)`` and return what it returns --
        or skip the step and return None if one of this optimizer's gradients overflowed."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise ScalerStateError("Closure use is not currently supported if GradScaler is enabled.")
        state = self._state(optimizer)
        if state["stage"] == _STEPPED:
            raise ScalerStateError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        if state["found_inf"] is None:
            raise ScalerStateError("No inf checks were recorded for this optimizer: none of its parameters "
                                   "has a gradient (call backward() on the scaled loss first)")
        state["stage"] = _STEPPED
        if state["found_inf"]:
            self.skipped += 1
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        """Adapt S for the next step from what this step's gradients looked like (any optimizer's
        overflow backs off), or set it to ``new_scale``; then every optimizer is ready again."""
        if not self._enabled:
            return
        if new_scale is not None:
            if isinstance(new_scale, torch.Tensor):
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise LabkitError("new_scale must be a float or a 1-element tensor that needs no gradient")
                new_scale = new_scale.item()
            self._scale = _fp32(new_scale)
        else:
            checked = [s["found_inf"] for s in self._per_optimizer.values() if s["found_inf"] is not None]
            if not checked:
                raise ScalerStateError("No inf checks were recorded prior to update(): call step(optimizer) "
                                       "(or unscale_) before update()")
            self._scale, self._growth_tracker = update_scale(self._scale, self._growth_tracker, any(checked),
                                                             self.growth_factor, self.backoff_factor,
                                                             self.growth_interval)
        self._per_optimizer = {}

    # --- GradScaler's getters, setters and state --------------------------------
    def get_scale(self) -> float:
        """The current loss scale S (a Python float holding an fp32 value); 1.0 when disabled."""
        return self._scale if self._enabled else 1.0

    def is_enabled(self) -> bool:
        return self._enabled

    def get_growth_factor(self) -> float:
        return self.growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        _check_factors(new_factor, self.backoff_factor, self.growth_interval)
        self.growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self.backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        _check_factors(self.growth_factor, new_factor, self.growth_interval)
        self.backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self.growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        _check_factors(self.growth_factor, self.backoff_factor, new_interval)
        self.growth_interval = new_interval

    def state_dict(self) -> dict:
        """GradScaler's five entries (its keys, so the two can load each other's); empty when disabled.
        Call it after update(), as with GradScaler."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take over a `state_dict` (ours or GradScaler's); a no-op when disabled."""
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise ScalerStateError("The source state dict is empty, possibly because it was saved "
                                   "from a disabled instance of GradScaler.")
        _check_factors(state_dict["growth_factor"], state_dict["backoff_factor"], state_dict["growth_interval"])
        self._scale = _fp32(float(state_dict["scale"]))
        self.growth_factor = float(state_dict["growth_factor"])
        self.backoff_factor = float(state_dict["backoff_factor"])
        self.growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])


def _check_factors(growth_factor, backoff_factor, growth_interval) -> None:
    if growth_factor <= 1.0:
        raise LabkitError("growth_factor must be > 1 (it multiplies the scale after clean steps)")
    if not 0.0 < backoff_factor < 1.0:
        raise LabkitError("backoff_factor must be between 0 and 1 (it shrinks the scale after an overflow)")
    if growth_interval < 1:
        raise LabkitError("growth_interval must be at least 1 step")

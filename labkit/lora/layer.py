"""The LoRA layer (lab 04, section 5) and the trainable copy behind ``modules_to_save``.

`LoRALinear` wraps a frozen ``nn.Linear`` -- or transformers' ``Conv1D`` (GPT-2's projections,
whose weight is stored transposed, ``d_in x d_out``: peft's ``fan_in_fan_out``) -- and adds
``scaling * B @ A``. Every numeric step follows ``peft.tuners.lora.layer.Linear`` (0.21): the
input is cast to the adapter dtype *before* dropout, a 16-bit base gets fp32 adapters, the default
merge adds the fp32 update to the 16-bit weight in one rounding, and DoRA (``use_dora=True``)
rescales by a magnitude vector over a detached weight norm.
"""
from __future__ import annotations

import copy
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LabkitError

INIT_CHOICES = (True, False, "gaussian")


def _check_rank(r) -> int:
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
        raise LabkitError(f"LoRA rank r must be a positive integer, got {r!r}")
    return int(r)


def _check_alpha_dropout(alpha, dropout) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise LabkitError(f"LoRA alpha must be a positive number, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise LabkitError(f"LoRA dropout must be a probability in [0, 1), got {dropout!r}")


def _check_init(init):
    if init is True or init is False:
        return init
    if isinstance(init, str) and init.lower() == "gaussian":
        return "gaussian"
    raise LabkitError(f"init_lora_weights={init!r} is not implemented in labkit; use True (Kaiming-uniform A, "
                      "zero B), 'gaussian' (normal A with std 1/r, zero B) or False (random A and B)")


def conv1d_class():
    """transformers' ``Conv1D`` (GPT-2's linear layers: ``y = x @ W + b`` with ``W`` of shape d_in x d_out)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a labkit dependency
        return None
    return Conv1D


def is_linear_like(module: nn.Module) -> bool:
    """A layer LoRA can wrap: ``nn.Linear`` or transformers' ``Conv1D``."""
    conv1d = conv1d_class()
    return isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (or ``Conv1D``) plus a trainable low-rank update ``scaling * B @ A``.

    Built in lab 04, section 5 (the layer). ``scaling`` is ``alpha / r``, or ``alpha / sqrt(r)``
    with ``use_rslora=True`` (rsLoRA, as peft's ``use_rslora``).
    ``forward(x) = base(x) + dropout(x) @ A.T @ B.T * scaling``. `merge` folds the update into
    ``base.weight`` (zero extra cost at inference), `unmerge` takes it out again.

    ``init_lora_weights``: ``True`` (default) draws A Kaiming-uniform and sets B = 0, so the
    adapted layer starts as the base -- one draw of A, the same A as lab 04's own class for the
    same seed; ``"gaussian"`` draws A normal with std ``1/r`` (B = 0); ``False`` leaves B random
    too (a non-zero start, for tests). The last two draw in peft's order (A's and B's
    ``nn.Linear`` on the CPU in fp32, rounded through the base dtype), so the same seed gives
    peft's tensors. ``use_dora=True``: DoRA (Liu et al., 2024), ``m * (W + s B A) / ||W + s B A||``
    row-wise, the norm detached as in the paper's section 4.3 and in peft.
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False,
                 use_dora: bool = False, init_lora_weights=True):
        super().__init__()
        if not is_linear_like(base):
            raise LabkitError(f"LoRALinear wraps an nn.Linear or a transformers Conv1D, got {type(base).__name__}")
        r = _check_rank(r)
        _check_alpha_dropout(alpha, dropout)
        self.init_lora_weights = _check_init(init_lora_weights)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.fan_in_fan_out = not isinstance(base, nn.Linear)  # Conv1D keeps W as d_in x d_out
        self.in_features, self.out_features = (w.shape[0], w.shape[1]) if self.fan_in_fan_out else (w.shape[1], w.shape[0])
        self.r, self.alpha, self.use_rslora, self.use_dora = r, alpha, bool(use_rslora), bool(use_dora)
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        # On the base's device; in fp32 unless the base is fp32/fp64 already. Like peft's default
        # (autocast_adapter_dtype=True), a bf16/fp16 or quantized base gets fp32 adapters, so the
        # optimizer updates A and B at full precision.
        dtype = w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=w.device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, r, device=w.device, dtype=dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False  # set by model.disable_adapter(): the base alone
        self._merged_norm = None  # DoRA: the weight norm at merge time, needed to unmerge
        self.reset_parameters()
        if self.use_dora:
            if not w.dtype.is_floating_point:
                raise LabkitError("DoRA needs a floating-point base weight; inject before quantizing is not "
                                  "supported for use_dora=True in labkit")
            self.lora_magnitude_vector = nn.Parameter(self._initial_magnitude().to(dtype))

    def reset_parameters(self) -> None:
        if self.init_lora_weights is True:
            # A like nn.Linear's default init (Kaiming-uniform, a=sqrt(5)); B = 0 so B @ A = 0 at step 0.
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)
            return
        # peft's order: nn.Linear(d_in, r) and nn.Linear(r, d_out) initialise A and B (CPU, default dtype);
        # "gaussian" then redraws A and zeroes B; the adapter then takes the base's float dtype.
        a = nn.Linear(self.in_features, self.r, bias=False).weight.detach()
        b = nn.Linear(self.r, self.out_features, bias=False).weight.detach()
        if self.init_lora_weights == "gaussian":
            nn.init.normal_(a, std=1 / self.r)
            nn.init.zeros_(b)
        dt = self.base.weight.dtype
        if dt.is_floating_point:
            a, b = a.to(dt), b.to(dt)
        with torch.no_grad():
            self.lora_A.copy_(a)
            self.lora_B.copy_(b)

    @torch.no_grad()
    def _initial_magnitude(self) -> torch.Tensor:
        """DoRA's m at init: the row norms of W + s B A, computed in the base dtype as peft does."""
        w = self.base.weight.detach()
        a, b = self.lora_A.to(w.dtype), self.lora_B.to(w.dtype)
        if w.dtype == torch.float16:  # peft: fp16 matmul in fp32 (slow/unsupported on some CPUs)
            lora_weight = (b.float() @ a.float()).half()
        else:
            lora_weight = b @ a
        return self._weight_norm(w.to(a.device), lora_weight, self.scaling)

    def _weight_norm(self, weight, lora_weight, scaling) -> torch.Tensor:
        """Row norms of ``W + scaling * lora_weight`` (W in its stored layout, lora_weight d_out x d_in)."""
        w = weight.T if self.fan_in_fan_out else weight
        w = w + scaling * lora_weight
        return torch.linalg.norm(w, dim=1).to(w.dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (code that reads ``layer.weight.dtype`` keeps working)."""
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The update ``scaling * B @ A``, shaped like ``base.weight`` (transposed for Conv1D).

        As peft's ``get_delta_weight``: 16-bit adapters on the CPU are multiplied in fp32."""
        a, b = self.lora_A, self.lora_B
        cast = b.device.type == "cpu" and b.dtype in (torch.float16, torch.bfloat16)
        if cast:
            a, b = a.float(), b.float()
        delta = b @ a
        delta = (delta.T if self.fan_in_fan_out else delta) * self.scaling
        return delta.to(self.lora_B.dtype) if cast else delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled:
            if self.merged:  # as peft: a disabled adapter is taken out of a merged weight
                self.unmerge()
            return self.base(x)
        out = self.base(x)
        if self.merged:
            return out
        if x.dtype != self.lora_A.dtype:
            x = x.to(self.lora_A.dtype)  # cast first, then dropout (peft's order)
        if self.use_dora:
            update = self._dora_update(x, out)
        else:
            update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling  # x @ A.T @ B.T
        return (out + update).to(out.dtype)

    def _dora_update(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """What DoRA adds to ``base(x)``: ``(m / ||W + s BA|| - 1) * W x + m / ||W + s BA|| * s B A x``."""
        a, b = self.lora_A, self.lora_B
        if isinstance(self.dropout, nn.Identity) or not self.training:
            base_result = out
        else:
            x = self.dropout(x)
            base_result = None  # W x of the dropped-out input, computed below
        eye = torch.eye(a.shape[1], device=a.device, dtype=a.dtype)
        lora_weight = F.linear(F.linear(eye, a), b).T.to(x.dtype)  # B @ A, computed as peft does
        weight = self.base.weight.to(x.dtype)
        norm = self._weight_norm(weight, lora_weight.detach(), self.scaling).detach()  # a constant (DoRA 4.3)
        scale = (self.lora_magnitude_vector / norm).view(1, -1)
        lora_result = F.linear(F.linear(x, a), b)
        if base_result is not None:
            if self.base.bias is not None:
                base_result = base_result - self.base.bias
        else:
            base_result = F.linear(x, weight.T if self.fan_in_fan_out else weight)
        return (scale - 1) * base_result + scale * lora_result * self.scaling

    def _check_mergeable(self) -> None:
        w = getattr(self.base, "weight", None)
        if w is None or not w.dtype.is_floating_point:
            raise LabkitError(f"cannot merge LoRA into a {getattr(w, 'dtype', 'quantized')} (quantized) weight; "
                              "dequantize the base layer first (quant.merge_lora_4bit for a 4-bit base)")

    @torch.no_grad()
    def merged_weight(self, safe_merge: bool = False):
        """The weight `merge` would write, and (DoRA) the weight norm it keeps; nothing is changed.

        As peft: the default adds the (fp32) update to the weight -- one rounding to a 16-bit
        weight; ``safe_merge=True`` is peft's safe path, which casts the update to the weight's
        dtype first (two roundings)."""
        self._check_mergeable()
        w = self.base.weight.detach()
        delta = self.delta_weight()
        if self.use_dora:
            d_oi = delta.T if self.fan_in_fan_out else delta
            norm = self._weight_norm(w, d_oi, 1).detach()
            factor = (self.lora_magnitude_vector / norm).view(-1, 1)
            factor = factor.T if self.fan_in_fan_out else factor
            return (factor * (w + delta)).to(w.dtype), norm
        if safe_merge:
            return w + delta.to(w.dtype), None
        return (w + delta).to(w.dtype), None  # == w += delta in place: computed in fp32, rounded once

    @torch.no_grad()
    def merge(self, safe_merge: bool = False) -> None:
        """W <- W + scaling * B A (DoRA: the rescaled weight). A no-op if already merged.
        ``safe_merge=True`` refuses NaN/inf results without touching the weight (as peft)."""
        if self.merged:
            return
        new, norm = self.merged_weight(safe_merge)
        if safe_merge and not torch.isfinite(new).all():
            raise LabkitError("NaNs detected in the merged weights: the adapter seems broken (nothing was merged)")
        self._merged_norm = norm
        self.base.weight.data = new
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - scaling * B A (DoRA: undo the rescaling). A no-op if not merged."""
        if not self.merged:
            return
        w = self.base.weight
        delta = self.delta_weight()
        if self.use_dora:
            factor = (self.lora_magnitude_vector / self._merged_norm).view(-1, 1)
            factor = factor.T if self.fan_in_fan_out else factor
            w.data = (w.data / factor - delta).to(w.dtype)
            self._merged_norm = None
        else:
            w.data -= delta.to(w.dtype)
        self.merged = False

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The tensors that train: A, B and, with DoRA, the magnitude vector."""
        return [self.lora_A, self.lora_B] + ([self.lora_magnitude_vector] if self.use_dora else [])

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha:g}, scaling={self.scaling:g}{', rslora' if self.use_rslora else ''}"
                f"{', dora' if self.use_dora else ''}{', fan_in_fan_out' if self.fan_in_fan_out else ''}, "
                f"merged={self.merged}")


class ModuleToSave(nn.Module):
    """A module trained in full next to the adapters (peft's ``modules_to_save``, e.g. ``lm_head``).

    Built in lab 04, section 6 (the adapter file). The original stays frozen in
    ``original_module``; ``trained`` is a trainable copy that the forward pass uses (the original
    when the adapter is disabled). The adapter file stores the copy under the module's own name,
    as peft does (``base_model.model.lm_head.weight``).
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        if isinstance(module, (LoRALinear, ModuleToSave)):
            raise LabkitError(f"modules_to_save: a {type(module).__name__} cannot be saved in full; "
                              "list plain modules (e.g. 'lm_head')")
        self.original_module = module.requires_grad_(False)
        self.trained = copy.deepcopy(module).requires_grad_(True)
        self.disabled = False

    def forward(self, *args, **kwargs):
        return (self.original_module if self.disabled else self.trained)(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:  # attributes of the wrapped module (weight, in_features, ...)
            return getattr(super().__getattr__("trained"), name)

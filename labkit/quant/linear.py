"""The 4-bit linear layer (QLoRA's frozen base) and the model surgery around it.

Built in lab 05 §6 and used on real models in §7-9: `Linear4bit` stores NF4/FP4 codes and dequantizes them in every forward *and*
backward (`_NF4Linear`, so no 16-bit copy of the weight is kept); `quantize_model` swaps a model's
``nn.Linear`` layers for it or for ``bitsandbytes.nn.Linear4bit``; `dequantized_weight` reads either
back; `merge_lora_4bit` folds LoRA adapters into a 4-bit base (§6, "merging into a 4-bit base");
`cast_frozen` casts the frozen parameters only. `QuantizedWeightError` is what reading
``Linear4bit.weight`` raises. Used by labkit.bench.qlora and labkit.bench.peft as well.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LabkitError
from .double import DQ_BLOCKSIZE, DoubleQuant, double_dequantize, double_quantize
from .fourbit import NF4_BLOCKSIZE, _check_blocks, _check_storage, _n_blocks, dequantize_4bit, levels_4bit, quantize_4bit

__all__ = ["QuantizedWeightError", "Linear4bit", "BACKENDS", "quantize_model", "dequantized_weight",
           "merge_lora_4bit", "cast_frozen"]


# ---------------------------------------------------------------------------
# A 4-bit linear layer (QLoRA's frozen base)
# ---------------------------------------------------------------------------
class _NF4Linear(torch.autograd.Function):
    """``y = x @ W.T + b`` where W exists only during the call.

    Forward and backward each dequantize W from its 4-bit codes; nothing of W
    is saved for backward. (A plain ``F.linear(x, dequantize(...))`` would let
    autograd keep the 16-bit W of every layer until backward: the memory
    QLoRA exists to save.) The weight and bias are frozen; x gets a gradient,
    so LoRA adapters in *earlier* layers still learn.
    """

    @staticmethod
    def forward(ctx, x, layer, bias):
        ctx.layer = layer
        ctx.has_bias_grad = bias is not None and bias.requires_grad
        return F.linear(x, layer.dequantize(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_out):
        grad_x = grad_out @ ctx.layer.dequantize(grad_out.dtype) if ctx.needs_input_grad[0] else None
        grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if ctx.has_bias_grad else None
        return grad_x, None, grad_b


class QuantizedWeightError(LabkitError, AttributeError):
    """Raised for ``Linear4bit.weight``: there is no dense weight to read or merge into.

    Also an ``AttributeError``, so ``hasattr(layer, "weight")`` is simply False."""


class Linear4bit(nn.Module):
    """A frozen linear layer stored as NF4 or FP4 (+ optional double-quantized absmax).

    ``forward(x)`` casts x to ``compute_dtype`` (None: keep x's dtype, as
    bitsandbytes does for fp32/bf16 inputs), dequantizes W to that dtype,
    multiplies, and casts the result back to x's dtype -- the same steps as
    ``bitsandbytes.nn.Linear4bit`` on CPU, so the outputs are bit-identical.

    The quantization state (absmax, and with double quantization its codes' scales and offset)
    stays float32 under ``.to(torch.bfloat16)`` / ``.half()``, as bitsandbytes keeps its
    ``quant_state``: casting it would change every dequantized weight by up to ~0.4%. The packed
    codes are never cast either (with ``quant_storage=torch.bfloat16`` they are bytes viewed as
    bf16, as in bitsandbytes; a cast would destroy them). The bias does follow the cast, and
    ``dtype`` sets it when the layer is rebuilt empty to load a state dict (``load_state_dict``
    copies into the existing dtype). There is no ``.weight`` (it exists only inside each call): reading it
    raises `QuantizedWeightError`; `dequantize` returns it, `merge_lora_4bit` merges into it.
    """

    _STATE = ("absmax", "absmax2", "absmax_offset")
    _NEVER_CAST = _STATE + ("packed",)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 compute_dtype: torch.dtype | None = None, blocksize: int = NF4_BLOCKSIZE,
                 double_quant: bool = False, quant_type: str = "nf4",
                 quant_storage: torch.dtype = torch.uint8, device=None, dtype: torch.dtype | None = None):
        super().__init__()
        levels_4bit(quant_type)                               # an unknown type: one line, here
        n = in_features * out_features
        _check_blocks(n, blocksize, f"{quant_type.upper()}-quantize")
        _check_storage(quant_storage, -(-n // 2))
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype, self.blocksize, self.double_quant = compute_dtype, blocksize, double_quant
        self.quant_type, self.quant_storage = quant_type, quant_storage
        packed = torch.zeros(-(-n // 2), dtype=torch.uint8, device=device)
        self.register_buffer("packed", packed if quant_storage == torch.uint8 else packed.view(quant_storage))
        n_blocks = _n_blocks(n, blocksize)
        if double_quant:
            self.register_buffer("absmax_codes", torch.zeros(n_blocks, dtype=torch.uint8, device=device))
            self.register_buffer("absmax2", torch.zeros(-(-n_blocks // DQ_BLOCKSIZE), device=device))
            self.register_buffer("absmax_offset", torch.zeros((), device=device))
        else:
            self.register_buffer("absmax", torch.zeros(n_blocks, device=device))
        self.bias = (nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False)
                     if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, compute_dtype: torch.dtype | None = None,
                    blocksize: int = NF4_BLOCKSIZE, double_quant: bool = False,
                    quant_type: str = "nf4", quant_storage: torch.dtype = torch.uint8) -> "Linear4bit":
        """Quantize an ``nn.Linear`` (its weight is not kept; its bias keeps its dtype)."""
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    compute_dtype=compute_dtype, blocksize=blocksize, double_quant=double_quant,
                    quant_type=quant_type, quant_storage=quant_storage, device=w.device)
        layer.quantize_(w)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return layer

    @torch.no_grad()
    def quantize_(self, weight: torch.Tensor) -> "Linear4bit":
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise LabkitError(f"weight of shape {tuple(weight.shape)} does not fit a "
                              f"{self.in_features} -> {self.out_features} layer")
        packed, absmax = quantize_4bit(weight, self.blocksize, self.quant_type, self.quant_storage)
        self.packed.copy_(packed)
        if self.double_quant:
            dq = double_quantize(absmax)
            self.absmax_codes.copy_(dq.codes)
            self.absmax2.copy_(dq.absmax2)
            self.absmax_offset.copy_(dq.offset)
        else:
            self.absmax.copy_(absmax)
        return self

    def block_absmax(self) -> torch.Tensor:
        """The fp32 absmax of each block (dequantized first with double quantization)."""
        if self.double_quant:
            return double_dequantize(DoubleQuant(self.absmax_codes, self.absmax2, self.absmax_offset))
        return self.absmax

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as a dense ``(out_features, in_features)`` tensor of ``dtype``."""
        return dequantize_4bit(self.packed, self.block_absmax(), (self.out_features, self.in_features),
                               self.blocksize, self.quant_type, dtype)

    def __getattr__(self, name):
        # nn.Module.__getattr__ finds parameters and buffers; "weight" is neither here.
        if name != "weight":
            return super().__getattr__(name)
        raise QuantizedWeightError(
            f"a labkit Linear4bit keeps its weight as {self.quant_type.upper()} codes, not as a dense .weight; "
            "use layer.dequantize(dtype) to read it, or quant.merge_lora_4bit(model) to merge LoRA adapters into it")

    def _apply(self, fn, recurse=True):
        # .to(dtype)/.half()/.cuda() reach every buffer through here: move the quantization state
        # and the packed codes to the new device but never change their dtype (bitsandbytes'
        # quant_state is never cast either; packed bytes viewed as bf16 must stay bytes).
        state = {k: self._buffers.pop(k) for k in self._NEVER_CAST if k in self._buffers}
        super()._apply(fn, recurse)
        for k, t in state.items():
            moved = fn(t)
            self._buffers[k] = moved if moved.dtype == t.dtype else t.to(moved.device)
        return self

    @property
    def weight_nbytes(self) -> int:
        """Bytes the quantized weight occupies (codes + constants), bias excluded."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(self.compute_dtype or dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return _NF4Linear.apply(x, self, bias).to(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self.quant_type} blocksize={self.blocksize}, double_quant={self.double_quant}, "
                f"compute_dtype={self.compute_dtype}"
                + ("" if self.quant_storage == torch.uint8 else f", quant_storage={self.quant_storage}"))


def _bnb_linear4bit(linear: nn.Linear, compute_dtype, double_quant: bool, blocksize: int, quant_type: str = "nf4",
                    quant_storage: torch.dtype = torch.uint8):
    """``bitsandbytes.nn.Linear4bit`` (NF4 or FP4) holding ``linear``'s weight, quantized on its device."""
    import bitsandbytes as bnb

    w = linear.weight.detach()
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=double_quant,
                              quant_type=quant_type, quant_storage=quant_storage, device="meta")
    layer.weight = bnb.nn.Params4bit(w, requires_grad=False, blocksize=blocksize, compress_statistics=double_quant,
                                     quant_type=quant_type, quant_storage=quant_storage,
                                     module=layer).to(w.device)   # .to() quantizes
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return layer


BACKENDS = ("labkit", "bnb")


def quantize_model(model: nn.Module, *, backend: str = "labkit", compute_dtype: torch.dtype | None = torch.bfloat16,
                   double_quant: bool = False, blocksize: int = NF4_BLOCKSIZE, skip=("lm_head",),
                   quant_type: str = "nf4", quant_storage: torch.dtype = torch.uint8) -> nn.Module:
    """Replace every ``nn.Linear`` (except the names in ``skip``) with a 4-bit layer, in place.

    ``quant_type``: ``"nf4"`` (QLoRA's NormalFloat) or ``"fp4"``, as in bitsandbytes.
    ``quant_storage``: the dtype the packed codes are viewed as (bitsandbytes' argument; bf16
    lets FSDP shard a QLoRA model whose other parameters are bf16).

    ``backend="labkit"``: `Linear4bit`; ``"bnb"``: ``bitsandbytes.nn.Linear4bit``.
    Embeddings, norms and the output head stay as they are, as in QLoRA. Each
    original weight is freed as soon as its layer is quantized, so the peak is
    one layer above the starting size. The 4-bit layers are frozen; other
    parameters keep their ``requires_grad``, so LoRA adapters injected *before*
    quantizing (``inject_lora`` wraps each frozen ``nn.Linear`` as ``.base``)
    keep training while their bases become 4-bit. Returns the model.
    """
    if backend not in BACKENDS:
        raise LabkitError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    levels_4bit(quant_type)
    if backend == "bnb":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise LabkitError("backend='bnb' needs bitsandbytes (pip install bitsandbytes)") from None
    targets = [name for name, mod in model.named_modules()
               if type(mod) is nn.Linear and name.split(".")[-1] not in skip]
    if not targets:
        raise LabkitError("the model has no nn.Linear layers to quantize (already quantized?)")
    for name in targets:          # names, not modules: each 16-bit weight is freed once replaced
        linear = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if backend == "labkit":
            new = Linear4bit.from_linear(linear, compute_dtype=compute_dtype, blocksize=blocksize,
                                         double_quant=double_quant, quant_type=quant_type,
                                         quant_storage=quant_storage)
        else:
            new = _bnb_linear4bit(linear, compute_dtype, double_quant, blocksize, quant_type, quant_storage)
        setattr(parent, child, new)
        del linear
    return model


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The dense fp32 weight of a labkit or bitsandbytes 4-bit layer (or of an ``nn.Linear``)."""
    if isinstance(layer, Linear4bit):
        return layer.dequantize(torch.float32)
    if type(layer) is nn.Linear:
        return layer.weight.detach().float()
    state = getattr(getattr(layer, "weight", None), "quant_state", None)
    if state is None:
        raise LabkitError(f"cannot read a dense weight from a {type(layer).__name__}")
    import bitsandbytes.functional as bnbF

    return bnbF.dequantize_4bit(layer.weight.data, state).float().reshape(layer.out_features, layer.in_features)


@torch.no_grad()
def merge_lora_4bit(model: nn.Module, requantize: bool = True) -> nn.Module:
    """Merge every LoRA adapter whose base is a 4-bit layer (labkit or bitsandbytes), in place.

    Built in lab 05, section 6 ("merging into a 4-bit base"). A 4-bit weight cannot take
    ``+ s * B @ A`` in place: dequantize it to fp32, add the update once (as peft merges), then
    either **requantize** (``requantize=True``: a labkit `Linear4bit` of the same type, block
    size and double quantization -- small again, but the sum is rounded to 16 levels per block,
    so the merged model is *not* the trained one) or keep the merged weight **dense** in the
    compute dtype (``requantize=False``: exact up to that dtype, 16-bit size). Adapters on
    ordinary ``nn.Linear`` bases are merged as `lora.merge_lora` does. Returns the model.
    """
    from .. import lora

    layers = lora.lora_layers(model)
    if not layers:
        raise LabkitError("the model has no LoRA adapters to merge (inject_lora first, or already merged?)")
    for name, layer in layers.items():
        base = layer.base
        w = dequantized_weight(base) + layer.delta_weight().float()
        bias = None if base.bias is None else base.bias.detach().clone()
        if isinstance(base, Linear4bit):
            kind = dict(compute_dtype=base.compute_dtype, blocksize=base.blocksize,
                        double_quant=base.double_quant, quant_type=base.quant_type,
                        quant_storage=base.quant_storage)
        elif type(base) is nn.Linear:
            kind = None
        else:  # bitsandbytes Linear4bit
            st = base.weight.quant_state
            kind = dict(compute_dtype=base.compute_dtype, blocksize=st.blocksize, double_quant=bool(st.nested),
                        quant_type=st.quant_type, quant_storage=base.weight.dtype)
        if kind is not None and requantize:
            new = Linear4bit(layer.in_features, layer.out_features, bias is not None, device=w.device, **kind)
            new.quantize_(w)
            if bias is not None:
                new.bias = nn.Parameter(bias, requires_grad=False)
        else:
            dtype = base.weight.dtype if kind is None else (kind["compute_dtype"] or torch.float32)
            new = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None, device=w.device,
                            dtype=dtype).requires_grad_(False)
            new.weight.copy_(w.to(dtype))
            if bias is not None:
                new.bias.copy_(bias.to(dtype))
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def cast_frozen(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast every frozen floating-point parameter to ``dtype``; trainable ones (LoRA
    adapters) keep theirs -- peft likewise keeps adapters in fp32 on a 16-bit base.
    Buffers (4-bit codes, absmax, rotary frequencies) are left alone."""
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(dtype)
    return model

"""LoRA from scratch: the layer, injection, merge/unmerge, and peft-compatible adapters (lab 04).

Low-Rank Adaptation (Hu et al., 2021) freezes a pretrained weight ``W`` (shape
``d_out x d_in``) and learns a low-rank update next to it::

    h = W x + (alpha / r) * B A x        A: r x d_in (random),  B: d_out x r (zeros)

(rsLoRA, Kalajdzievski 2023, scales by ``alpha / sqrt(r)`` instead: ``use_rslora=True``.)

Only ``A`` and ``B`` train: ``r * (d_in + d_out)`` parameters instead of
``d_in * d_out``. ``B = 0`` at the start, so the adapted model *is* the
pretrained model at step 0; ``A`` is random so that ``B`` gets a gradient.

Everything here matches ``peft`` 0.21 numerically (same initialisation, same
``alpha / r`` or rsLoRA scaling, same order of operations) and on disk: `save_adapter`
writes ``adapter_config.json`` + ``adapter_model.safetensors`` that
``peft.PeftModel.from_pretrained`` loads, and `load_adapter` reads what peft
writes.

Lab 04 writes each piece out in its notebook (sections 2 and 5-6) and proves it equal to this
canonical copy and to peft; later labs import this one.

The module also holds the two small helpers lab 04 fine-tunes with:
`instruction_batches` (chat-formatted SFT batches, loss on the assistant's
tokens only) and `exact_match` (greedy answers vs the reference).
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LabkitError

__all__ = ["LoRALinear", "inject_lora", "merge_lora", "unload_lora", "lora_layers", "lora_state_dict",
           "save_adapter", "load_adapter", "lora_param_count", "instruction_batches",
           "instruction_eval_batches", "exact_match", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # how peft names the wrapped model's modules in adapter files


def _check_rank(r) -> int:
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
        raise LabkitError(f"LoRA rank r must be a positive integer, got {r!r}")
    return int(r)


def _check_alpha_dropout(alpha, dropout) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise LabkitError(f"LoRA alpha must be a positive number, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise LabkitError(f"LoRA dropout must be a probability in [0, 1), got {dropout!r}")


# ---------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``scaling * B @ A``.

    Built in lab 04, section 5 (the layer). ``scaling`` is ``alpha / r``, or
    ``alpha / sqrt(r)`` with ``use_rslora=True`` (rsLoRA, as peft's ``use_rslora``).
    ``forward(x) = base(x) + dropout(x) @ A.T @ B.T * scaling``. `merge` folds the
    update into ``base.weight`` (zero extra cost at inference), `unmerge` takes
    it out again.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise LabkitError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        r = _check_rank(r)
        _check_alpha_dropout(alpha, dropout)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.use_rslora = r, alpha, bool(use_rslora)
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        w = base.weight
        # On the base's device; in fp32 unless the base is fp32/fp64 already. Like peft's default
        # (autocast_adapter_dtype=True), a bf16/fp16 or quantized base gets fp32 adapters, so the
        # optimizer updates A and B at full precision.
        dtype = w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=w.device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, r, device=w.device, dtype=dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # A like nn.Linear's default init (Kaiming-uniform, a=sqrt(5)); B = 0 so B @ A = 0 at step 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (code that reads ``layer.weight.dtype`` keeps working)."""
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) * B @ A``, shaped like ``base.weight``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        x = self.dropout(x).to(self.lora_A.dtype)
        update = F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling  # x @ A.T @ B.T
        return (out + update).to(out.dtype)

    def _check_mergeable(self) -> None:
        if not self.base.weight.dtype.is_floating_point:
            raise LabkitError(f"cannot merge LoRA into a {self.base.weight.dtype} (quantized) weight; "
                              "dequantize the base layer first")

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha / r) B A. A no-op if already merged."""
        if not self.merged:
            self._check_mergeable()
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - (alpha / r) B A. A no-op if not merged."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha:g}, scaling={self.scaling:g}{', rslora' if self.use_rslora else ''}, "
                f"merged={self.merged}")


# ---------------------------------------------------------------------------
# Putting layers into a model
# ---------------------------------------------------------------------------
def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every `LoRALinear` in ``model``, by module name. Built in lab 04, section 5 (injection)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _output_layer_names(model: nn.Module) -> set[str]:
    """The LM head, which peft's "all-linear" leaves alone (it maps to the vocabulary)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return {name for name, m in model.named_modules() if head is not None and m is head}


def _select(model: nn.Module, target_modules) -> list[str]:
    """Full names of the nn.Linear modules that ``target_modules`` selects.

    A target is a module's last name (``"q_proj"``) or a dotted suffix of its full
    name (``"self_attn.q_proj"``); ``"all-linear"`` means every nn.Linear except the
    LM head (as in peft). Every target must select at least one nn.Linear.
    """
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    targets = list(target_modules)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise LabkitError(f"target_modules must be module names like ('q_proj', 'v_proj'), got {target_modules!r}")
    wrapped = tuple(name + "." for name in lora_layers(model))  # their .base Linears are not candidates
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and not name.startswith(wrapped)]
    if "all-linear" in targets:
        head = _output_layer_names(model)
        return [n for n in linear if n not in head]
    chosen = []
    for t in targets:
        hits = [n for n in linear if n == t or n.endswith("." + t)]
        if not hits:
            already = [n for n in lora_layers(model) if n == t or n.endswith("." + t)]
            if already:
                raise LabkitError(f"the {t!r} layers already have LoRA; merge_lora() or unload_lora() first")
            other = next((m for n, m in model.named_modules() if n == t or n.endswith("." + t)), None)
            if other is not None:
                raise LabkitError(f"target module {t!r} is a {type(other).__name__}, not an nn.Linear; "
                                  "labkit's LoRA wraps nn.Linear layers only")
            known = sorted({n.rpartition(".")[2] for n in linear})
            raise LabkitError(f"target module {t!r} matches no nn.Linear in this model; "
                              f"its linear layers are: {', '.join(known) or 'none'}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _wrap(model: nn.Module, names, r_of, alpha_of, dropout: float, use_rslora: bool = False) -> None:
    """Wrap the named nn.Linear modules; afterwards only LoRA's A and B train."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        _set_module(model, name, LoRALinear(model.get_submodule(name), r_of(name), alpha_of(name), dropout,
                                            use_rslora=use_rslora))
    for layer in lora_layers(model).values():  # adapters injected earlier keep training too
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)


def inject_lora(model: nn.Module, r: int, alpha: float, target_modules=("q_proj", "v_proj"),
                dropout: float = 0.0, use_rslora: bool = False) -> nn.Module:
    """Replace the matching nn.Linear modules of ``model`` by `LoRALinear` (in place),
    freeze every other parameter, and return ``model``.

    Built in lab 04, section 5 (injection). ``target_modules``: module names
    (``("q_proj", "v_proj")``), or ``"all-linear"``; ``use_rslora``: scale by alpha / sqrt(r).
    """
    _check_rank(r)
    _check_alpha_dropout(alpha, dropout)
    names = _select(model, target_modules)
    _wrap(model, names, lambda _: r, lambda _: alpha, dropout, use_rslora)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain nn.Linear back.
    Built in lab 04, section 5 (merge)."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        _set_module(model, name, layer.base)
    return model


def unload_lora(model: nn.Module) -> nn.Module:
    """Remove every adapter *without* merging: the original model again. Built in lab 04, section 5 (unload)."""
    for name, layer in lora_layers(model).items():
        layer.unmerge()
        _set_module(model, name, layer.base)
    return model


def lora_param_count(model: nn.Module) -> int:
    """Parameters in the adapters: sum of r * (d_in + d_out) over LoRA layers."""
    return sum(m.lora_A.numel() + m.lora_B.numel() for m in lora_layers(model).values())


# ---------------------------------------------------------------------------
# Adapters on disk, in peft's format
# ---------------------------------------------------------------------------
def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors under peft's key names:
    ``base_model.model.<module>.lora_A.weight`` (r x d_in) and ``...lora_B.weight`` (d_out x r).
    Built in lab 04, section 6 (the adapter file)."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.detach()
        out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.detach()
    return out


def save_adapter(model: nn.Module, path) -> Path:
    """Write the adapters of ``model`` to directory ``path`` in peft's format
    (``adapter_config.json`` + ``adapter_model.safetensors``); return the path.
    Built in lab 04, section 6 (the adapter file)."""
    from safetensors.torch import save_file

    layers = lora_layers(model)
    if not layers:
        raise LabkitError("the model has no LoRA layers to save; call inject_lora() first")
    first = next(iter(layers.values()))
    r, alpha = first.r, first.alpha
    dropout = first.dropout.p if isinstance(first.dropout, nn.Dropout) else 0.0
    cfg = getattr(model, "config", None)
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": getattr(cfg, "_name_or_path", None) or None,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted({name.rpartition(".")[2] for name in layers}),
        # layers whose rank/alpha differ from the first one (keys: full module names)
        "rank_pattern": {n: m.r for n, m in layers.items() if m.r != r},
        "alpha_pattern": {n: m.alpha for n, m in layers.items() if m.alpha != alpha},
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "use_rslora": first.use_rslora,
        "use_dora": False,
        "inference_mode": True,
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.to("cpu").contiguous() for k, v in lora_state_dict(model).items()}
    save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return path


def _pattern_value(name: str, patterns: dict, default):
    """peft's rank_pattern/alpha_pattern: a key matches a module name or a suffix of it."""
    import re

    for key, value in patterns.items():
        if name == key or name.endswith("." + key) or re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def load_adapter(model: nn.Module, path) -> nn.Module:
    """Load an adapter directory written by `save_adapter` or by peft into ``model``.

    Modules named in the file get a `LoRALinear` (or, if they already have one, new
    weights); every other parameter is frozen. Returns ``model``. Built in lab 04,
    section 6 (the adapter file).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / ADAPTER_CONFIG).exists() or not (path / ADAPTER_WEIGHTS).exists():
        raise LabkitError(f"{path} is not a LoRA adapter directory (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise LabkitError(f"{path} holds a {config.get('peft_type')} adapter; only LoRA adapters can be loaded")
    unsupported = [k for k in ("use_dora", "fan_in_fan_out") if config.get(k)]
    unsupported += [k for k in ("modules_to_save",) if config.get(k)]
    if config.get("bias", "none") != "none":
        unsupported.append(f"bias={config['bias']!r}")
    if unsupported:
        raise LabkitError(f"{path} uses LoRA options labkit does not implement: {', '.join(unsupported)}")
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        body = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        for part in ("lora_A", "lora_B"):
            suffix = f".{part}.weight"
            if body.endswith(suffix):
                weights.setdefault(body[: -len(suffix)], {})[part] = value
                break
        else:
            raise LabkitError(f"unexpected tensor {key!r} in {path / ADAPTER_WEIGHTS}")
    incomplete = [n for n, w in weights.items() if set(w) != {"lora_A", "lora_B"}]
    if incomplete or not weights:
        raise LabkitError(f"{path / ADAPTER_WEIGHTS} lacks lora_A/lora_B pairs for: {', '.join(incomplete) or 'any module'}")

    existing = lora_layers(model)
    modules = dict(model.named_modules())
    missing = [n for n in weights if n not in modules]
    if missing:
        raise LabkitError(f"the adapter targets modules this model lacks (e.g. {missing[0]!r}); "
                          "load it into the base model it was trained on")
    new = [n for n in weights if n not in existing]
    not_linear = [n for n in new if not isinstance(modules[n], nn.Linear)]
    if not_linear:
        raise LabkitError(f"adapter module {not_linear[0]!r} is a {type(modules[not_linear[0]]).__name__}, not an nn.Linear")
    alpha, dropout = config.get("lora_alpha", 8), float(config.get("lora_dropout") or 0.0)
    _wrap(model, new, lambda n: int(weights[n]["lora_A"].shape[0]),
          lambda n: _pattern_value(n, config.get("alpha_pattern") or {}, alpha), dropout,
          bool(config.get("use_rslora")))
    layers = lora_layers(model)
    for name, w in weights.items():
        layer = layers[name]
        if layer.lora_A.shape != w["lora_A"].shape or layer.lora_B.shape != w["lora_B"].shape:
            raise LabkitError(f"{name}: adapter shapes {tuple(w['lora_A'].shape)}/{tuple(w['lora_B'].shape)} do not "
                              f"match the model's LoRA layer {tuple(layer.lora_A.shape)}/{tuple(layer.lora_B.shape)}")
        was_merged = layer.merged
        layer.unmerge()
        with torch.no_grad():
            layer.lora_A.copy_(w["lora_A"])
            layer.lora_B.copy_(w["lora_B"])
        if was_merged:
            layer.merge()
    return model


# ---------------------------------------------------------------------------
# Instruction tuning helpers (lab 04): thin wrappers over labkit.sft (lab 09 explains the formats)
# ---------------------------------------------------------------------------
def instruction_batches(tokenizer, items: list[dict], batch_size: int, seed: int = 0,
                        device: str | torch.device = "cpu"):
    """An endless, seeded iterator of SFT batches (reshuffled every epoch, right-padded):
    ``{"input_ids", "attention_mask", "labels"}`` with labels -100 except on the
    assistant's answer (and its ``<|end|>``), so the loss trains the answer only."""
    from . import sft

    if batch_size < 1 or not items:
        raise LabkitError("instruction_batches needs at least one item and batch_size >= 1")
    rows = [sft.format_example(it, tokenizer) for it in items]
    return sft.sft_batches(rows, batch_size, tokenizer.pad_token_id, seed=seed, device=device)


def instruction_eval_batches(tokenizer, items: list[dict], batch_size: int = 32,
                             device: str | torch.device = "cpu") -> list[dict]:
    """Fixed SFT batches over ``items`` in order, for a comparable held-out loss."""
    from . import sft

    rows = [sft.format_example(it, tokenizer) for it in items]
    return sft.eval_batches(rows, batch_size, tokenizer.pad_token_id, device=device)


@torch.no_grad()
def exact_match(model, tokenizer, items: list[dict], max_new_tokens: int = 24) -> float:
    """Fraction of items whose greedy chat answer equals the reference response exactly."""
    from .models import generate_text

    if not items:
        raise LabkitError("exact_match needs at least one item")
    hits = sum(generate_text(model, tokenizer, it["prompt"], max_new_tokens=max_new_tokens, chat=True).strip()
               == it["response"].strip() for it in items)
    return hits / len(items)

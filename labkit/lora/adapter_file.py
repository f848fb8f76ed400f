"""Adapters on disk in peft's format (lab 04, section 6): ``adapter_config.json`` +
``adapter_model.safetensors``, loadable by ``peft.PeftModel.from_pretrained`` and back.

The file names each adapted module in full (``target_modules`` = the full module names), so
peft places the adapter on exactly the modules labkit trained -- an adapter on one layer's
``q_proj`` does not spread to every ``q_proj``. Tensor keys are peft's:
``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight``, DoRA's
``.lora_magnitude_vector``, and a ``modules_to_save`` copy under the module's own parameter
names (``base_model.model.lm_head.weight``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import LabkitError
from .model import _freeze_all_but_adapters, _pattern_value, _saved_names, _wrap, lora_layers, saved_modules
from .layer import ModuleToSave, is_linear_like

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # how peft names the wrapped model's modules in adapter files
MAGNITUDE = "lora_magnitude_vector"


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors under peft's key names:
    ``base_model.model.<module>.lora_A.weight`` (r x d_in) and ``...lora_B.weight`` (d_out x r);
    with DoRA ``...lora_magnitude_vector`` (d_out); ``modules_to_save`` copies as
    ``base_model.model.<module>.<param>``. Built in lab 04, section 6 (the adapter file)."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.detach()
        out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.detach()
        if layer.use_dora:
            out[f"{PEFT_PREFIX}{name}.{MAGNITUDE}"] = layer.lora_magnitude_vector.detach()
    for name, saved in saved_modules(model).items():
        for key, value in saved.trained.state_dict().items():
            out[f"{PEFT_PREFIX}{name}.{key}"] = value.detach()
    return out


def _same(layers, attr: str, what: str):
    values = {getattr(m, attr) if attr != "dropout" else getattr(m.dropout, "p", 0.0) for m in layers.values()}
    if len(values) > 1:
        raise LabkitError(f"the LoRA layers differ in {what} ({sorted(map(str, values))}); one adapter file holds "
                          "one value (peft's LoraConfig) -- save them as separate adapters")
    return values.pop()


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
    cfg = getattr(model, "config", None)
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": getattr(cfg, "_name_or_path", None) or None,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": _same(layers, "dropout", "lora_dropout"),
        # full names: peft matches a list entry equal to the module name exactly
        "target_modules": sorted(layers),
        "layers_to_transform": None,
        "layers_pattern": None,
        # layers whose rank/alpha differ from the first one (keys: escaped full names, peft's regex lookup)
        "rank_pattern": {re.escape(n): m.r for n, m in layers.items() if m.r != r},
        "alpha_pattern": {re.escape(n): m.alpha for n, m in layers.items() if m.alpha != alpha},
        "bias": "none",
        "lora_bias": False,
        "fan_in_fan_out": any(m.fan_in_fan_out for m in layers.values()),
        "modules_to_save": sorted(saved_modules(model)) or None,
        "init_lora_weights": _same(layers, "init_lora_weights", "init_lora_weights"),
        "use_rslora": _same(layers, "use_rslora", "use_rslora"),
        "use_dora": _same(layers, "use_dora", "use_dora"),
        "inference_mode": True,
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.to("cpu").contiguous() for k, v in lora_state_dict(model).items()}
    save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return path


# options of peft's LoraConfig that change the numbers and that labkit does not implement
_UNSUPPORTED = ("layer_replication", "trainable_token_indices", "target_parameters", "use_qalora", "arrow_config",
                "velora_config", "kasa_config", "use_bdlora", "alora_invocation_tokens", "monteclora_config",
                "lora_bias")


def load_adapter(model: nn.Module, path) -> nn.Module:
    """Load an adapter directory written by `save_adapter` or by peft into ``model``.

    Modules named in the file get a `LoRALinear` (or, if they already have one, new
    weights); ``modules_to_save`` copies are restored; every other parameter is frozen.
    Returns ``model``. Built in lab 04, section 6 (the adapter file).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / ADAPTER_CONFIG).exists() or not (path / ADAPTER_WEIGHTS).exists():
        raise LabkitError(f"{path} is not a LoRA adapter directory (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise LabkitError(f"{path} holds a {config.get('peft_type')} adapter; only LoRA adapters can be loaded")
    unsupported = [k for k in _UNSUPPORTED if config.get(k)]
    if config.get("bias", "none") != "none":
        unsupported.append(f"bias={config['bias']!r}")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in ("gaussian",) and not init.lower().startswith("eva"):
        unsupported.append(f"init_lora_weights={init!r}")  # pissa/olora/... also change the base weights
    if unsupported:
        raise LabkitError(f"{path} uses LoRA options labkit does not implement: {', '.join(unsupported)}")
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    saves = _saved_names(model, config.get("modules_to_save"))
    saves += [n for n in saved_modules(model) if n not in saves]
    weights: dict[str, dict[str, torch.Tensor]] = {}
    saved_state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        body = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        for part, suffix in (("lora_A", ".lora_A.weight"), ("lora_B", ".lora_B.weight"), (MAGNITUDE, "." + MAGNITUDE)):
            if body.endswith(suffix):
                weights.setdefault(body[: -len(suffix)], {})[part] = value
                break
        else:
            owner = next((n for n in saves if body.startswith(n + ".")), None)
            if owner is None:
                raise LabkitError(f"unexpected tensor {key!r} in {path / ADAPTER_WEIGHTS}")
            saved_state.setdefault(owner, {})[body[len(owner) + 1:]] = value
    use_dora = bool(config.get("use_dora"))
    need = {"lora_A", "lora_B"} | ({MAGNITUDE} if use_dora else set())
    incomplete = [n for n, w in weights.items() if set(w) != need]
    if incomplete or not weights:
        raise LabkitError(f"{path / ADAPTER_WEIGHTS} lacks {'/'.join(sorted(need))} tensors for: "
                          f"{', '.join(incomplete) or 'any module'}")

    existing = lora_layers(model)
    modules = dict(model.named_modules())
    missing = [n for n in weights if n not in modules]
    if missing:
        raise LabkitError(f"the adapter targets modules this model lacks (e.g. {missing[0]!r}); "
                          "load it into the base model it was trained on")
    new = [n for n in weights if n not in existing]
    not_linear = [n for n in new if not is_linear_like(modules[n])]
    if not_linear:
        raise LabkitError(f"adapter module {not_linear[0]!r} is a {type(modules[not_linear[0]]).__name__}, "
                          "not an nn.Linear or Conv1D")
    alpha, dropout = config.get("lora_alpha", 8), float(config.get("lora_dropout") or 0.0)
    _wrap(model, new, lambda n: int(weights[n]["lora_A"].shape[0]),
          lambda n: _pattern_value(n, config.get("alpha_pattern"), alpha), dropout,
          bool(config.get("use_rslora")), use_dora, init if init in (True, False, "gaussian") else True,
          [n for n in saved_state if not isinstance(modules[n], ModuleToSave)])
    layers = lora_layers(model)
    for name, w in weights.items():
        layer = layers[name]
        if layer.lora_A.shape != w["lora_A"].shape or layer.lora_B.shape != w["lora_B"].shape:
            raise LabkitError(f"{name}: adapter shapes {tuple(w['lora_A'].shape)}/{tuple(w['lora_B'].shape)} do not "
                              f"match the model's LoRA layer {tuple(layer.lora_A.shape)}/{tuple(layer.lora_B.shape)}")
        if layer.use_dora != use_dora:
            raise LabkitError(f"{name}: the model's layer {'uses' if layer.use_dora else 'does not use'} DoRA, the "
                              "adapter file does not match; load it into a fresh base")
        was_merged = layer.merged
        layer.unmerge()
        with torch.no_grad():
            layer.lora_A.copy_(w["lora_A"])
            layer.lora_B.copy_(w["lora_B"])
            if use_dora:
                layer.lora_magnitude_vector.copy_(w[MAGNITUDE])
        if was_merged:
            layer.merge()
    current = saved_modules(model)
    for name, state in saved_state.items():
        current[name].trained.load_state_dict(state)
    _freeze_all_but_adapters(model)
    return model

"""Putting LoRA into a model: which modules, injection, merge/unmerge, unload, disabling (lab 04, section 5).

Module selection follows peft 0.21 (``tuners_utils.check_target_module_exists``):

* ``target_modules`` a **string**: a regular expression that must match the *full* module name
  (``re.fullmatch``), e.g. ``r".*\\.layers\\.1\\..*q_proj"``; the string ``"all-linear"``
  (any case) means every ``nn.Linear``/``Conv1D`` except a transformers model's output layer.
  One labkit extension: a bare name (letters, digits, ``_``, ``-``) that fully matches no module
  -- where peft would stop with "not found" -- is read as the one-entry list ``[name]``.
* a **list** (tuple, set): a module is chosen if its full name equals an entry, or ends with
  ``"." + entry`` (``"q_proj"``, ``"self_attn.q_proj"``).
* ``layers_to_transform`` (an int or list of ints) keeps, among the *suffix* matches, those in
  the given layer indices -- the first number in the name after ``<layers_pattern>.`` (by default
  after any name: ``model.layers.3.self_attn.q_proj`` is layer 3); an exact full-name entry is
  always kept, as in peft. It cannot be combined with a string ``target_modules`` (peft refuses).
* ``exclude_modules`` (string regex or list, same rules) and ``modules_to_save`` remove modules.

`target_module_names` answers "which modules would be wrapped?" without touching the model.
"""
from __future__ import annotations

import contextlib
import re

import torch
from torch import nn

from ..errors import LabkitError
from .layer import LoRALinear, ModuleToSave, _check_alpha_dropout, _check_init, _check_rank, is_linear_like


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every `LoRALinear` in ``model``, by module name. Built in lab 04, section 5 (injection)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def saved_modules(model: nn.Module) -> dict[str, ModuleToSave]:
    """Every `ModuleToSave` (a ``modules_to_save`` copy) in ``model``, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ModuleToSave)}


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _output_layer_names(model: nn.Module) -> set[str]:
    """The LM head, which peft's "all-linear" leaves alone (it maps to the vocabulary)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return {name for name, m in model.named_modules() if head is not None and m is head}


def _names_list(value, what: str) -> list[str] | str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        names = list(value)
    except TypeError:
        names = None
    if not names or not all(isinstance(t, str) and t for t in names):
        raise LabkitError(f"{what} must be a regex string or module names like ('q_proj', 'v_proj'), got {value!r}")
    return names


def _layer_index(name: str, layers_pattern) -> int | None:
    """The layer number in ``name`` the way peft reads it (the first numbered segment)."""
    if not layers_pattern:
        m = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
    else:
        m = None
        for pattern in [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern:
            m = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", name)
            if m is not None:
                break
    return int(m.group("idx")) if m else None


def _matches(name: str, targets, layers_to_transform, layers_pattern) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    if name in targets:
        return True
    if not any(name.endswith("." + t) for t in targets):
        return False
    using = layers_to_transform is not None and (not isinstance(layers_to_transform, list) or layers_to_transform)
    if not using:
        return True
    idx = _layer_index(name, layers_pattern)
    if idx is None:
        return False
    return idx == layers_to_transform if isinstance(layers_to_transform, int) else idx in layers_to_transform


def target_matches(name: str, target_modules, layers_to_transform=None, layers_pattern=None) -> bool:
    """Whether peft's rules select the module called ``name`` (a full dotted name) -- the test
    behind `target_module_names`, for one name: a string is a full-match regex, a list matches a
    name or a ``"." + entry`` suffix, filtered by ``layers_to_transform`` / ``layers_pattern``."""
    targets = target_modules if isinstance(target_modules, str) else list(target_modules or [])
    if isinstance(layers_to_transform, tuple):
        layers_to_transform = list(layers_to_transform)
    _check_layer_args(targets, layers_to_transform, layers_pattern)
    return _matches(name, targets, layers_to_transform, layers_pattern)


def _check_layer_args(targets, layers_to_transform, layers_pattern):
    if layers_to_transform is not None:
        ok = (isinstance(layers_to_transform, int) and not isinstance(layers_to_transform, bool)) or (
            isinstance(layers_to_transform, (list, tuple)) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in layers_to_transform))
        if not ok:
            raise LabkitError(f"layers_to_transform must be a layer index or a list of them, got {layers_to_transform!r}")
        if isinstance(targets, str):
            raise LabkitError("layers_to_transform cannot be used with a string target_modules (a regex or "
                              "'all-linear'); give module names like ['q_proj', 'v_proj'] (peft refuses it too)")
    if layers_pattern and layers_to_transform is None:
        raise LabkitError("layers_pattern needs layers_to_transform (which layer numbers to adapt)")


def target_module_names(model: nn.Module, target_modules, layers_to_transform=None, layers_pattern=None,
                        exclude_modules=None, modules_to_save=None) -> list[str]:
    """Full names of the modules `inject_lora` would wrap, with peft's matching rules (see the module doc).

    Built in lab 04, section 5 (injection). Raises a `LabkitError` if a target selects
    nothing, selects a module LoRA cannot wrap (only ``nn.Linear`` and ``Conv1D``), or selects
    a layer that already has LoRA -- never an empty selection that would freeze everything.
    """
    targets = _names_list(target_modules, "target_modules")
    if targets is None:
        raise LabkitError("target_modules is required: module names like ('q_proj', 'v_proj'), a regex, or 'all-linear'")
    excludes = _names_list(exclude_modules, "exclude_modules")
    saves = _names_list(modules_to_save, "modules_to_save") or []
    if isinstance(saves, str):
        saves = [saves]
    if isinstance(layers_to_transform, tuple):
        layers_to_transform = list(layers_to_transform)
    _check_layer_args(targets, layers_to_transform, layers_pattern)
    if isinstance(targets, list) and any(t.lower() == "all-linear" for t in targets):
        raise LabkitError("'all-linear' is a shorthand for target_modules itself: pass target_modules='all-linear', "
                          "not inside a list")
    existing = lora_layers(model)
    inside = tuple(n + "." for n in list(existing) + list(saved_modules(model)))  # a wrapper's own children
    modules = [(n, m) for n, m in model.named_modules()
               if n and not n.startswith(inside) and not isinstance(m, (LoRALinear, ModuleToSave))]

    def excluded(name):
        if excludes is not None and (_matches(name, excludes, None, None)):
            return True
        return any(re.match(rf"(^|.*\.){s}($|\..*)", name) for s in saves)

    all_linear = isinstance(targets, str) and targets.lower() == "all-linear"
    if all_linear:
        head = _output_layer_names(model)
        chosen = [n for n, m in modules if is_linear_like(m) and n not in head and not excluded(n)]
        if not chosen:
            raise LabkitError("target_modules='all-linear' found no nn.Linear/Conv1D layer to adapt "
                              f"({'every one already has LoRA' if existing else 'the model has none outside its head'})")
        return chosen
    chosen = [n for n, m in modules if not excluded(n) and _matches(n, targets, layers_to_transform, layers_pattern)]
    if isinstance(targets, str) and not chosen and re.fullmatch(r"[\w\-]+", targets):
        # a bare name like "query_key_value" that fully matches no module: where peft would stop with
        # "not found", labkit reads it as the one-name list ["query_key_value"] (labs pass names as strings)
        targets = [targets]
        chosen = [n for n, m in modules if not excluded(n) and _matches(n, targets, None, None)]
    where = f" (in layers {layers_to_transform})" if layers_to_transform is not None else ""
    for t in [targets] if isinstance(targets, str) else targets:
        one = [t] if isinstance(targets, list) else t
        if any(_matches(n, one, layers_to_transform, layers_pattern) for n, _ in modules):
            continue  # selected, or matched but excluded (exclude_modules / modules_to_save), as in peft
        linear = sorted({n.rpartition(".")[2] for n, m in modules if is_linear_like(m)})
        already = [n for n in existing if _matches(n, one, layers_to_transform, layers_pattern)]
        if already:
            raise LabkitError(f"the {t!r} layers already have LoRA; merge_lora() or unload_lora() first")
        raise LabkitError(f"target module {t!r} matches no nn.Linear in this model{where}; "
                          f"its linear layers are: {', '.join(linear) or 'none'}")
    for n in chosen:
        m = model.get_submodule(n)
        if not is_linear_like(m):
            raise LabkitError(f"target module {n!r} is a {type(m).__name__}, not an nn.Linear or Conv1D; "
                              "labkit's LoRA wraps linear layers only")
    return chosen


def _pattern_value(name: str, patterns: dict | None, default):
    """peft's rank_pattern/alpha_pattern lookup: the first key ``k`` (in order) with
    ``re.match(rf"(.*\\.)?({k})$", name)`` -- a regex matched against the end of the full name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def _freeze_all_but_adapters(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in lora_layers(model).values():  # adapters injected earlier keep training too
        for p in layer.adapter_parameters():
            p.requires_grad_(True)
    for saved in saved_modules(model).values():
        saved.trained.requires_grad_(True)


def _wrap(model: nn.Module, names, r_of, alpha_of, dropout: float, use_rslora: bool = False, use_dora: bool = False,
          init_lora_weights=True, modules_to_save=()) -> None:
    """Wrap the named modules (and copy ``modules_to_save``); afterwards only the adapters train."""
    layers = {n: LoRALinear(model.get_submodule(n), r_of(n), alpha_of(n), dropout, use_rslora=use_rslora,
                            use_dora=use_dora, init_lora_weights=init_lora_weights) for n in names}
    for name, layer in layers.items():  # built first: a bad option leaves the model untouched
        _set_module(model, name, layer.train(layer.base.training))  # an eval model stays in eval (dropout off)
    for name in modules_to_save:
        module = model.get_submodule(name)
        _set_module(model, name, ModuleToSave(module).train(module.training))
    _freeze_all_but_adapters(model)


def _saved_names(model: nn.Module, modules_to_save) -> list[str]:
    """Modules whose full name ends with an entry of ``modules_to_save`` (peft's rule)."""
    if not modules_to_save:
        return []
    entries = [modules_to_save] if isinstance(modules_to_save, str) else list(modules_to_save)
    inside = tuple(n + "." for n in list(lora_layers(model)) + list(saved_modules(model)))
    names = [n for n, _ in model.named_modules() if n and not n.startswith(inside)
             and not isinstance(model.get_submodule(n), ModuleToSave) and any(n.endswith(e) for e in entries)]
    missing = [e for e in entries if not any(n.endswith(e) for n in names)]
    if missing and not any(n.endswith(e) for e in missing for n in saved_modules(model)):
        raise LabkitError(f"modules_to_save entry {missing[0]!r} matches no module in this model")
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


def inject_lora(model: nn.Module, r: int, alpha: float, target_modules=("q_proj", "v_proj"),
                dropout: float = 0.0, use_rslora: bool = False, use_dora: bool = False, init_lora_weights=True,
                layers_to_transform=None, layers_pattern=None, exclude_modules=None, modules_to_save=None,
                rank_pattern: dict | None = None, alpha_pattern: dict | None = None) -> nn.Module:
    """Replace the selected linear modules of ``model`` by `LoRALinear` (in place), freeze every
    other parameter, and return ``model``. Options and their names are peft's ``LoraConfig``'s.

    Built in lab 04, section 5 (injection). ``target_modules``: names (suffix match), a regex
    (full match) or ``"all-linear"`` -- see `target_module_names`; ``use_rslora``: scale by
    alpha / sqrt(r); ``use_dora``: DoRA; ``init_lora_weights``: True / "gaussian" / False;
    ``modules_to_save``: modules trained in full (a copy) and saved in the adapter file;
    ``rank_pattern`` / ``alpha_pattern``: ``{regex: r}`` per module, the regex matched against the
    end of the full name (peft's ``get_pattern_key``), e.g. ``{"layers\\.0\\..*q_proj": 16}``.
    """
    _check_rank(r)
    _check_alpha_dropout(alpha, dropout)
    _check_init(init_lora_weights)
    for what, pat in (("rank_pattern", rank_pattern), ("alpha_pattern", alpha_pattern)):
        if pat is not None and not isinstance(pat, dict):
            raise LabkitError(f"{what} must be a dict {{module regex: value}}, got {pat!r}")
    names = target_module_names(model, target_modules, layers_to_transform, layers_pattern, exclude_modules,
                                modules_to_save)
    saves = _saved_names(model, modules_to_save)
    r_of = lambda n: _check_rank(_pattern_value(n, rank_pattern, r))  # noqa: E731
    alpha_of = lambda n: _pattern_value(n, alpha_pattern, alpha)  # noqa: E731
    for n in names:
        _check_alpha_dropout(alpha_of(n), dropout)
    _wrap(model, names, r_of, alpha_of, dropout, use_rslora, use_dora, init_lora_weights, saves)
    return model


# --------------------------------------------------------------------------- merging and unloading
def merge_adapter(model: nn.Module, safe_merge: bool = False) -> nn.Module:
    """Fold every adapter into its base weight but keep the LoRA layers (peft's ``merge_adapter``):
    `unmerge_adapter` takes the update out again. ``safe_merge=True`` first checks every layer's
    merged weight for NaN/inf and refuses (naming the layer) before any weight changes.
    Built in lab 04, section 5 (merge)."""
    todo = {name: layer for name, layer in lora_layers(model).items() if not layer.merged}
    if safe_merge:
        for name, layer in todo.items():
            if not torch.isfinite(layer.merged_weight(safe_merge=True)[0]).all():
                raise LabkitError(f"{name}: NaNs detected in the merged weights: the adapter seems broken "
                                  "(nothing was merged)")
    for layer in todo.values():
        layer.merge(safe_merge=safe_merge)
    return model


def unmerge_adapter(model: nn.Module) -> nn.Module:
    """Take every merged adapter out of its base weight again (peft's ``unmerge_adapter``)."""
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def merge_lora(model: nn.Module, safe_merge: bool = False) -> nn.Module:
    """Fold every adapter into its base weight and put the plain layers back (peft's
    ``merge_and_unload``); a ``modules_to_save`` copy replaces its original. Built in lab 04,
    section 5 (merge)."""
    merge_adapter(model, safe_merge=safe_merge)
    for name, layer in lora_layers(model).items():
        _set_module(model, name, layer.base)
    for name, saved in saved_modules(model).items():
        _set_module(model, name, saved.trained)
    return model


merge_and_unload = merge_lora


def unload_lora(model: nn.Module) -> nn.Module:
    """Remove every adapter *without* merging: the original layers again (peft's ``unload``; as
    there, a ``modules_to_save`` module keeps its trained copy). Built in lab 04, section 5 (unload)."""
    for name, layer in lora_layers(model).items():
        layer.unmerge()
        _set_module(model, name, layer.base)
    for name, saved in saved_modules(model).items():
        _set_module(model, name, saved.trained)
    return model


unload = unload_lora


@contextlib.contextmanager
def disable_adapter(model: nn.Module):
    """``with lora.disable_adapter(model):`` -- the base model's outputs inside, the adapters back
    after (peft's ``PeftModel.disable_adapter``). As in peft, a merged layer is unmerged when a
    disabled forward pass reaches it (and stays unmerged)."""
    layers = list(lora_layers(model).values()) + list(saved_modules(model).values())
    before = [m.disabled for m in layers]
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m, was in zip(layers, before):
            m.disabled = was


def lora_param_count(model: nn.Module) -> int:
    """Parameters in the adapters: r * (d_in + d_out) per LoRA layer, plus DoRA's magnitudes and
    any ``modules_to_save`` copies."""
    n = sum(p.numel() for m in lora_layers(model).values() for p in m.adapter_parameters())
    return n + sum(p.numel() for m in saved_modules(model).values() for p in m.trained.parameters())

"""Named model configurations, built on any device -- `meta` included.

Two kinds of model live here:

* **real architectures** (Llama-2-7B, Llama-3-8B, Qwen2.5, GPT-2, ...) written
  out from their published ``config.json`` files, so a learner can count
  parameters or measure memory without downloading a single weight: build
  them on ``meta`` to count, on a GPU with random weights to measure;
* **lab models** (``lab-tiny``, ``lab-small``): small Llama-architecture
  models with the lab tokenizer; ``lab-tiny`` is pretrained by
  ``python -m labkit pretrain`` and committed in ``data/models/lab-tiny``;
* **smollm2-135m**: SmolLM2-135M-Instruct, a real pretrained instruct model
  (134.5M parameters) that ``make model`` installs from the package registry
  (`labkit.smollm2`); its architecture is also here, to count on ``meta``.

`load()` returns a pretrained ``(model, tokenizer)`` from local files only: a
committed lab model, smollm2-135m, or any Hugging Face causal LM the learner
points ``LABKIT_MODEL`` at (a directory, or a hub id already in their cache).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from .errors import LabkitError
from .model_configs import _REGISTRY, LAB_VOCAB_SIZE, _llama, _qwen2  # noqa: F401  (the table; re-exported)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MODELS_DIR = DATA_DIR / "models"
SMOLLM2 = "smollm2-135m"  # the real pretrained instruct model (labkit.smollm2)


def names() -> list[str]:
    """All known model names."""
    return list(_REGISTRY)


def _unknown(name) -> LabkitError:
    return LabkitError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)} "
                       "(or pass a transformers config)")


def published_params(name: str) -> int | None:
    """The parameter count the model's authors report (None for lab models)."""
    if name not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[name][1]


def describe(name: str) -> str:
    if name not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[name][2]


def config(name: str, **overrides) -> PretrainedConfig:
    """A fresh `transformers` config for a named architecture.

    Keyword overrides change fields, e.g. ``config("lab-tiny", num_hidden_layers=2)``.
    """
    if isinstance(name, PretrainedConfig):
        cfg = name.__class__.from_dict(name.to_dict())
    else:
        if name not in _REGISTRY:
            raise _unknown(name)
        cfg = _REGISTRY[name][0]()
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise LabkitError(f"{type(cfg).__name__} has no field {key!r}")
        setattr(cfg, key, value)
    if "num_hidden_layers" in overrides and isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = cfg.layer_types[: cfg.num_hidden_layers]  # Qwen2 keeps one entry per layer
    return cfg


def resolve_config(name_or_config) -> PretrainedConfig:
    """Accept a name or a config; always return a config."""
    if isinstance(name_or_config, PretrainedConfig):
        return name_or_config
    if isinstance(name_or_config, str):
        return config(name_or_config)
    raise LabkitError(f"expected a model name or a transformers config, got {type(name_or_config).__name__}")


def build(name_or_config, device: str | torch.device = "meta", dtype: torch.dtype | None = None,
          attn_implementation: str = "sdpa", seed: int | None = 0):
    """Build a randomly initialised causal LM.

    On ``meta`` nothing is allocated: a 70B model "builds" instantly, which is
    how the labs count parameters. On a real device the weights are random
    (seeded), which is all a memory or speed measurement needs.
    """
    cfg = copy.deepcopy(resolve_config(name_or_config))  # from_config(dtype=...) writes into the config
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LabkitError("build(..., device='cuda') but no CUDA GPU is visible; use device='cpu' or 'meta'")
    if seed is not None and device.type != "meta":
        torch.manual_seed(seed)
    kwargs = {"attn_implementation": attn_implementation}
    if dtype is not None:
        kwargs["dtype"] = dtype
    with device:
        model = AutoModelForCausalLM.from_config(cfg, **kwargs)
    return model


def count_params(model, trainable_only: bool = False) -> int:
    """Parameters of a model, counting tied (shared) tensors once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------
# Pretrained models: the committed lab checkpoint, or the learner's own
# ---------------------------------------------------------------------------
def checkpoint_dir(name: str) -> Path:
    """Where a named pretrained model lives: ``data/models/<name>`` (smollm2-135m: its install dir)."""
    if name == SMOLLM2:
        from . import smollm2

        return smollm2.model_dir()
    return MODELS_DIR / name


def pretrained_names() -> list[str]:
    """Names `load` resolves locally: the committed lab models and the installed smollm2-135m."""
    committed = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").exists()) \
        if MODELS_DIR.exists() else []
    return committed + ([SMOLLM2] if SMOLLM2 not in committed else [])


def _check_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LabkitError(f"load(..., device={str(device)!r}) but no CUDA GPU is visible; use device='cpu' "
                          "(or labkit.env.device() to pick what this machine has)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise LabkitError(f"load(..., device={str(device)!r}) but MPS is not available here; use device='cpu'")
    return dev


def load(name: str | None = None, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """Return ``(model, tokenizer)`` ready to generate; never touches the network.

    ``name`` is a committed lab model (``"lab-tiny"``, ``"lab-cot"``), ``"smollm2-135m"``
    (installed by ``make model``), a local directory, or a hub id already in the local
    Hugging Face cache. With no name, ``LABKIT_MODEL`` is used if set, else ``lab-tiny``.
    Weights come back in fp32 unless ``dtype`` says otherwise; on a CPU, choose lower precision
    by measurement (``python -m labkit.bench.cpu_precision``).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per call is noise in a notebook
    dev = _check_device(device)
    name = str(name or os.environ.get("LABKIT_MODEL") or "lab-tiny").strip()
    if not name:
        raise LabkitError("empty model name; use lab-tiny, smollm2-135m or a local model directory")
    if name == SMOLLM2:
        from . import smollm2

        if not smollm2.is_installed():
            raise LabkitError(smollm2.missing_message())
        model, tokenizer = _load_local_dir(smollm2.model_dir(), dtype, label=name)
    elif "/" not in name and not name.startswith(("~", ".")) and (MODELS_DIR / name / "config.json").exists():
        model, tokenizer = _load_local_dir(MODELS_DIR / name, dtype, label=name)
    elif name in _REGISTRY:
        hint = (f"create it with `python -m labkit pretrain --model {name}`" if name.startswith("lab-")
                else f"{name} is an architecture only (random weights): use models.build({name!r}); "
                     f"pretrained models here: {', '.join(pretrained_names())}")
        raise LabkitError(f"no pretrained checkpoint for {name!r} in {MODELS_DIR / name}; {hint}")
    else:
        model, tokenizer = _load_hf(name, dtype)
    return model.to(dev).eval(), tokenizer


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def _load_local_dir(path: Path, dtype, label: str):
    """A checkpoint directory: safetensors weights, and its own tokenizer or the lab tokenizer."""
    from transformers import AutoTokenizer

    if not any((path / f).exists() for f in _WEIGHT_FILES):
        pickled = [f for f in ("pytorch_model.bin", "model.pt", "model.ckpt") if (path / f).exists()]
        why = (f"it has only {pickled[0]}: labkit loads safetensors only and never unpickles weight files; "
               "convert it with safetensors first") if pickled else "add the weights (save_pretrained writes them)"
        raise LabkitError(f"{label}: {path} has a config.json but no model.safetensors; {why}")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, use_safetensors=True)
    if any((path / f).exists() for f in _TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(path)
    elif model.config.vocab_size == LAB_VOCAB_SIZE:
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer()  # lab models share the committed lab tokenizer
    else:
        raise LabkitError(f"{label}: {path} has weights but no tokenizer (tokenizer.json); save the tokenizer "
                          "into the same directory (tokenizer.save_pretrained(path))")
    return model, _with_pad(tokenizer)


def _with_pad(tokenizer):
    """Batched generation and padding need a pad token; a model without one pads with eos."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_hf(name: str, dtype):
    """A learner's own Hugging Face causal LM: a local directory, or a hub id in the local cache."""
    expanded = Path(os.path.expandvars(name)).expanduser()
    # A hub id is "org/name" (or a single legacy word such as "gpt2"); anything else is a path.
    looks_like_path = name.startswith(("~", ".", "/", "$")) or name.count("/") > 1
    if expanded.is_dir():
        if not (expanded / "config.json").exists():
            raise LabkitError(f"{expanded} has no config.json; LABKIT_MODEL must be a Hugging Face model directory "
                              "(what save_pretrained writes)")
        cfg = _read_config(str(expanded), name)
        _require_causal(cfg, name)
        return _load_local_dir(expanded, dtype, label=name)
    if looks_like_path or expanded.exists():
        raise LabkitError(f"model directory {expanded} does not exist; LABKIT_MODEL must be lab-tiny, "
                          f"smollm2-135m, a local model directory or a hub id in your Hugging Face cache")
    # A hub id: only from the local cache. labkit never downloads at run time.
    from transformers import AutoTokenizer

    cfg = _read_config(name, name, hub=True)
    _require_causal(cfg, name)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32, local_files_only=True,
                                                     use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError as exc:
        raise LabkitError(f"{name!r}: the local Hugging Face cache has its config but not its safetensors weights "
                          f"or tokenizer ({str(exc).splitlines()[0][:120]}); download the whole model once") from None
    return model, _with_pad(tokenizer)


def _read_config(where: str, name: str, hub: bool = False):
    try:
        return AutoConfig.from_pretrained(where, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 -- turn any loading failure into one line
        if hub:
            raise LabkitError(f"{name!r} is not a local directory and not in the local Hugging Face cache; "
                              "labkit is offline and never downloads: download it once yourself "
                              "(e.g. `hf download NAME`) or point LABKIT_MODEL at a local directory") from None
        raise LabkitError(f"cannot read the config of {name!r} ({type(exc).__name__}); LABKIT_MODEL must be a "
                          "local Hugging Face model directory") from None


def _require_causal(cfg, name: str) -> None:
    if not cfg.architectures:  # a config saved by hand may not name its class: go by its model type
        from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                            MODEL_FOR_MASKED_LM_MAPPING_NAMES)

        # decoder types only: BERT-style encoders also have a (rarely used) causal-LM head class
        if cfg.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and cfg.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            return
    if not any(arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel")
               for arch in (cfg.architectures or [])):
        raise LabkitError(f"{name!r} is a {cfg.architectures or cfg.model_type} model, not a causal LM; "
                          "point LABKIT_MODEL at a causal (decoder-only) language model")


@torch.no_grad()
def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 40, temperature: float = 0.0,
                  seed: int = 0, chat: bool = False) -> str:
    """Continue ``prompt`` and return only the new text.

    ``temperature=0`` is greedy decoding (deterministic); ``chat=True`` wraps the
    prompt in the chat template and stops at the end of the assistant's turn.
    """
    from .tokenizer import end_of_turn_ids

    device = next(model.parameters()).device
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = (tokenizer.bos_token or "") + prompt
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and ids.shape[1] + max_new_tokens > limit:
        raise LabkitError(f"prompt ({ids.shape[1]} tokens) + {max_new_tokens} new tokens exceeds the model's "
                          f"context of {limit}; shorten the prompt or ask for fewer tokens")
    torch.manual_seed(seed)
    kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=end_of_turn_ids(tokenizer) if tokenizer.eos_token_id is not None else None)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_k=0)
    else:
        kwargs.update(do_sample=False)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


# ---------------------------------------------------------------------------
# Saving a lab model: data/models/<name>, read back by load(name)
# ---------------------------------------------------------------------------
_NAME_RE = __import__("re").compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def save(model, name: str, *, summary: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` to ``data/models/<name>/`` so that ``load(name)`` returns it; return the directory.

    The layout of the committed lab models (``lab-tiny``, ``lab-cot``): ``config.json``,
    ``generation_config.json`` and ``model.safetensors`` in bf16 (half the bytes; `load` reads them back
    in fp32), plus ``training.json`` with ``summary`` when given. A lab-vocabulary model needs no
    tokenizer files: `load` pairs it with the committed lab tokenizer. safetensors only (nothing is
    pickled). ``name`` is lower case letters, digits, ``.``, ``_`` and ``-`` (no path); an existing
    directory is never replaced unless ``overwrite=True``. The model itself is not modified.
    """
    import shutil
    import tempfile

    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise LabkitError(f"model name must be lower case letters, digits, '.', '_' or '-' (at most 64, no path), "
                          f"got {name!r}")
    if name == SMOLLM2:
        raise LabkitError(f"{SMOLLM2} is the installed SmolLM2 (`make model`); save under another name")
    if summary is not None and not isinstance(summary, dict):
        raise LabkitError(f"summary must be a dict (written as training.json), got {type(summary).__name__}")
    out = Path(MODELS_DIR) / name
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        from .artefacts import shown

        raise LabkitError(f"{shown(out)} already exists; nothing was written: pass overwrite=True to replace it, "
                          "or save under another name")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        write_bf16(model, staging, summary)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def write_bf16(model, directory, summary: dict | None = None, *, generation_config: bool = True) -> Path:
    """The one bf16 safetensors save: ``model`` (not modified) into ``directory`` as `save` lays it out.

    `save` stages into it under ``data/models``; ``python -m labkit pretrain`` and
    ``python -m labkit cot-model`` call it for any ``--out`` (with their own overwrite rules).
    ``generation_config=False`` is the layout of the committed ``lab-cot``: no
    ``generation_config.json`` and ``config.json`` as the model's own (its ``dtype``, not bfloat16);
    ``model.safetensors`` is the same bytes either way."""
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(directory, safe_serialization=True)
    if not generation_config:
        (directory / "generation_config.json").unlink(missing_ok=True)
        model.config.save_pretrained(directory)
    if summary is not None:
        (directory / "training.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return directory

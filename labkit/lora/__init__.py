"""LoRA from scratch: the layer, injection, merge/unmerge, and peft-compatible adapters (lab 04).

Low-Rank Adaptation (Hu et al., 2021) freezes a pretrained weight ``W`` (shape
``d_out x d_in``) and learns a low-rank update next to it::

    h = W x + (alpha / r) * B A x        A: r x d_in (random),  B: d_out x r (zeros)

(rsLoRA, Kalajdzievski 2023, scales by ``alpha / sqrt(r)`` instead: ``use_rslora=True``;
DoRA, Liu et al. 2024, adds a learned magnitude per output row: ``use_dora=True``.)

Only ``A`` and ``B`` train: ``r * (d_in + d_out)`` parameters instead of
``d_in * d_out``. ``B = 0`` at the start, so the adapted model *is* the
pretrained model at step 0; ``A`` is random so that ``B`` gets a gradient.

Everything here matches ``peft`` 0.21 numerically (same scaling, same order of operations and
dtype casts, bit for bit where peft is deterministic) and on disk: `save_adapter` writes
``adapter_config.json`` + ``adapter_model.safetensors`` that ``peft.PeftModel.from_pretrained``
loads onto exactly the same modules, and `load_adapter` reads what peft writes. Option names are
``peft.LoraConfig``'s. The package is split by role, like peft's ``tuners/lora``:

* `labkit.lora.layer` -- `LoRALinear` (``nn.Linear`` and GPT-2's ``Conv1D``), `ModuleToSave`;
* `labkit.lora.model` -- `target_module_names`, `inject_lora`, `merge_adapter` /
  `unmerge_adapter` (keep the layers), `merge_lora` (= peft's ``merge_and_unload``),
  `unload_lora`, `disable_adapter`;
* `labkit.lora.adapter_file` -- `save_adapter`, `load_adapter`, `lora_state_dict`.

Lab 04 writes each piece out in its notebook (sections 2 and 5-6) and proves it equal to this
canonical copy and to peft; later labs import this one.

The package also holds the two small helpers lab 04 fine-tunes with:
`instruction_batches` (chat-formatted SFT batches, loss on the assistant's
tokens only) and `exact_match` (greedy answers vs the reference).
"""
from __future__ import annotations

import torch

from ..errors import LabkitError
from .adapter_file import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX, load_adapter, lora_state_dict, save_adapter
from .layer import LoRALinear, ModuleToSave
from .model import (disable_adapter, inject_lora, lora_layers, lora_param_count, merge_adapter, merge_and_unload,
                    merge_lora, saved_modules, target_matches, target_module_names, unload, unload_lora, unmerge_adapter)

__all__ = ["LoRALinear", "ModuleToSave", "inject_lora", "target_module_names", "target_matches", "merge_lora",
           "merge_and_unload",
           "merge_adapter", "unmerge_adapter", "unload_lora", "unload", "disable_adapter", "lora_layers",
           "saved_modules", "lora_state_dict", "save_adapter", "load_adapter", "lora_param_count",
           "instruction_batches", "instruction_eval_batches", "exact_match", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS",
           "PEFT_PREFIX"]


# ---------------------------------------------------------------------------
# Instruction tuning helpers (lab 04): thin wrappers over labkit.sft (lab 09 explains the formats)
# ---------------------------------------------------------------------------
def instruction_batches(tokenizer, items: list[dict], batch_size: int, seed: int = 0,
                        device: str | torch.device = "cpu"):
    """An endless, seeded iterator of SFT batches (reshuffled every epoch, right-padded):
    ``{"input_ids", "attention_mask", "labels"}`` with labels -100 except on the
    assistant's answer (and its ``<|end|>``), so the loss trains the answer only."""
    from .. import sft

    if batch_size < 1 or not items:
        raise LabkitError("instruction_batches needs at least one item and batch_size >= 1")
    rows = [sft.format_example(it, tokenizer) for it in items]
    return sft.sft_batches(rows, batch_size, tokenizer.pad_token_id, seed=seed, device=device)


def instruction_eval_batches(tokenizer, items: list[dict], batch_size: int = 32,
                             device: str | torch.device = "cpu") -> list[dict]:
    """Fixed SFT batches over ``items`` in order, for a comparable held-out loss."""
    from .. import sft

    rows = [sft.format_example(it, tokenizer) for it in items]
    return sft.eval_batches(rows, batch_size, tokenizer.pad_token_id, device=device)


@torch.no_grad()
def exact_match(model, tokenizer, items: list[dict], max_new_tokens: int = 24) -> float:
    """Fraction of items whose greedy chat answer equals the reference response exactly."""
    from ..models import generate_text

    if not items:
        raise LabkitError("exact_match needs at least one item")
    hits = sum(generate_text(model, tokenizer, it["prompt"], max_new_tokens=max_new_tokens, chat=True).strip()
               == it["response"].strip() for it in items)
    return hits / len(items)

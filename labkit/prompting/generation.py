"""The models and batched generation: the lab's CoT model or the learner's own (lab 08 §3, §8, §12).

Why a module of its own: the harness only needs ``generate(prompts, max_new_tokens, ...)``; loading a
model and running it in batches (with stops and eos, raw text or a chat template) is kept apart so
tests can stub the model out. Lab 08 §3 loads `lab-cot`, §8 `smollm2-135m`, §12 the learner's own.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import LabkitError
from .prompts import COT_MODEL

__all__ = ['load_model', '_is_lab_tokenizer', 'generate_batch', '_model_texts']

# ---------------------------------------------------------------------------
# Models: the lab's CoT model, or the learner's own
# ---------------------------------------------------------------------------
def load_model(name: str | None = None, device: str = "cpu"):
    """``(model, tokenizer)``: ``name``, else ``LABKIT_MODEL``, else the committed ``lab-cot``.

    Everything goes through `labkit.models.load`, which reads local files only: ``lab-cot`` from
    ``data/models/lab-cot`` with the lab tokenizer, ``smollm2-135m`` from its install directory, a
    learner's own Hugging Face causal LM with its own tokenizer.
    """
    from .. import models

    name = name or os.environ.get("LABKIT_MODEL") or COT_MODEL
    if name == COT_MODEL and not (models.checkpoint_dir(COT_MODEL) / "model.safetensors").exists():
        raise LabkitError(f"no checkpoint in {models.checkpoint_dir(COT_MODEL)}; restore it with "
                          "`git checkout -- data/models/lab-cot` or rebuild it with `python -m labkit.cot_model`")
    try:
        return models.load(name, device=device)
    except LabkitError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a broken directory: one line, not a traceback
        raise LabkitError(f"cannot load {name!r} as a causal LM ({type(exc).__name__}); point LABKIT_MODEL "
                          "at a local Hugging Face causal language model directory") from None


def _is_lab_tokenizer(tokenizer) -> bool:
    from ..tokenizer import TOKENIZER_DIR

    try:
        return Path(getattr(tokenizer, "name_or_path", "")).resolve() == TOKENIZER_DIR.resolve()
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Batched generation
# ---------------------------------------------------------------------------
def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int, *, temperature: float = 0.0,
                   seed: int = 0, stop: list[str] | None = None, chat: bool | None = None,
                   strategy: str = "", batch_size: int = 16) -> list[tuple[str, int]]:
    """Continue every prompt (left-padded batches); return ``(new text, generated token count)``.

    ``chat=None``: a learner's model with a chat template gets each prompt as a user turn; the lab
    model (trained on raw "Q: ... A:" text) gets raw text. Text after a ``stop`` string is cut.
    """
    import torch

    from ..tokenizer import end_of_turn_ids

    texts = _model_texts(tokenizer, prompts, chat)
    if _is_lab_tokenizer(tokenizer):
        eos = end_of_turn_ids(tokenizer)
    else:
        eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    limit = getattr(model.config, "max_position_embeddings", None)
    out: list[tuple[str, int]] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            longest = int(enc["attention_mask"].sum(1).max())
            if limit and longest + max_new_tokens > limit:
                hint = ("use fewer shots (smaller k) or strategy='zero_shot_cot'" if strategy == "few_shot_cot"
                        else "use a shorter prompt, fewer new tokens or strategy='zero_shot_cot'")
                raise LabkitError(f"{strategy or 'the'} prompt is {longest} tokens + {max_new_tokens} new tokens, "
                                  f"more than the model's context of {limit}; {hint}")
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            else:
                kwargs.update(do_sample=False)
            torch.manual_seed(seed + start)
            with torch.no_grad():
                gen = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:]
            eos_set = set(eos if isinstance(eos, list) else [eos])
            for row in gen.tolist():
                n = 0
                for t in row:
                    n += 1
                    if t in eos_set:
                        break
                text = tokenizer.decode(row[:n], skip_special_tokens=True)
                for s in stop or []:
                    if s in text:
                        text = text[:text.index(s)]
                        n = min(n, len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1)
                out.append((text, n))
    finally:
        tokenizer.padding_side = side
    return out


def _model_texts(tokenizer, prompts: list[str], chat: bool | None) -> list[str]:
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None)) and not _is_lab_tokenizer(tokenizer)
    if chat:
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    return [(tokenizer.bos_token or "") + p for p in prompts]

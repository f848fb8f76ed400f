"""Greedy generation with a chosen prompt format, for what an SFT model actually says.

`generate` formats the last prompt of each example with a template (`formats.format_prompt`) or any
function, decodes greedily in left-padded batches and cuts after the first stop token, special tokens
kept so a generated ``<|user|>`` shows. Used in lab 09 §6 (loss on all tokens vs the answer only) and
§7 (chat vs base model, and a mismatched template).
"""
from __future__ import annotations

import torch

from .formats import format_prompt

__all__ = ["generate"]


@torch.no_grad()
def generate(model, tokenizer, examples: list[dict], template: str = "chat", max_new_tokens: int = 24,
             stop_at_end_of_turn: bool = True, batch_size: int = 32) -> list[str]:
    """Greedy completions of the last prompt of each example, formatted with ``template`` (a name,
    or a function ``(example, tokenizer) -> prompt ids`` for any other format), in left-padded
    batches. Returns the new text with special tokens kept (so a generated ``<|user|>`` is visible),
    cut after the first stop token. ``stop_at_end_of_turn=False`` stops only at eos, like a server
    that does not know the chat template's end marker."""
    from ..tokenizer import end_of_turn_ids

    device = next(model.parameters()).device
    stops = end_of_turn_ids(tokenizer) if stop_at_end_of_turn else [tokenizer.eos_token_id]
    outs = []
    for s in range(0, len(examples), batch_size):
        prompts = [template(ex, tokenizer) if callable(template) else format_prompt(ex, tokenizer, template)
                   for ex in examples[s:s + batch_size]]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
        gen = model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        for row in gen[:, width:].tolist():
            cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            outs.append(tokenizer.decode([t for t in row[:cut] if t != tokenizer.pad_token_id]))
    return outs

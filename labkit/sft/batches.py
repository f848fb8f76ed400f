"""SFT batches: dynamic padding, and packing with a document boundary.

`collate` right-pads rows to the longest in the batch (labels -100 on padding); `sft_batches` /
`eval_batches` are the seeded training and fixed held-out iterators the fine-tuning labs use (lab 04
§10, lab 05 §9, lab 09 §6 and §9, lab 13 §7; lab 14 §8-13 calls `collate`). `pack` / `collate_packed` /
`packed_batches` concatenate short examples into one row with ``position_ids`` restarting per example,
and `document_mask` builds the per-document causal mask transformers derives from those resets. Built
in lab 09 §4.
"""
from __future__ import annotations

import random
from typing import Iterator

import torch

from ..errors import LabkitError
from .formats import IGNORE

__all__ = ["collate", "sft_batches", "eval_batches", "pack", "collate_packed", "packed_batches", "document_mask"]


# ---------------------------------------------------------------------------
# Batches: dynamic padding, packing
# ---------------------------------------------------------------------------
def collate(rows: list[dict], pad_id: int, device: str | torch.device = "cpu",
            pad_to_multiple_of: int | None = None) -> dict:
    """Right-pad rows to the longest in the batch: pad ids, attention 0, labels -100 (never trained)."""
    if not rows:
        raise LabkitError("collate needs at least one row")
    width = max(len(r["input_ids"]) for r in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        if len(r["labels"]) != n:
            raise LabkitError("a row's labels and input_ids differ in length")
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def sft_batches(rows: list[dict], batch_size: int, pad_id: int, seed: int = 0,
                device: str | torch.device = "cpu") -> Iterator[dict]:
    """An endless, seeded iterator of dynamically padded batches (reshuffled every epoch)."""
    if batch_size < 1 or not rows:
        raise LabkitError("sft_batches needs at least one row and batch_size >= 1")
    rng = random.Random(seed)
    while True:
        order = list(range(len(rows)))
        rng.shuffle(order)
        for i in range(0, max(1, len(order) - batch_size + 1), batch_size):
            yield collate([rows[j] for j in order[i:i + batch_size]], pad_id, device)


def eval_batches(rows: list[dict], batch_size: int, pad_id: int, device: str | torch.device = "cpu") -> list[dict]:
    """Fixed padded batches, in order, for a comparable held-out loss."""
    return [collate(rows[i:i + batch_size], pad_id, device) for i in range(0, len(rows), batch_size)]


def pack(rows: list[dict], seq_len: int) -> list[list[dict]]:
    """Group rows into packs of at most ``seq_len`` tokens (first-fit decreasing: longest rows
    first, each into the first pack with room). A row longer than ``seq_len`` is an error."""
    too_long = [len(r["input_ids"]) for r in rows if len(r["input_ids"]) > seq_len]
    if too_long:
        raise LabkitError(f"{len(too_long)} rows are longer than seq_len={seq_len} (longest {max(too_long)}); "
                          "raise seq_len or format with max_length")
    packs, room = [], []
    for r in sorted(rows, key=lambda r: -len(r["input_ids"])):
        n = len(r["input_ids"])
        j = next((k for k, free in enumerate(room) if free >= n), None)
        if j is None:
            packs.append([]), room.append(seq_len)
            j = len(packs) - 1
        packs[j].append(r)
        room[j] -= n
    return packs


def collate_packed(packs: list[list[dict]], seq_len: int, pad_id: int, device: str | torch.device = "cpu") -> dict:
    """One batch of packs: rows concatenated, ``position_ids`` restarting at 0 for every example,
    labels -100 on padding *and on the first token of every example* (it must not be predicted
    from the previous example's last token). ``use_cache=False`` so transformers derives the
    per-document causal mask from the position resets."""
    b = len(packs)
    ids = torch.full((b, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((b, seq_len), IGNORE, dtype=torch.long)
    pos = torch.zeros((b, seq_len), dtype=torch.long)
    for i, group in enumerate(packs):
        at = 0
        for r in group:
            n = len(r["input_ids"])
            ids[i, at:at + n] = torch.tensor(r["input_ids"])
            labels[i, at:at + n] = torch.tensor(r["labels"])
            labels[i, at] = IGNORE
            pos[i, at:at + n] = torch.arange(n)
            at += n
        pos[i, at:] = torch.arange(seq_len - at)  # padding tail: its own "document", never trained
    return {"input_ids": ids.to(device), "labels": labels.to(device), "position_ids": pos.to(device),
            "use_cache": False}


def packed_batches(rows: list[dict], seq_len: int, batch_size: int, pad_id: int, seed: int = 0,
                   device: str | torch.device = "cpu") -> Iterator[dict]:
    """An endless, seeded iterator of packed batches (packs shuffled every epoch)."""
    packs = pack(rows, seq_len)
    rng = random.Random(seed)
    while True:
        order = list(range(len(packs)))
        rng.shuffle(order)
        for i in range(0, max(1, len(order) - batch_size + 1), batch_size):
            yield collate_packed([packs[j] for j in order[i:i + batch_size]], seq_len, pad_id, device)


def document_mask(position_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The block-diagonal causal mask of packed rows, from scratch: token q may attend to token k
    iff k <= q and both are in the same example (a new example starts where the position resets).
    Returns an additive (batch, 1, L, L) mask (0 = attend, dtype's min = blocked), which both
    eager and sdpa attention accept."""
    doc = (position_ids == 0).long().cumsum(-1)                      # example index of every token
    L = position_ids.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=position_ids.device).tril()
    allowed = (doc[:, :, None] == doc[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

"""Train/test splits by construction, and the one loop that draws every data set.

Why a module: an item belongs to the split ``split_of(key)`` gives it -- a hash of its text (the
document, the prompt or the question), the same on every machine -- so train and test are disjoint
without a list of held-out ids. `_draw` is the loop every generator shares: call ``make(rng)`` until
``n`` new items of the asked split are collected, skipping the other split and the duplicates, from
a ``random.Random`` seeded by the generator's name and ``seed`` (so the same call gives the same text
everywhere). Labs rely on it wherever a held-out set is scored: the test prompts of lab 09 §6, the
test dialogues of lab 09 §3, and the preference pairs of lab 14 §3 and §13 (`split_of`).
"""
from __future__ import annotations

import hashlib
import random

__all__ = ["SPLITS", "split_of", "_check", "_draw"]

SPLITS = ("train", "test")


def split_of(text: str) -> str:
    """The split an item belongs to: a hash of its key text, the same on every machine."""
    return "test" if int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10 == 0 else "train"


def _check(n: int, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def _draw(name: str, make, n: int, seed: int, split: str, split_fn, ident, first=()) -> list:
    """Call make(rng) until n items of `split` are collected, skipping the other split,
    duplicates (same ident) and failed attempts (None)."""
    _check(n, split)
    rng = random.Random(f"{name}:{seed}")  # str seeds are hashed with sha512: stable everywhere
    out = list(first)[:n]
    seen = {ident(x) for x in out}
    budget = 1000 + 200 * n
    while len(out) < n:
        budget -= 1
        if budget < 0:
            raise ValueError(f"could only make {len(out)} unique {name} items for split={split!r}; ask for fewer")
        item = make(rng)
        if item is None or split_fn(item) != split or ident(item) in seen:
            continue
        seen.add(ident(item))
        out.append(item)
    return out

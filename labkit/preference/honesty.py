""""I don't know" pairs: fact questions about made-up names, chosen `IDK` (built in lab 14 §14).

Kept apart from the other pairs because they ask about entities in none of the lab's data: the
right answer is to refuse, and the rejected one is a confident hallucination.
"""
from __future__ import annotations

import random

from .. import data
from ..errors import LabkitError

__all__ = ["IDK", "unknown_pairs", "_SYLLABLES", "_made_up_name"]

IDK = "I don't know."
_SYLLABLES = ("ka", "lo", "mir", "ven", "tor", "sa", "bel", "dun", "ri", "gal", "no", "xe", "qua", "zim", "pel", "or")


def _made_up_name(rng: random.Random, words: int) -> str:
    known = {e for e, _, _ in data.FACTS}
    while True:
        name = " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
                        for _ in range(words))
        if not any(k in name or name in k for k in known):   # nor part of a real name, nor containing one
            return name


def unknown_pairs(n: int, seed: int = 0, *, split: str = "train") -> list[dict]:
    """``n`` honesty pairs about entities that are in none of the lab's data (kind ``"unknown"``).

    The prompt asks a fact question of `labkit.data`'s wordings about a made-up name (one the
    corpora never mention); chosen is `IDK` ("I don't know."), rejected a confident answer with a
    real attribute of that relation -- a hallucination. Prompts split by `labkit.data.split_of`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise LabkitError(f"n must be a non-negative integer, got {n!r}")
    if split not in data.SPLITS:
        raise LabkitError(f"split must be one of {data.SPLITS}, got {split!r}")
    rng = random.Random(f"unknown:{seed}")
    out, seen = [], set()
    while len(out) < n:
        entity, relation, _ = rng.choice(data.FACTS)
        fake = _made_up_name(rng, len(entity.split()))
        prompt = rng.choice(data.FACT_QUESTIONS[relation]).format(e=fake)
        if data.split_of(prompt) != split or prompt in seen:
            continue
        seen.add(prompt)
        attribute = rng.choice(sorted({a for _, r, a in data.FACTS if r == relation}))
        out.append({"prompt": prompt, "chosen": IDK, "rejected": data.fact_sentence(fake, relation, attribute),
                    "kind": "unknown"})
    return out

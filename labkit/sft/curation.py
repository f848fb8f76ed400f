"""SFT data construction: exact and near (MinHash + LSH) dedup, a length filter, and the mix table.

Why a module of its own: it works on the raw examples, before any tokenizer template -- what "the same
text" means (`normalize`, `text_of`), exact dedup by SHA-1, MinHash signatures written from scratch and
banded into LSH buckets for near dedup, a token-length filter, `clean` chaining the three with a table
of what each removed, and `mix_table` for the token share of each source. Built in lab 09 §8.
"""
from __future__ import annotations

import hashlib
import re

import torch

from ..errors import LabkitError

__all__ = ["normalize", "text_of", "exact_dedup", "shingles", "jaccard", "minhash_signatures", "minhash_jaccard",
           "near_dedup", "length_filter", "clean", "token_counts", "mix_table"]


# ---------------------------------------------------------------------------
# Data construction: dedup, length filter, mix
# ---------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed: what 'the same text' means for exact dedup."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def text_of(item) -> str:
    """The text dedup and filters look at: a string, or an example's turns joined by newlines."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and "prompt" in item:
        turns = [t for pair in item.get("history") or [] for t in pair]
        return "\n".join(turns + [item["prompt"], item.get("response", "")])
    raise LabkitError("dedup works on strings or {prompt, response, history} examples")


def exact_dedup(items: list) -> tuple[list, list[int]]:
    """Keep the first of every group whose normalised text has the same SHA-1; return (kept, removed indices)."""
    seen, kept, removed = set(), [], []
    for i, it in enumerate(items):
        h = hashlib.sha1(normalize(text_of(it)).encode()).hexdigest()
        if h in seen:
            removed.append(i)
        else:
            seen.add(h)
            kept.append(it)
    return kept, removed


def shingles(text: str, n: int = 3) -> set[str]:
    """Word n-grams of the normalised text (a text shorter than n words is one shingle)."""
    words = normalize(text).split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 3) -> float:
    """Exact Jaccard similarity |A ∩ B| / |A ∪ B| of the two texts' word n-gram sets."""
    A, B = shingles(a, n), shingles(b, n)
    return len(A & B) / len(A | B) if A | B else 1.0


_PRIME = (1 << 31) - 1


def minhash_signatures(texts: list[str], num_perm: int = 64, n: int = 3, seed: int = 0) -> torch.Tensor:
    """MinHash, from scratch: for each of ``num_perm`` random hash functions h(x) = (a x + b) mod p
    over the 31-bit hashes of a text's shingles, keep the minimum. Two texts agree on one
    signature entry with probability equal to their Jaccard similarity. Returns (len(texts), num_perm) int64."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(1, _PRIME, (num_perm,), generator=g, dtype=torch.int64)
    b = torch.randint(0, _PRIME, (num_perm,), generator=g, dtype=torch.int64)
    sigs = torch.empty((len(texts), num_perm), dtype=torch.int64)
    for i, t in enumerate(texts):
        h = torch.tensor([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % _PRIME
                          for s in shingles(t, n)], dtype=torch.int64)
        sigs[i] = ((a[:, None] * h[None, :] + b[:, None]) % _PRIME).min(dim=1).values  # < 2^62: no overflow
    return sigs


def minhash_jaccard(sig_a: torch.Tensor, sig_b: torch.Tensor) -> float:
    """Estimated Jaccard: the fraction of signature entries that agree."""
    return (sig_a == sig_b).float().mean().item()


def near_dedup(items: list, threshold: float = 0.8, num_perm: int = 64, bands: int = 16, n: int = 3,
               seed: int = 0) -> tuple[list, list[tuple[int, int, float]]]:
    """Near-duplicate removal with MinHash + LSH: split each signature into ``bands`` bands; texts
    sharing any band are candidates (probability 1 - (1 - J^r)^bands, r = num_perm / bands);
    a candidate whose estimated Jaccard >= threshold with an earlier *kept* item is removed.
    Returns (kept, [(removed index, kept index, estimated Jaccard), ...])."""
    if num_perm % bands:
        raise LabkitError(f"num_perm={num_perm} must be a multiple of bands={bands}")
    sigs = minhash_signatures([text_of(it) for it in items], num_perm, n, seed)
    r = num_perm // bands
    buckets: dict = {}
    kept, removed = [], []
    for i in range(len(items)):
        keys = [(k, tuple(sigs[i, k * r:(k + 1) * r].tolist())) for k in range(bands)]
        candidates = {j for key in keys for j in buckets.get(key, ())}
        best = max(((minhash_jaccard(sigs[i], sigs[j]), j) for j in candidates), default=(0.0, -1))
        if best[0] >= threshold:
            removed.append((i, best[1], best[0]))
            continue
        kept.append(items[i])
        for key in keys:
            buckets.setdefault(key, []).append(i)
    return kept, removed


def length_filter(items: list, tokenizer, min_tokens: int = 1, max_tokens: int | None = None):
    """Keep items whose text is between min_tokens and max_tokens tokens; return (kept, removed indices)."""
    lengths = [len(x) for x in tokenizer([text_of(it) for it in items], add_special_tokens=False)["input_ids"]]
    keep = [min_tokens <= n and (max_tokens is None or n <= max_tokens) for n in lengths]
    return [it for it, k in zip(items, keep) if k], [i for i, k in enumerate(keep) if not k]


def clean(items: list, tokenizer, *, min_tokens: int = 3, max_tokens: int | None = 256, threshold: float = 0.8,
          num_perm: int = 64, bands: int = 16) -> tuple[list, list[dict]]:
    """Exact dedup -> near dedup -> length filter. Returns (kept, table): one row per filter with
    how many items it saw and removed."""
    table = []

    def step(name, result):
        kept, removed = result
        table.append({"filter": name, "in": len(kept) + len(removed), "removed": len(removed), "out": len(kept)})
        return kept

    items = step("exact dedup (normalised SHA-1)", exact_dedup(items))
    items = step(f"near dedup (MinHash, J >= {threshold})",
                 near_dedup(items, threshold=threshold, num_perm=num_perm, bands=bands))
    items = step(f"length {min_tokens}-{max_tokens} tokens", length_filter(items, tokenizer, min_tokens, max_tokens))
    return items, table


def token_counts(items: list, tokenizer) -> int:
    """Tokens in a list of texts or examples (no special tokens)."""
    return sum(len(x) for x in tokenizer([text_of(it) for it in items], add_special_tokens=False)["input_ids"])


def mix_table(sources: dict[str, list], tokenizer) -> list[dict]:
    """One row per source: items, tokens, share of all tokens."""
    counts = {name: token_counts(items, tokenizer) for name, items in sources.items()}
    total = sum(counts.values()) or 1
    return [{"source": name, "items": len(sources[name]), "tokens": counts[name], "share": counts[name] / total}
            for name in sources]

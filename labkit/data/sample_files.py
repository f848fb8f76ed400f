"""The committed sample files in data/corpora: how they are written, and `load` to read them.

Why a module: the labs read the corpora from committed files (labs 02 §3, 04 §3, 05 §3 and §8,
06 §12, 09 §3-9, 10 §5, 16 §11) instead of generating them, so every lab sees the same bytes and
``python -m labkit data`` (`labkit.data_cli`) can check that a rerun reproduces them. The sizes
keep every file under 1 MiB. ``CORPORA_DIR`` is ``<repo>/data/corpora``, three directories above
this file.
"""
from __future__ import annotations

import json
from pathlib import Path

from .corpora import domain_corpus, general_corpus
from .dialogues import dialogues
from .instructions import instructions
from .splits import SPLITS
from .word_problems import word_problems

__all__ = ["NAMES", "CORPORA_DIR", "write_corpora", "load", "_SAMPLE_SIZES", "_sample", "_path"]

NAMES = ("general", "domain", "instructions", "dialogues", "word_problems")
CORPORA_DIR = Path(__file__).resolve().parents[2] / "data" / "corpora"


# name -> (train size, test size), all with seed 0; chosen so every file stays under 1 MiB.
# word_problems test has that many problems *per step count* (1..5).
_SAMPLE_SIZES = {"general": (2900, 500), "domain": (1400, 300), "instructions": (4000, 400),
                 "dialogues": (2500, 300), "word_problems": (2000, 100)}


def _sample(name: str, split: str) -> list:
    n = _SAMPLE_SIZES[name][SPLITS.index(split)]
    if name == "word_problems" and split == "test":  # n per step count, APPLES_PROBLEM first
        buckets = [word_problems(n, seed=0, split="test", n_steps=k) for k in range(1, 6)]
        return [buckets[1][0]] + buckets[0] + buckets[1][1:] + buckets[2] + buckets[3] + buckets[4]
    make = {"general": general_corpus, "domain": domain_corpus, "instructions": instructions,
            "dialogues": dialogues, "word_problems": word_problems}[name]
    return make(n, seed=0, split=split)


def _path(directory: Path, name: str, split: str) -> Path:
    return directory / f"{name}_{split}.{'txt' if name in ('general', 'domain') else 'jsonl'}"


def write_corpora(out_dir) -> dict[str, Path]:
    """Write the sample files (seed 0) into out_dir; return {"general_train": path, ...}.
    .txt: one document per paragraph (blank-line separated); .jsonl: one item per line."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in NAMES:
        for split in SPLITS:
            items, path = _sample(name, split), _path(out_dir, name, split)
            if path.suffix == ".txt":
                text = "\n\n".join(items) + "\n"
            else:
                text = "".join(json.dumps(x) + "\n" for x in items)
            path.write_bytes(text.encode("ascii"))
            paths[f"{name}_{split}"] = path
    return paths


def load(name: str, split: str = "train") -> list:
    """Read a committed sample file from data/corpora: list of str for the corpora, list of dicts otherwise."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = _path(CORPORA_DIR, name, split)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; regenerate it with: python -m labkit data")
    text = path.read_text(encoding="ascii")
    if path.suffix == ".txt":
        return [d.strip() for d in text.split("\n\n") if d.strip()]
    return [json.loads(line) for line in text.splitlines() if line.strip()]

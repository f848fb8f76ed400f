"""Regenerating a committed artefact without losing it.

Two guards live here, one per kind of artefact:

* `committed_model_dir` -- the default output of a training command
  (``pretrain``, ``cot_model``) when it already holds a committed model;
* `publish` -- rebuilt data files (corpora, tokenizer) that would change.

``python -m labkit data`` and ``python -m labkit tokenizer`` rebuild files
that are committed (the corpora, the tokenizer). They are deterministic, so a
rerun with the defaults should reproduce the same bytes -- and if it does not
(other arguments, changed code), silently replacing the committed files would
change every lab downstream. So both build into a temporary folder first, then
`publish` compares: identical files are left alone ("unchanged"), and files
that would change are replaced only with ``--force`` (or an ``--out`` that
points elsewhere).

In the labs: no notebook calls it; it guards the commands that lab 08 §3 (`cot_model`) and the
README (`pretrain`, `data`, `tokenizer`) tell a learner to run.
"""
from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from .errors import LabkitError


def shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies under it (shorter to read), else as is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def committed_model_dir(name: str, force: bool = False) -> Path:
    """``data/models/<name>``, the default output of a training command -- unless it already holds a
    model (a committed one: lab-tiny, lab-cot) and ``force`` is not set; checked before training."""
    from . import models

    out = models.checkpoint_dir(name)
    if (out / "model.safetensors").exists() and not force:
        raise LabkitError(f"{shown(out)} already holds a committed model; pass --out DIR for a new one, "
                          "or --force to replace it")
    return out


def publish(staging: Path, target: Path, *, force: bool, what: str) -> dict[str, str]:
    """Copy every file of ``staging`` into ``target``; return ``{file name: "new"|"unchanged"|"replaced"}``.

    Raises `LabkitError` (and copies nothing) when an existing file would change and ``force`` is False.
    """
    staging, target = Path(staging), Path(target)
    status = {}
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = src.relative_to(staging)
        dst = target / rel
        if not dst.exists():
            status[str(rel)] = "new"
        elif filecmp.cmp(src, dst, shallow=False):
            status[str(rel)] = "unchanged"
        else:
            status[str(rel)] = "replaced"
    changed = [name for name, s in status.items() if s == "replaced"]
    if changed and not force:
        raise LabkitError(f"this would change the committed {what} in {target} ({', '.join(changed[:4])}"
                          f"{' ...' if len(changed) > 4 else ''}); nothing was written: pass --force to replace "
                          "them, or --out DIR to write elsewhere")
    for name, s in status.items():
        if s != "unchanged":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(staging / name, target / name)
    return status

"""Measured results committed as CSV, each with the run that produced it.

Every file in ``data/results/`` starts with one ``#`` line of metadata (GPU,
torch version, date, exact command), then a normal CSV header and rows. A
notebook without a GPU plots these files and says which run they came from.
"""
from __future__ import annotations

import csv
import io
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from .errors import LabkitError

RESULTS_DIR = Path(__file__).resolve().parent.parent / "data" / "results"


def run_metadata(command: str | None = None) -> dict:
    """Where and how this process runs: device, versions, date, the command line."""
    import torch
    import transformers

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "device": gpu or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or "python -m " + " ".join(shlex.quote(a) for a in [_module_name()] + sys.argv[1:]),
    }


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec and spec.name else Path(sys.argv[0]).name


def write_csv(path: str | Path, rows: list[dict], metadata: dict | None = None) -> Path:
    """Write rows (dicts with the same keys) under a ``# {json metadata}`` line."""
    if not rows:
        raise LabkitError(f"no rows to write to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = metadata or run_metadata()
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as f:
        f.write("# " + json.dumps(meta) + "\n")
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_bench_csv(name: str, rows: list[dict], *, device, quick: bool, out: str | Path | None = None,
                    metadata: dict | None = None) -> Path | None:
    """Where a ``labkit/bench`` script's rows go: ``out`` if given, else ``data/results/<name>_gpu.csv``
    -- but only for a real run on CUDA. A CPU or ``--quick`` run only checks the code path and must
    never overwrite a committed GPU measurement, so it writes nothing. Returns the path written."""
    import torch

    if out is None:
        if torch.device(device).type != "cuda" or quick:
            return None
        out = RESULTS_DIR / f"{name}_gpu.csv"
    path = write_csv(out, rows, metadata)
    print(f"wrote {path}")
    return path


def read_csv(path: str | Path) -> tuple[dict, list[dict]]:
    """Return ``(metadata, rows)``; numbers come back as int/float, empty cells as None."""
    path = Path(path)
    if not path.exists():
        raise LabkitError(f"{path} does not exist; run the matching labkit/bench script on a GPU to create it")
    text = path.read_text()
    first, _, body = text.partition("\n")
    if not first.startswith("#"):
        raise LabkitError(f"{path} has no '# metadata' first line")
    meta_text = first.lstrip("#").strip()
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError:
        meta = {"comment": meta_text}
    rows = [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(body))]
    return meta, rows


def _parse(value: str | None):
    if value is None or value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def describe(meta: dict) -> str:
    """One line naming the run, for notebook output."""
    keys = ("device", "torch", "date", "command")
    return "; ".join(f"{k}: {meta[k]}" for k in keys if k in meta) or meta.get("comment", "")

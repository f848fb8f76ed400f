"""Measured results committed as CSV, each with the run that produced it.

Every file in ``data/results/`` starts with one ``#`` line of metadata (GPU,
torch version, date, exact command), then a normal CSV header and rows. A
notebook without a GPU plots these files and says which run they came from.

``data/results/<name>_gpu.csv`` is written only by a full run of a
``labkit/bench`` script on a GPU; CPU and ``--quick`` runs write into the
git-ignored ``data/results/local/`` (see `write_bench_csv`).

In the labs: a notebook without a GPU plots the committed GPU run (labs 00 §3, 01 §5, 02 §4, 03 §8,
04 §10, 05 §9, 06 §13, 07 §13, 08 §8, 10 §7, 12 §9, 13 §8, 16 §8) and names the run with `describe`.
"""
from __future__ import annotations

import csv
import io
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from .artefacts import shown
from .errors import LabkitError

RESULTS_DIR = Path(__file__).resolve().parent.parent / "data" / "results"
LOCAL_DIR = RESULTS_DIR / "local"   # git-ignored: what CPU and --quick bench runs write


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


def is_full_gpu_run(device, quick: bool) -> bool:
    """Only a full (not ``--quick``) run on CUDA measures what ``data/results/*_gpu.csv`` holds."""
    import torch

    return torch.device(device).type == "cuda" and not quick


def bench_csv_path(name: str, *, device, quick: bool, out: str | Path | None = None,
                   subset: bool = False) -> Path:
    """Where a ``labkit/bench`` script's output goes; call it before the run, so a bad ``--out``
    stops the script before it measures anything.

    * a full run on CUDA: ``out``, else the committed ``data/results/<name>_gpu.csv``;
    * a CPU or ``--quick`` run only checks the code path: ``out``, else the git-ignored
      ``data/results/local/<name>_<device type>[_quick].csv`` -- never a committed GPU file,
      and an ``out`` named ``*_gpu.csv`` is refused (a CPU number in a GPU file is a silent
      wrong number);
    * ``subset``: a GPU run of only some rows (``memory --only``) never replaces the committed
      full table: ``out``, else ``data/results/local/<name>_<device type>_only.csv``."""
    import torch

    if is_full_gpu_run(device, quick):
        if out is not None:
            return Path(out)
        return LOCAL_DIR / f"{name}_{torch.device(device).type}_only.csv" if subset else RESULTS_DIR / f"{name}_gpu.csv"
    if out is not None:
        out = Path(out)
        if out.name.endswith("_gpu.csv"):
            raise LabkitError(f"--out {out}: a CPU or --quick run may not write a *_gpu.csv file (those hold "
                              f"full GPU measurements); drop --out (it then writes {shown(LOCAL_DIR)}/) "
                              "or choose another name")
        return out
    kind = torch.device(device).type + ("_quick" if quick else "")
    return LOCAL_DIR / f"{name}_{kind}.csv"


def bench_wrote_message(path: str | Path, name: str, *, device, quick: bool) -> str:
    """The line a bench script prints after writing ``path``: it says when it was not a full GPU run."""
    line = f"wrote {shown(path)}"
    if not is_full_gpu_run(device, quick):
        line += (f" (a CPU/--quick run; {shown(RESULTS_DIR / f'{name}_gpu.csv')} is written only by a "
                 "full run on a GPU)")
    return line


def write_bench_csv(name: str, rows: list[dict], *, device, quick: bool, out: str | Path | None = None,
                    metadata: dict | None = None) -> Path:
    """Write a ``labkit/bench`` script's rows where `bench_csv_path` says, print where, return the path.

    A full run on CUDA writes ``out`` or ``data/results/<name>_gpu.csv``; a CPU or ``--quick`` run
    writes ``out`` or ``data/results/local/<name>_<device>[_quick].csv`` (git-ignored) and never
    a committed GPU measurement."""
    path = write_csv(bench_csv_path(name, device=device, quick=quick, out=out), rows, metadata)
    print(bench_wrote_message(path, name, device=device, quick=quick), flush=True)
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

"""Execute lab notebooks in place and stamp where their outputs came from.

    python -m labkit.notebooks --profile cpu labs/00_setup_and_hardware.ipynb

Every committed notebook says in its first cell which profile and device
produced its outputs; this script writes that line from the real run, so it
can never disagree with the outputs below it.
"""
from __future__ import annotations

import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

STAMP_PREFIX = "**Committed outputs:**"
STAMP_RE = re.compile(r"\*\*Committed outputs:\*\*.*profile `(smoke|cpu|full)`.*device `([^`]+)`")
MAX_BYTES = 1_000_000


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    threads = torch.get_num_threads()  # what the kernel inherits (OMP_NUM_THREADS), as env.report prints it
    return f"CPU, {os.cpu_count()} cores, {threads} torch thread{'s' if threads != 1 else ''} ({platform.machine()})"


def stamp_line(profile: str, device: str) -> str:
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return (f"{STAMP_PREFIX} this notebook was last run top to bottom with profile `{profile}` "
            f"on device `{device}`, {date}.")


def stamp(nb, profile: str, device: str) -> None:
    cell = nb.cells[0]
    if cell.cell_type != "markdown":
        raise SystemExit("the first cell of a lab notebook must be its Markdown title cell")
    lines = [ln for ln in cell.source.splitlines() if not ln.startswith(STAMP_PREFIX)]
    # keep the stamp right under the title line
    lines.insert(1, "")
    lines.insert(2, stamp_line(profile, device))
    cell.source = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def execute(path: Path, profile: str, timeout: int = 3600) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["LABKIT_PROFILE"] = profile
    stamp(nb, profile, device_description())
    start = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:  # execution timestamps only add noise to diffs
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        print(f"warning: {path} is {size / 1e6:.2f} MB (limit 1 MB): lower plot DPI or print less", file=sys.stderr)
    return time.time() - start


def main(argv: list[str] | None = None) -> int:
    from . import cli

    p = cli.parser("notebooks", __doc__.splitlines()[0], profile=False)
    p.add_argument("--profile", choices=("smoke", "cpu", "full"), required=True,
                   help="the profile the notebooks run in (and their first cell names)")
    p.add_argument("notebooks", nargs="+")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    ran = {}
    for name in args.notebooks:
        seconds = execute(Path(name), args.profile)
        ran[name] = round(seconds, 1)
        print(f"{name}: ran in {seconds:.0f} s with profile {args.profile}")
    if args.json:
        cli.emit_json({"profile": args.profile, "seconds": ran})
    return 0


if __name__ == "__main__":
    from . import cli

    sys.exit(cli.run(main, sys.argv[1:]))

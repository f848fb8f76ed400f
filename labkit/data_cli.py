"""`python -m labkit data`: regenerate the committed corpora in data/corpora.

The corpora are built in a temporary folder and compared with the committed
files (`labkit.artefacts.publish`): a rerun that reproduces them says
"unchanged"; one that would change them needs ``--force``.

In the labs: every lab reads the corpora this command writes (through `labkit.data`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from . import artefacts, cli, data


def main(argv: list[str]) -> int:
    p = cli.parser("data", "Regenerate the committed lab corpora (deterministic).", profile=False, json_flag=False)
    p.add_argument("--out", default=str(data.CORPORA_DIR))
    p.add_argument("--force", action="store_true", help="replace committed files that would change")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="labkit-data-") as tmp:
        written = data.write_corpora(Path(tmp))
        status = artefacts.publish(Path(tmp), Path(args.out), force=args.force, what="corpora")
        for name, path in written.items():
            print(f"{name:<28} {Path(path).stat().st_size / 1024:8.1f} KiB  {status[Path(path).name]:<9}  "
                  f"{Path(args.out) / Path(path).name}")
    return 0

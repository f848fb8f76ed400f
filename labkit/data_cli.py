"""`python -m labkit data`: regenerate the committed corpora in data/corpora."""
from __future__ import annotations

from pathlib import Path

from . import cli, data


def main(argv: list[str]) -> int:
    p = cli.parser("data", "Regenerate the committed lab corpora (deterministic).", profile=False, json_flag=False)
    p.add_argument("--out", default=str(Path(data.__file__).resolve().parent.parent / "data" / "corpora"))
    args = p.parse_args(argv)
    written = data.write_corpora(Path(args.out))
    for name, path in written.items():
        print(f"{name:<28} {Path(path).stat().st_size / 1024:8.1f} KiB  {path}")
    return 0

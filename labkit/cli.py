"""Conventions shared by every `python -m labkit <experiment>` subcommand.

* ``--profile smoke|cpu|full`` picks the size (default: the environment's);
* a readable report by default; ``--json`` prints ONE JSON object as the last
  line of stdout (so scripts can ``tail -1 | jq``);
* bad input exits with code 2 and one line on stderr -- never a traceback.

Experiments are importable functions first; their CLI is a thin wrapper built
with `parser()` and run with `run()`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .errors import LabkitError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit code 2
        raise LabkitError(f"{message} (see `{self.prog} --help`)")


def parser(name: str, description: str, profile: bool = True, json_flag: bool = True, *,
           profile_help: str | None = None) -> argparse.ArgumentParser:
    """`name` makes the usage line ``python -m labkit <name>`` (``"bench lora"`` for a bench)."""
    p = _Parser(prog=f"python -m labkit {name}", description=description)
    if profile:
        from .env import PROFILES  # lazily: env imports torch

        p.add_argument("--profile", choices=PROFILES, default=None,
                       help=profile_help or "smoke (CI, ~1 min on 2 CPU cores), cpu (laptop), full (GPU); "
                                            "default: LABKIT_PROFILE or full on CUDA, cpu otherwise")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    return p


def emit_json(obj) -> None:
    """Print `obj` as a single JSON line (numbers stay numbers; tensors are not allowed)."""
    print(json.dumps(obj, default=to_jsonable), flush=True)


def to_jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return str(value)


def run(main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run a subcommand's main, turning a LabkitError into one line and exit code 2."""
    try:
        return int(main(argv) or 0)
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

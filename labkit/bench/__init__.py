"""Scripts that measure on a real GPU and write ``data/results/*_gpu.csv``.

Each is runnable as ``python -m labkit bench <name> [--profile smoke|cpu|full] [--json] [--out PATH]
[--quick] [--device cpu]`` (or, the same, ``python -m labkit.bench.<name> ...``);
``python -m labkit bench --help`` lists them. ``--device cpu --quick`` runs the same code path on
tiny models without a GPU (matmul and mfu have no CPU mode). Only a full run on CUDA writes the
committed ``data/results/<name>_gpu.csv``; a CPU or ``--quick`` run writes the git-ignored
``data/results/local/<name>_<device>[_quick].csv`` (or ``--out``, which may then not be named
``*_gpu.csv``) and says so -- see `labkit.results.write_bench_csv`. Errors are one line and exit
code 2, as in ``python -m labkit``.

``--profile`` (see `profile_defaults`) is a shorthand for ``--quick``/``--device``:

* ``smoke``: the ``--quick`` path on the default device (cuda when present, else cpu);
* ``cpu``: ``--device cpu`` with the quick sizes (cpu_precision: its own CPU sizes, i.e. no ``--quick``);
  a GPU-only bench (matmul, mfu) refuses it in one line, as it refuses ``--device cpu``;
* ``full``: the real GPU measurement, i.e. no ``--quick`` on cuda (today's default).

No ``--profile`` is the behaviour without it; an explicit ``--quick`` or ``--device`` wins over the
profile. ``--json`` prints, after the normal output, ONE JSON object as the last line of stdout:
``{"bench": name, "csv": path, "rows": [...]}`` with the rows as read back from the written CSV.
"""
from __future__ import annotations

import importlib
import sys

# name -> one-line description (kept here so `python -m labkit --help` need not import torch)
BENCHES = {
    "checkpointing": "activation memory and step time of gradient-checkpointing layouts (lab 03)",
    "cpu_precision": "is bf16 autocast worth it on this CPU? one fine-tuning step per precision",
    "decode": "decode speed and memory in bf16, int8 and NF4 on a GPU (lab 10)",
    "forgetting": "every lab-06 forgetting strategy, several seeds, mean and spread (lab 06)",
    "fsdp": "FSDP2 on one GPU: CPU offload vs none under a memory budget (lab 07)",
    "lora": "LoRA step speed and peak memory: labkit.lora vs peft (lab 04)",
    "matmul": "dense matmul throughput on this GPU vs its spec sheet (lab 00; GPU only)",
    "memory": "estimated vs measured peak memory of real training steps (lab 01)",
    "mfu": "MFU of a 1B-class Llama training step and where its time goes (lab 12; GPU only)",
    "peft": "the PEFT family on fp16/int8/int4 bases: step time and peak memory (lab 13)",
    "precision": "training-step time and peak memory per precision on a GPU (lab 02)",
    "qlora": "QLoRA on a 7B-shaped model: peak memory and step time, measured and estimated (lab 05)",
}

PROFILE_HELP = ("smoke: the --quick path on the default device (cuda if present, else cpu); "
                "cpu: --device cpu with the quick sizes; full: the real GPU measurement. "
                "Default: none (the flags below as given); an explicit --quick/--device wins")
CPU_SIZES_PROFILE_HELP = ("smoke: --quick; cpu and full: this bench's own CPU sizes (no --quick). "
                          "Default: none (the flags below as given); an explicit --quick wins")

_UNSET = object()


def profile_defaults(profile: str | None, has_cuda: bool, *, cpu_sizes: bool = False) -> dict:
    """The ``quick``/``device`` values a ``--profile`` stands for (``{}`` for no profile).

    `cpu_sizes`: the bench has its own CPU sizes (cpu_precision), so ``cpu`` means no ``--quick``."""
    if profile is None:
        return {}
    if profile == "smoke":
        return {"quick": True, "device": "cuda" if has_cuda else "cpu"}
    if profile == "cpu":
        return {"quick": not cpu_sizes, "device": "cpu"}
    if profile == "full":
        return {"quick": False, "device": "cpu" if cpu_sizes else "cuda"}
    from ..errors import LabkitError

    raise LabkitError(f"--profile {profile!r} is not a profile; use smoke, cpu or full")


def parser(name: str, description: str, *, cpu_sizes: bool = False):
    """A bench's argparse parser: one-line errors (exit 2), ``--profile`` and ``--json``."""
    from .. import cli

    return cli.parser(f"bench {name}", description,
                      profile_help=CPU_SIZES_PROFILE_HELP if cpu_sizes else PROFILE_HELP)


def parse(p, argv, *, cpu_sizes: bool = False):
    """Parse `argv`, then fill ``quick``/``device`` from ``--profile`` where not given explicitly."""
    keys = [a.dest for a in p._actions if a.dest in ("quick", "device")]
    saved = {k: p.get_default(k) for k in keys}
    p.set_defaults(**{k: _UNSET for k in keys})
    try:
        args = p.parse_args(argv)
    finally:
        p.set_defaults(**saved)
    wanted = {}
    if args.profile is not None:
        import torch

        wanted = profile_defaults(args.profile, torch.cuda.is_available(), cpu_sizes=cpu_sizes)
    for k in keys:
        if getattr(args, k) is _UNSET:
            setattr(args, k, wanted.get(k, saved[k]))
    return args


def emit(args, name: str, path) -> None:
    """With ``--json``: print ``{"bench", "csv", "rows"}`` (rows as read back from the CSV) last."""
    if getattr(args, "json", False):
        from .. import cli, results

        cli.emit_json({"bench": name, "csv": str(path), "rows": results.read_csv(path)[1]})


def usage() -> str:
    lines = ["usage: python -m labkit bench <name> [--profile smoke|cpu|full] [--json] [options]", "",
             "benches (each writes data/results/<name>_gpu.csv on a full GPU run):"]
    lines += [f"  {name:<14} {help_}" for name, help_ in BENCHES.items()]
    lines += ["", "Run `python -m labkit bench <name> --help` for a bench's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m labkit bench <name> ...`: dispatch to ``labkit.bench.<name>.main``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[0].replace("-", "_")
    if name not in BENCHES:
        from ..errors import LabkitError

        raise LabkitError(f"unknown bench {argv[0]!r}; benches: {', '.join(BENCHES)}")
    return importlib.import_module(f"{__name__}.{name}").main(argv[1:])

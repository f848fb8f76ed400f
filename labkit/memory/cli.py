"""``python -m labkit memory``: the estimate of one training step, printed as a table (``--json``: a dict).

A thin front end over `labkit.memory.estimate` through `labkit.cli` (one-line errors, ``--json``
last line); lab 01 §8's calculator asks the same question from a widget.
"""
from __future__ import annotations

import sys
from dataclasses import replace

from ..train import PRECISIONS
from .arch import supported_models
from .constants import DEFAULT_LORA_TARGETS, OPTIMIZERS
from .bill import estimate

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from .. import cli

    p = cli.parser("memory", "Estimate the GPU memory of one training step (weights, gradients, "
                             "optimizer states, activations, peak).")
    p.add_argument("--model", required=True, help="a Llama-family labkit model: " + ", ".join(supported_models()))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--precision", default="bf16-mixed", help=", ".join(PRECISIONS))
    p.add_argument("--optimizer", default="adamw", help=", ".join(OPTIMIZERS))
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lora-rank", type=int, default=None)
    p.add_argument("--lora-targets", default=",".join(DEFAULT_LORA_TARGETS),
                   help="comma-separated LoRA target layers (default q_proj,v_proj)")
    p.add_argument("--quantization", default=None, help="nf4 or int8 (needs --lora-rank)")
    p.add_argument("--attn", default="sdpa", help="sdpa or eager")
    p.add_argument("--device", default=None, help="cuda or cpu: apply that device's kernel rules")
    args = p.parse_args(argv)
    est = estimate(args.model, batch_size=args.batch_size, seq_len=args.seq_len, precision=args.precision,
                   optimizer=args.optimizer, gradient_checkpointing=args.gradient_checkpointing,
                   lora_rank=args.lora_rank, quantization=args.quantization, attn_implementation=args.attn,
                   lora_targets=tuple(t for t in args.lora_targets.split(",") if t), device=args.device)
    print(replace(est, warnings=[]))   # warnings go to stderr (the table and a --json last line stay clean)
    for warning in est.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        cli.emit_json(est.to_dict())
    return 0

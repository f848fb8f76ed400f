"""Pretrain a lab model on the general corpus: ``python -m labkit pretrain``.

This is how ``data/models/lab-tiny`` was made; the exact command, the final
losses and the machine are written next to the weights in ``training.json``.
Rerunning the command on the same kind of machine reproduces the checkpoint
(CPU runs are deterministic; GPU kernels may differ in the last bits). The
weights are stored in bf16 (9 MB instead of 18 MB); `labkit.models.load`
returns them as fp32.

The model is a small Llama (see ``labkit.models``); the data is the synthetic
general corpus from ``labkit.data``, tokenized with the lab tokenizer and cut
into random windows; the loop is the shared ``labkit.train.train``.

Without ``--out`` the model goes to ``data/models/<model>``; when that already
holds a model (``lab-tiny`` is committed) the command stops before training
unless ``--force`` is given -- pass ``--out DIR`` for a new model instead.
"""
from __future__ import annotations

import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import artefacts, data, env, models, train
from .errors import LabkitError
from .tokenizer import load_tokenizer

SAMPLE_PROMPTS = ["The capital of", "On Monday morning", "Anna is a"]


def pretrain(name: str = "lab-tiny", *, steps: int = 3000, batch_size: int = 16, seq_len: int = 256,
             lr: float = 3e-3, n_docs: int = 40000, seed: int = 0, out: str | Path | None = None,
             device: str | None = None, progress: bool = True, force: bool = False,
             init_from: str | None = None, mix: str = "general") -> dict:
    """Train ``name`` from scratch (or continue ``init_from``, a pretrained lab model); save it
    (safetensors) with ``training.json``; return the summary.

    ``mix="general"`` trains on the general corpus (how lab-tiny was made); ``mix="coverage"`` on
    `labkit.coverage.coverage_mix`, which shows every token the lab corpora use. The summary
    records how many of those tokens the training text never showed (``coverage``).

    ``out`` defaults to ``data/models/<name>``; a model already there (the committed lab-tiny)
    is replaced only with ``force=True`` -- checked before any training."""
    if name not in ("lab-tiny", "lab-small"):
        raise LabkitError(f"pretrain builds lab models only (lab-tiny, lab-small), not {name!r}")
    if mix not in ("general", "coverage"):
        raise LabkitError(f"--mix must be general or coverage, not {mix!r}")
    out_dir = Path(out) if out else default_out(name, force=force)
    dev = torch.device(device) if device else env.device()
    env.seed_everything(seed)
    tokenizer = load_tokenizer()
    if init_from:
        model, _ = models.load(init_from, device=dev)
        if model.config.vocab_size != len(tokenizer):
            raise LabkitError(f"--init-from {init_from}: its vocabulary ({model.config.vocab_size}) is not the "
                              f"lab tokenizer's ({len(tokenizer)}); continue a lab model")
    else:
        cfg = models.config(name, vocab_size=len(tokenizer))
        model = models.build(cfg, device=dev, seed=seed, attn_implementation="sdpa")

    from . import coverage

    docs = data.general_corpus(n_docs, seed=seed) if mix == "general" else \
        coverage.coverage_mix(tokenizer, n_docs, seed=seed)
    token_coverage = coverage.report(tokenizer, docs)
    train_tokens = train.pack_documents(tokenizer, docs)
    test_tokens = train.pack_documents(tokenizer, data.load("general", "test"))
    eval_data = train.eval_batches(test_tokens, batch_size, seq_len, max_batches=8, device=dev)
    precision = "bf16-mixed" if dev.type == "cuda" else "fp32"
    tcfg = train.TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 20), weight_decay=0.1,
                             precision=precision, eval_every=max(1, steps // 10), progress=progress,
                             desc=f"pretrain {name}")
    history = train.train(model, train.random_batches(train_tokens, batch_size, seq_len, seed=seed, device=dev),
                          tcfg, eval_data=eval_data)

    # The checkpoint is stored in bf16 (half the bytes; labs load it back as fp32),
    # so the reported eval loss and samples are those of the rounded weights.
    model.to(torch.bfloat16).to(torch.float32)
    final_eval = train.evaluate_loss(model, eval_data, precision)
    samples = {p: models.generate_text(model, tokenizer, p, max_new_tokens=30) for p in SAMPLE_PROMPTS}
    summary = {
        "model": name,
        "n_params": models.count_params(model),
        "command": "python -m labkit pretrain " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["pretrain"] else None,
        "init_from": init_from, "mix": mix,
        "steps": steps, "batch_size": batch_size, "seq_len": seq_len, "lr": lr, "n_docs": n_docs,
        "seed": seed, "precision": precision, "coverage": token_coverage,
        "train_tokens_in_corpus": int(train_tokens.numel()),
        "tokens_seen": history.tokens,
        "final_train_loss": round(history.loss[-1], 4),
        "final_eval_loss": round(final_eval, 4),
        "final_eval_loss_before_bf16_rounding": round(history.eval_loss[-1], 4),
        "eval_curve": {"step": history.eval_step, "loss": [round(x, 4) for x in history.eval_loss]},
        "seconds": round(history.seconds, 1),
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "samples": samples,
    }
    models.write_bf16(model, out_dir, summary)
    return summary


def default_out(name: str, force: bool = False) -> Path:
    """``data/models/<name>``, unless it already holds a model and ``force`` is not set."""
    return artefacts.committed_model_dir(name, force)


def main(argv: list[str]) -> int:
    from . import cli

    p = cli.parser("pretrain", "Pretrain a lab model on the general corpus.", profile=False)
    p.add_argument("--model", default="lab-tiny")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--docs", type=int, default=40000, help="general-corpus documents generated for training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, help="continue a pretrained lab model (e.g. lab-tiny) instead of "
                                                     "starting from random weights")
    p.add_argument("--mix", default="general", choices=("general", "coverage"),
                   help="general corpus only, or the coverage mix that trains every token the labs use")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="output directory (default data/models/<model>, "
                                                "which must not hold a model yet unless --force)")
    p.add_argument("--force", action="store_true",
                   help="without --out: replace the model in data/models/<model> (e.g. the committed lab-tiny)")
    args = p.parse_args(argv)
    if min(args.steps, args.batch_size, args.seq_len, args.docs) <= 0:
        raise LabkitError("--steps, --batch-size, --seq-len and --docs must be positive")
    start = time.time()
    summary = pretrain(args.model, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                       lr=args.lr, n_docs=args.docs, seed=args.seed, out=args.out, device=args.device,
                       progress=not args.json, force=args.force, init_from=args.init_from, mix=args.mix)
    if args.json:
        cli.emit_json(summary)
    else:
        print(json.dumps(summary, indent=2))
        print(f"done in {time.time() - start:.0f} s")
    return 0

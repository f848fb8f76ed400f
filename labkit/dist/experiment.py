"""The lab 07 experiment: one model, the same global batches, one process vs N ranks (lab 07 §1, §6, §10).

Single-process training, DDP and FSDP2 must see the same data for their losses to be compared,
so the experiment's pieces live in one place that the notebook, the torchrun scripts, the CLI and
the tests share:

* `Sizes` / `SIZES`: the model depth, steps, global batch and sequence length of each profile
  (lab 07 §1; lab 12 reuses them);
* `model_config`, `corpus_tokens`, `global_batches`, `rank_slice`, `add_run_args`: the model and
  the seeded data every run draws from, each rank its slice (lab 07 §6, every ``labs/scripts``
  job);
* `train_single`: the one-process reference trajectory (lab 07 §6);
* `load_sharded`: a sharded DCP checkpoint back into one process (lab 07 §10);
* `main`: ``python -m labkit fsdp --nproc 2 --json`` trains the same model in one process and
  under FSDP2 and prints the comparison as one JSON line.
"""
from __future__ import annotations

import functools
from dataclasses import astuple, dataclass
from pathlib import Path

from ..errors import LabkitError
from .launcher import launch

__all__ = ["Sizes", "SIZES", "model_config", "corpus_tokens", "global_batches", "rank_slice", "add_run_args",
           "train_single", "load_sharded", "main"]


# ---------------------------------------------------------------------------
# The experiment shared by the CLI, the notebook and the tests
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """One profile's run sizes; lab-tiny's width (hidden 256). The code path is the same for every profile."""
    layers: int
    steps: int
    batch: int      # GLOBAL batch, split over the ranks
    seq_len: int

    def __iter__(self):  # `layers, steps, batch, seq_len = dist.SIZES[profile]` keeps working
        return iter(astuple(self))


SIZES = {
    "smoke": Sizes(layers=2, steps=3, batch=4, seq_len=32),
    "cpu": Sizes(layers=4, steps=8, batch=8, seq_len=64),
    "full": Sizes(layers=4, steps=20, batch=16, seq_len=128),
}


def model_config(layers: int):
    """lab-tiny's architecture, possibly with fewer layers (random init: the loss then falls visibly)."""
    from .. import models

    return models.config("lab-tiny", num_hidden_layers=layers)


@functools.lru_cache(maxsize=4)
def corpus_tokens(n_docs: int = 200):
    """The first ``n_docs`` general-corpus stories, packed into one token stream."""
    from .. import data, tokenizer, train

    return train.pack_documents(tokenizer.load_tokenizer(), data.load("general")[:n_docs])


def global_batches(seq_len: int, batch: int, seed: int = 0):
    """The seeded stream of global batches that every run (single or sharded) draws from."""
    from .. import train

    return train.random_batches(corpus_tokens(), batch, seq_len, seed=seed)


def rank_slice(batches, rank: int, world: int):
    """Each rank's contiguous slice of every global batch (DP: same global batch, split N ways)."""
    for b in batches:
        n = b["input_ids"].shape[0]
        if n % world:
            raise LabkitError(f"global batch {n} does not split evenly over {world} ranks")
        k = n // world
        yield {key: v[rank * k:(rank + 1) * k] for key, v in b.items()}


def add_run_args(parser):
    """The run arguments every lab 07 torchrun script shares (model depth, steps, global batch, data, seed)."""
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="GLOBAL batch (split over the ranks)")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def train_single(layers: int, steps: int, batch: int, seq_len: int, seed: int = 0, lr: float = 1e-3) -> list[float]:
    """Plain one-process training (the reference trajectory for FSDP/DDP), with the shared loop."""
    from .. import env, models, train

    env.seed_everything(seed)
    model = models.build(model_config(layers), device="cpu", seed=seed)
    cfg = train.TrainConfig(steps=steps, lr=lr, schedule="constant", progress=False)
    return train.train(model, global_batches(seq_len, batch, seed), cfg).loss


def load_sharded(ckpt_dir: str | Path, layers: int):
    """Rebuild ONE process's full model from a sharded `torch.distributed.checkpoint` (safetensors files).

    No process group is needed: DCP's planner reads every rank's file and
    stitches the shards into the full tensors of the state dict we pass in.
    """
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    from .. import models

    if not Path(ckpt_dir).exists():
        raise LabkitError(f"no checkpoint in {ckpt_dir}; run the 'ckpt' part of fsdp_train.py first")
    model = models.build(model_config(layers), device="cpu", seed=None)
    sd = model.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "assuming the intent is to load in a single process": yes
        dcp.load(sd, storage_reader=HuggingFaceStorageReader(str(ckpt_dir)))
    model.load_state_dict(sd)
    return model.eval()


def main(argv: list[str]) -> int:
    from .. import cli, env

    p = cli.parser("fsdp", "train the same model in one process and under FSDP2 (torchrun), compare losses, "
                           "per-rank bytes and communication")
    p.add_argument("--nproc", type=int, default=2, help="ranks (processes) for the FSDP run (default 2)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: by profile)")
    p.add_argument("--timeout", type=float, default=600, help="seconds before the job is killed")
    args = p.parse_args(argv)
    profile = env.check_profile(args.profile)
    layers, steps, batch, seq_len = SIZES[profile]
    if args.steps is not None and args.steps < 1:
        raise LabkitError(f"--steps must be at least 1, got {args.steps}")
    if args.nproc < 1:
        raise LabkitError(f"--nproc must be at least 1 (ranks of the FSDP run), got {args.nproc}")
    if not args.timeout > 0:  # also NaN
        raise LabkitError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    steps = steps if args.steps is None else args.steps
    if batch % args.nproc:
        divisors = ", ".join(str(d) for d in range(1, batch + 1) if batch % d == 0)
        raise LabkitError(f"--nproc {args.nproc} does not divide the global batch {batch} of profile {profile!r}; "
                          f"use one of {divisors}")
    single = train_single(layers, steps, batch, seq_len)
    res = launch("fsdp_train.py", args.nproc,
                 ["--layers", layers, "--steps", steps, "--batch", batch, "--seq-len", seq_len, "--only", "fsdp,tp"],
                 timeout_s=args.timeout, echo=not args.json)
    r0 = res[0]["fsdp"]
    out = {
        "profile": profile, "nproc": args.nproc, "steps": steps, "global_batch": batch, "seq_len": seq_len,
        "n_params": r0["n_params"], "full_param_bytes": r0["full_param_bytes"],
        "per_rank_param_bytes": [r["fsdp"]["param_bytes"] for r in res],
        "per_rank_grad_bytes": [r["fsdp"]["grad_bytes"] for r in res],
        "per_rank_optimizer_bytes": [r["fsdp"]["optimizer_bytes"] for r in res],
        "comm_bytes_per_step": r0["comm_bytes_per_step"],
        "comm_bytes_by_kind": r0["comm_by_kind"],
        "expected_comm_bytes_per_step": r0["expected_comm_bytes_per_step"],
        "loss_single": single, "loss_fsdp": r0["loss"],
        "max_loss_diff": max(abs(a - b) for a, b in zip(single, r0["loss"])),
        "tp_max_abs_diff": res[0]["tp"]["max_abs_diff"],
    }
    if args.json:
        cli.emit_json(out)
    else:
        for k, v in out.items():
            print(f"{k:>30}: {v}")
    return 0

"""Catastrophic forgetting on a GPU: every lab-06 strategy, several seeds, mean and spread (lab 06).

    python -m labkit bench forgetting                        # on a GPU: writes data/results/forgetting_gpu.csv (~5 min, H100)
    python -m labkit bench forgetting --quick --device cpu   # the same code path, a few steps: data/results/local/forgetting_cpu_quick.csv

It runs `labkit.forgetting.run_strategy` -- the code the notebook and
`python -m labkit forgetting` run -- with the ``full`` profile's sizes (longer
runs, bigger batches and eval sets) on the committed ``lab-tiny`` (or on
``LABKIT_MODEL`` if set), for each strategy and each seed, and writes one row
per (strategy, seed) plus one ``seed="mean"`` row per strategy with the mean and
the standard deviation over seeds of each probe (the general-vocabulary loss and
the probability mass outside the general vocabulary included). The base model's
probes are a row with strategy ``base``. ``l2_<lambda>`` is EWC's control: the
same spring to the pretrained weights with every weight equally stiff.
"""
from __future__ import annotations

import statistics
import sys

import torch

from .. import cli, env, forgetting, results
from .. import bench as bench_cli

DEFAULT_STRATEGIES = ("full_ft", "replay_1_10", "replay_1_5", "replay_1_1", "lr_0.0002", "lr_0.0006",
                      "ewc_100000", "ewc_1000000", "ewc_10000000", "l2_100000", "l2_1000000", "l2_10000000",
                      "lora", "lora_adapters", "curriculum", "sft_chat")
METRICS = forgetting.PROBE_KEYS


def run(strategies=DEFAULT_STRATEGIES, seeds=(0, 1, 2), device: str = "cuda", quick: bool = False,
        steps: int | None = None) -> list[dict]:
    dev = torch.device(device)
    if dev.type == "cuda":
        env.require_cuda("the forgetting benchmark")
    if quick:
        strategies, seeds = ("full_ft", "replay_1_5", "ewc", "lora"), (0, 1)
        lab = forgetting.setup(profile="smoke", device=dev, steps=steps or 2, eval_windows=4, n_facts=10,
                               n_sft=4, fisher_windows=2, curve_every=0)
    else:
        lab = forgetting.setup(profile="full", device=dev, steps=steps)
    rows = [{"strategy": "base", "seed": "", "steps": 0, "lr": "", **_metrics(lab.base_probes)}]
    print(rows[-1], flush=True)
    for name in strategies:
        per_seed = []
        for seed in seeds:
            r = forgetting.run_strategy(name, lab, seed=seed, curve_every=0)
            per_seed.append(r)
            rows.append({"strategy": name, "seed": seed, "steps": r["steps"], "lr": r["lr"], **_metrics(r),
                         "trainable": r["trainable"], "seconds": r["seconds"]})
            print(rows[-1], flush=True)
        summary = {"strategy": name, "seed": "mean", "steps": per_seed[0]["steps"], "lr": per_seed[0]["lr"]}
        for k in METRICS:
            values = [r[k] for r in per_seed if k in r]
            if values:
                summary[k] = round(statistics.fmean(values), 5)
                summary[k + "_std"] = round(statistics.stdev(values), 5) if len(values) > 1 else 0.0
        rows.append(summary)
        print(summary, flush=True)
    return rows


def _metrics(r: dict) -> dict:
    return {k: round(r[k], 5) for k in METRICS if k in r}


def main(argv=None) -> int:
    p = bench_cli.parser("forgetting", __doc__.splitlines()[0])
    p.add_argument("--out", default=None,
                   help="CSV to write (default: data/results/forgetting_gpu.csv on a full GPU run, else "
                        "data/results/local/forgetting_<device>[_quick].csv)")
    p.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: the full profile's)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="4 strategies, 2 seeds, 2 steps: checks the code path")
    args = bench_cli.parse(p, argv)
    path = results.bench_csv_path("forgetting", device=args.device, quick=args.quick, out=args.out)  # a bad --out stops here, before measuring
    for name in args.strategies:
        forgetting.parse_strategy(name)
    rows = run(args.strategies, seeds=args.seeds, device=args.device, quick=args.quick, steps=args.steps)
    written = results.write_bench_csv("forgetting", rows, device=args.device, quick=args.quick, out=path)
    bench_cli.emit(args, "forgetting", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

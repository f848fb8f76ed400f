"""Is bf16 autocast worth it on *this* CPU? One full fine-tuning step per precision.

    python -m labkit bench cpu_precision                      # smollm2-135m, 4 x 128 tokens (~5 min on 2 cores)
    python -m labkit bench cpu_precision --model lab-tiny     # the lab model (seconds)
    python -m labkit bench cpu_precision --quick              # a toy model: checks the code path

On a GPU, bf16 autocast is the default choice (tensor cores; lab 02 measures
7.5x on an H100). On a CPU it depends on the chip and on torch's kernels
(``torch.autocast("cpu", dtype=torch.bfloat16)`` can be faster or far slower
than fp32; the committed run is ``data/results/cpu_precision_cpu.csv``). So the
labs pick CPU precisions per model by measurement, and this script is the
measurement: the real weights (`labkit.models.load`), real text from the
general corpus, AdamW, ``--warmup`` untimed steps, then the median of
``--steps`` timed steps for each of fp32 and bf16-mixed (autocast).

Output: ``data/results/local/cpu_precision_cpu.csv`` (git-ignored; a CPU
measurement is not a GPU file), or ``--out``.
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from .. import cli, data, models, results, train
from .. import bench as bench_cli
from ..errors import LabkitError

PRECISIONS = ("fp32", "bf16-mixed")


def step_times(model, batch: dict, precision: str, steps: int, warmup: int) -> list[float]:
    """Seconds of each full AdamW step (forward, backward, update) under ``precision``, warm-up steps
    included (first); the caller separates them."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with train.autocast("cpu", precision):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str]) -> int:
    p = bench_cli.parser("cpu_precision", "CPU step time of full fine-tuning, fp32 vs bf16 autocast.", cpu_sizes=True)
    p.add_argument("--model", default=models.SMOLLM2, help="a pretrained model name (default smollm2-135m)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=2, help="timed steps per precision")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a toy model, 1 step: tests the code path")
    p.add_argument("--out", default=None, help="CSV to write (default data/results/local/cpu_precision_cpu.csv)")
    args = bench_cli.parse(p, argv, cpu_sizes=True)
    if min(args.batch_size, args.seq_len, args.steps) < 1 or args.warmup < 0:
        raise LabkitError("--batch-size, --seq-len and --steps must be at least 1, --warmup at least 0")
    path = results.bench_csv_path("cpu_precision", device="cpu", quick=args.quick, out=args.out)
    threads = torch.get_num_threads()
    if args.quick:
        from ..tokenizer import load_tokenizer

        tok = load_tokenizer()
        cfg = models.config("lab-tiny", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
        model, name, args.steps, args.warmup = models.build(cfg, device="cpu"), "lab-tiny (toy, random)", 1, 0
    else:
        model, tok = models.load(args.model)
        name = args.model
    tokens = train.pack_documents(tok, data.load("general", "test"))
    batch = next(train.random_batches(tokens, args.batch_size, args.seq_len, seed=0, device="cpu"))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    rows = []
    for precision in PRECISIONS:
        model.load_state_dict(initial)  # same weights for each precision
        all_times = step_times(model, batch, precision, args.steps, args.warmup)
        times = all_times[args.warmup:]
        rows.append({"model": name, "precision": precision, "batch_size": args.batch_size, "seq_len": args.seq_len,
                     "threads": threads, "median_step_s": round(statistics.median(times), 3),
                     "min_step_s": round(min(times), 3), "max_step_s": round(max(times), 3),
                     "first_step_s": round(all_times[0], 3), "steps_timed": len(times)})
        print(f"{name}  {precision:<11} {rows[-1]['median_step_s']:8.3f} s per step, median of {len(times)} "
              f"(range {rows[-1]['min_step_s']:.3f}-{rows[-1]['max_step_s']:.3f}; first step "
              f"{rows[-1]['first_step_s']:.3f} s; {args.batch_size} x {args.seq_len} tokens, {threads} threads)",
              flush=True)
    ratio = rows[1]["median_step_s"] / rows[0]["median_step_s"]
    for row in rows:
        row["vs_fp32"] = round(row["median_step_s"] / rows[0]["median_step_s"], 2)
    print(f"bf16 autocast / fp32 step time: {ratio:.2f}x")
    written = results.write_bench_csv("cpu_precision", rows, device="cpu", quick=args.quick, out=path)
    bench_cli.emit(args, "cpu_precision", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

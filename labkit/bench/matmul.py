"""Dense matmul throughput on this GPU vs its spec sheet (lab 00).

    python -m labkit.bench.matmul --out data/results/matmul_gpu.csv
"""
from __future__ import annotations

import argparse

import torch

from .. import env, results

FORMATS = {  # name -> (dtype, allow_tf32)
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}


def run(sizes=(1024, 2048, 4096, 8192), repeats: int = 20) -> list[dict]:
    env.require_cuda("the matmul benchmark")
    spec = env.gpu_spec()
    rows = []
    for name, (dtype, tf32) in FORMATS.items():
        for n in sizes:
            tflops = env.matmul_tflops(dtype, n=n, repeats=repeats, allow_tf32=tf32)
            peak = spec.peak(name) if spec else None
            rows.append({"format": name, "n": n, "tflops": round(tflops, 1),
                         "peak_tflops": peak, "fraction_of_peak": round(tflops / peak, 3) if peak else None})
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(results.RESULTS_DIR / "matmul_gpu.csv"))
    args = p.parse_args(argv)
    results.write_csv(args.out, run())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Dense matmul throughput on this GPU vs its spec sheet (lab 00).

    python -m labkit bench matmul            # on a GPU: writes data/results/matmul_gpu.csv
    python -m labkit bench matmul --quick    # on a GPU, seconds: writes data/results/local/matmul_cuda_quick.csv

Tensor-core throughput is a GPU measurement: there is no CPU mode (``--device cpu``
stops with one line; lab 00 plots the committed GPU run instead).
"""
from __future__ import annotations

import sys

import torch

from .. import cli, env, results
from .. import bench as bench_cli
from ..errors import LabkitError

FORMATS = {  # name -> (dtype, allow_tf32)
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}
SIZES = (1024, 2048, 4096, 8192)
QUICK = dict(sizes=(1024,), repeats=3)


def run(sizes=SIZES, repeats: int = 20, device: str = "cuda") -> list[dict]:
    env.require_cuda("the matmul benchmark")
    spec = env.gpu_spec()
    rows = []
    for name, (dtype, tf32) in FORMATS.items():
        for n in sizes:
            tflops = env.matmul_tflops(dtype, n=n, repeats=repeats, dev=device, allow_tf32=tf32)
            peak = spec.peak(name) if spec else None
            rows.append({"format": name, "n": n, "tflops": round(tflops, 1),
                         "peak_tflops": peak, "fraction_of_peak": round(tflops / peak, 3) if peak else None})
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = bench_cli.parser("matmul", __doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="CSV to write (default data/results/matmul_gpu.csv on a full "
                                                "GPU run; data/results/local/ with --quick)")
    p.add_argument("--device", default="cuda", help="cuda (the only device this benchmark measures)")
    p.add_argument("--quick", action="store_true", help="one size, 3 repeats: checks the code path")
    args = bench_cli.parse(p, argv)
    if torch.device(args.device).type != "cuda":
        raise LabkitError("the matmul benchmark measures a GPU's tensor cores and has no CPU mode; run it on a GPU "
                          "machine, or see the committed run in data/results/matmul_gpu.csv (lab 00 plots it)")
    path = results.bench_csv_path("matmul", device=args.device, quick=args.quick, out=args.out)  # a bad --out stops here, before measuring
    rows = run(**(QUICK if args.quick else {}), device=args.device)
    written = results.write_bench_csv("matmul", rows, device=args.device, quick=args.quick, out=path)
    bench_cli.emit(args, "matmul", written)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))

"""Scripts that measure on a real GPU and write ``data/results/*_gpu.csv``.

Each is runnable as ``python3 -m labkit.bench.<name> [--out PATH] [--quick] [--device cpu]``;
``--device cpu --quick`` runs the same code path on tiny models without a GPU (matmul has no
CPU mode). Only a full run on CUDA writes the committed ``data/results/<name>_gpu.csv``; a CPU
or ``--quick`` run writes the git-ignored ``data/results/local/<name>_<device>[_quick].csv``
(or ``--out``, which may then not be named ``*_gpu.csv``) and says so -- see
`labkit.results.write_bench_csv`. Errors are one line and exit code 2, as in ``python -m labkit``.
"""

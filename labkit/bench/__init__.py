"""Scripts that measure on a real GPU and write ``data/results/*.csv``.

Each is runnable as ``python3 -m labkit.bench.<name> [--out PATH] [--quick] [--device cpu]``;
``--device cpu --quick`` runs the same code path on tiny models without a GPU.
"""

"""Distributed training from a notebook: torchrun jobs, FSDP measurements, ZeRO arithmetic (lab 07).

One module per role, every name re-exported here, so ``from labkit import dist; dist.launch(...)``
and ``from labkit import dist as ld`` in ``labs/scripts/`` read the same as ever:

* `launcher` -- **launching** (lab 07 §3): `launch(script, nproc)` runs ``torchrun --standalone
  --nproc-per-node N script`` as a child process, streams rank 0's output live, collects one
  JSON result per rank, turns a failed rank into ONE line and kills the whole process group on
  failure, timeout or Ctrl-C. Inside a script, `init_worker()` joins the job and
  `write_result(obj)` reports.
* `comm` -- **measuring** (lab 07 §6-8): `local_bytes()` counts what a rank really holds,
  `CommCounter` the bytes of the collectives FSDP2, DDP and tensor parallelism issue;
  `reduce_scatter_sim` / `ring_allreduce_sim` simulate the collectives in one process and
  `ring_wire_bytes` gives a ring's bytes on the wire; `comm_volume()` / `comm_time()` are the
  calculator's bytes and seconds per step on a link (§13).
* `zero` -- **ZeRO-3 by hand** (lab 07 §4-5): `shard_layout` / `flat_shard` / `unit_views`,
  `gather_full` and `zero3_step`, proven equal to ``fully_shard`` by
  ``labs/scripts/zero3_train.py``; and `zero_memory()` (bytes per GPU for ZeRO stages 0-3).
* `tp` -- **splitting the model** (lab 07 §11-12): Megatron's column/row-parallel layers and
  `bubble_fraction()` for pipeline parallelism.
* `experiment` -- **the experiment** shared by the CLI, the notebook, the scripts and the tests
  (`SIZES`, the seeded batches, `train_single`, `load_sharded`) and ``python -m labkit fsdp
  --nproc 2 --json``, which trains the same model in one process and under FSDP2 and prints the
  comparison as one JSON line.

Multi-GPU scaling numbers in the lab come from the calculator: one GPU (or a laptop) cannot
measure them.
"""
from .comm import (LINKS, CommCounter, comm_time, comm_volume, count_ddp, local_bytes, optimizer_bytes,
                   reduce_scatter_sim, ring_allreduce_sim, ring_wire_bytes)
from .experiment import (SIZES, Sizes, add_run_args, corpus_tokens, global_batches, load_sharded, main,
                         model_config, rank_slice, train_single)
from .launcher import (LAST_LOG, OUT_ENV, REPO_ROOT, SCRIPTS_DIR, TIMEOUT_ENV, Worker, backend_for, free_port,
                     init_worker, kill_job, launch, save_functions, script_module, worker_main, worker_pids,
                     write_result)
from .tp import ColumnParallelLinear, RowParallelLinear, bubble_fraction, tp_mlp_forward
from .zero import flat_shard, gather_full, shard_layout, tiny_lm, unit_views, zero3_step, zero_memory, zero_parts

__all__ = [  # launching (launcher.py)
           "REPO_ROOT", "SCRIPTS_DIR", "OUT_ENV", "TIMEOUT_ENV", "LAST_LOG", "free_port", "backend_for", "launch",
           "kill_job", "worker_pids", "Worker", "init_worker", "write_result", "worker_main", "script_module",
           "save_functions",
           # measuring and the communication calculator (comm.py)
           "local_bytes", "optimizer_bytes", "CommCounter", "count_ddp", "reduce_scatter_sim", "ring_allreduce_sim",
           "ring_wire_bytes", "comm_volume", "LINKS", "comm_time",
           # ZeRO-3 by hand and ZeRO memory (zero.py)
           "shard_layout", "flat_shard", "unit_views", "gather_full", "zero3_step", "tiny_lm", "zero_parts",
           "zero_memory",
           # tensor and pipeline parallelism (tp.py)
           "ColumnParallelLinear", "RowParallelLinear", "tp_mlp_forward", "bubble_fraction",
           # the experiment and the CLI (experiment.py)
           "Sizes", "SIZES", "model_config", "corpus_tokens", "global_batches", "rank_slice", "add_run_args",
           "train_single", "load_sharded", "main"]

"""Distributed training from a notebook: torchrun jobs, FSDP measurements, ZeRO arithmetic (lab 07).

Three parts, one idea each:

* **Launching** -- `launch(script, nproc)` runs ``torchrun --standalone
  --nproc-per-node N script`` as a child process, streams rank 0's output live,
  collects one JSON result per rank, and turns a failed rank into ONE line
  (`LabkitError: rank 1 failed: ValueError: ...`). The whole process group is
  killed on failure, timeout or Ctrl-C, so no worker outlives the cell.
  Inside a script, `init_worker()` joins the job (gloo on CPU, nccl on CUDA,
  a short collective timeout so nothing hangs) and `write_result(obj)` reports.
* **Measuring** -- `local_bytes()` counts what a rank really holds (a DTensor
  counts its local shard, `to_local()`), `CommCounter` counts the bytes of the
  collectives FSDP2, DDP and tensor parallelism actually issue.
* **ZeRO-3 by hand** -- `shard_layout` / `flat_shard` / `unit_views` (a unit's parameters as
  one padded flat vector, one equal slice per rank), `gather_full` and `zero3_step` (all-gather,
  run, free; all-gather, re-run, reduce-scatter), proven equal to ``fully_shard`` by
  ``labs/scripts/zero3_train.py``; `reduce_scatter_sim` / `ring_allreduce_sim` simulate the
  collectives in one process and `ring_wire_bytes` gives a ring's bytes on the wire.
* **The calculator** -- `zero_memory()` (bytes per GPU for ZeRO stages 0-3),
  `comm_volume()` / `comm_time()` (bytes and seconds per step on a link) and
  `bubble_fraction()` for pipeline parallelism. Multi-GPU scaling numbers in
  the lab come from here: one GPU (or a laptop) cannot measure them.

``python -m labkit fsdp --nproc 2 --json`` trains the same model in one process
and under FSDP2 and prints the comparison as one JSON line.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .errors import LabkitError

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "labs" / "scripts"
OUT_ENV = "LABKIT_DIST_OUT"      # the folder every rank writes its result (and its error) into
TIMEOUT_ENV = "LABKIT_DIST_TIMEOUT"  # seconds a collective may wait before it fails
LAST_LOG = Path(tempfile.gettempdir()) / "labkit_dist_last.log"


# ---------------------------------------------------------------------------
# Launching torchrun from a notebook
# ---------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: str | None = None) -> str:
    """nccl for CUDA GPUs, gloo for CPU (gloo runs everywhere, nccl only on NVIDIA GPUs)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "nccl" if str(device).startswith("cuda") else "gloo"


def launch(script: str | Path, nproc: int = 2, args: list[str] | tuple = (), *, timeout_s: float = 600,
           collective_timeout_s: float = 60, echo: bool = True, env: dict | None = None) -> list[dict]:
    """Run ``torchrun --standalone --nproc-per-node nproc script args`` and return every rank's result.

    * ``script``: a path, or a name in ``labs/scripts/`` (``"fsdp_train.py"``).
    * rank 0's stdout is printed live (``echo``); every rank's stderr goes to
      ``LAST_LOG`` (read it when something fails).
    * each rank calls `write_result(dict)`; the list returned is ordered by rank.
    * a rank that raises ends the job: `LabkitError` names the rank and its last
      error line. On a timeout or Ctrl-C the whole process group is killed.
    """
    script = Path(script)
    if not script.is_absolute() and not script.exists():
        script = SCRIPTS_DIR / script
    if not script.exists():
        raise LabkitError(f"no script {script}; scripts live in {SCRIPTS_DIR}")
    if not isinstance(nproc, int) or nproc < 1:
        raise LabkitError(f"nproc must be a positive integer, got {nproc!r}")
    with tempfile.TemporaryDirectory(prefix="labkit_dist_") as out_dir:
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env[OUT_ENV] = out_dir
        child_env[TIMEOUT_ENV] = str(collective_timeout_s)
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
        child_env.setdefault("OMP_NUM_THREADS", "1")
        child_env["PYTHONUNBUFFERED"] = "1"
        # --standalone: a single-node rendezvous on a port the OS picks (free by construction);
        # we also pin MASTER_PORT to a free port for backends that read it.
        child_env["MASTER_PORT"] = str(free_port())
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "--max-restarts=0", "--local-ranks-filter=0", str(script), *map(str, args)]
        rc, tail = _run_streaming(cmd, child_env, timeout_s, echo, Path(out_dir))
        results, errors = _collect(Path(out_dir), nproc)
        if errors or len(results) < nproc:
            _raise_failure(rc, errors, results, nproc, tail)
        if rc != 0:  # every rank reported its result, then something failed while shutting down
            print(f"note: torchrun exited with code {rc} after every rank had written its result "
                  f"(a failure while the process group shut down); the results are kept (log: {LAST_LOG})")
        return [results[r] for r in range(nproc)]


def _run_streaming(cmd, env, timeout_s, echo, out_dir: Path) -> tuple[int, deque]:
    """Popen in its own process group; stream stdout; kill the group on timeout/interrupt."""
    log = LAST_LOG.open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                            start_new_session=True, cwd=str(REPO_ROOT))
    tail: deque = deque(maxlen=40)

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if echo:
                print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_job(proc, out_dir)
            raise LabkitError(f"the torchrun job ran past {timeout_s:.0f} s and was killed; "
                              f"pass a larger timeout_s or a smaller profile (log: {LAST_LOG})") from None
        except KeyboardInterrupt:
            kill_job(proc, out_dir)
            raise
        if rc != 0:  # a failed rank: torchrun stops the others; make sure nothing is left
            kill_job(proc, out_dir)
        reader.join(timeout=5)
        return rc, tail
    finally:
        log.close()


def kill_job(proc: subprocess.Popen, out_dir: Path | None = None, grace_s: float = 3.0) -> None:
    """SIGTERM the job's process group (torchrun and its workers), then SIGKILL what is left.

    Workers also record their pid in ``out_dir`` (`init_worker`), so a worker
    that somehow left the group is still found and killed.
    """
    pids = worker_pids(out_dir) if out_dir else []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM and not any(_alive(p) for p in pids):
            break


def worker_pids(out_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in Path(out_dir).glob("rank*.pid") if p.read_text().strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (dead, not yet reaped) is not running
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _collect(out_dir: Path, nproc: int) -> tuple[dict, dict]:
    results, errors = {}, {}
    for r in range(nproc):
        res, err = out_dir / f"rank{r}.json", out_dir / f"rank{r}.error"
        if res.exists():
            results[r] = json.loads(res.read_text())
        if err.exists():
            errors[r] = err.read_text().strip()
    return results, errors


def _raise_failure(rc, errors, results, nproc, tail) -> None:
    if errors:
        rank = min(errors)
        raise LabkitError(f"rank {rank} failed: {errors[rank]} (all output: {LAST_LOG})")
    missing = [r for r in range(nproc) if r not in results]
    last = _last_error_line(LAST_LOG) or (tail[-1] if tail else "no output")
    raise LabkitError(f"torchrun exited with code {rc}; rank(s) {', '.join(map(str, missing))} reported no result; "
                      f"last error line: {last} (all output: {LAST_LOG})")


def _last_error_line(path: Path) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        s = line.strip()
        if s and ("Error" in s or "Exception" in s) and not s.startswith(("File ", "raise ", "torch.distributed.elastic")):
            return s
    return None


# ---------------------------------------------------------------------------
# Inside a worker script
# ---------------------------------------------------------------------------
@dataclass
class Worker:
    rank: int
    world_size: int
    device: "object"   # torch.device
    backend: str


def init_worker(timeout_s: float | None = None) -> Worker:
    """Join the torchrun job: pick the backend, set a short collective timeout, record our pid.

    The timeout matters: a rank that dies mid-step would otherwise leave the
    others waiting in a collective forever (the default is 10-30 minutes).
    """
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise LabkitError("init_worker() runs inside a torchrun job; start the script with labkit.dist.launch()")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    out = os.environ.get(OUT_ENV)
    if out:
        (Path(out) / f"rank{rank}.pid").write_text(str(os.getpid()))
    timeout_s = float(timeout_s or os.environ.get(TIMEOUT_ENV, 60))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    backend = backend_for(device.type)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                            **({"device_id": device} if backend == "nccl" else {}))
    return Worker(rank, world, device, backend)


def write_result(obj: dict) -> None:
    """Write this rank's result as JSON into the launcher's folder (or print it when run by hand)."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))
    out = os.environ.get(OUT_ENV)
    from .cli import to_jsonable

    text = json.dumps(obj, default=to_jsonable)
    if out:
        (Path(out) / f"rank{rank}.json").write_text(text)
    else:
        print(text)


def worker_main(fn) -> None:
    """Run ``fn()`` in a worker: on any exception write its one-line summary for the launcher, exit 1."""
    import torch.distributed as dist

    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 -- report everything, including SystemExit from argparse
        rank = int(os.environ.get("RANK", 0))
        out = os.environ.get(OUT_ENV)
        if out and not isinstance(exc, KeyboardInterrupt):
            (Path(out) / f"rank{rank}.error").write_text(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip())
        raise
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 -- the work and its result are done; a peer that already
                pass           # closed its gloo socket must not turn a finished rank into a failure


# ---------------------------------------------------------------------------
# Measuring what a rank holds and what it sends
# ---------------------------------------------------------------------------
def local_bytes(tensors) -> int:
    """Bytes this rank really stores: a DTensor counts only its local shard (`to_local()`)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def optimizer_bytes(optimizer) -> int:
    """Bytes of an optimizer's state tensors on this rank (AdamW: exp_avg, exp_avg_sq, step)."""
    import torch

    return local_bytes(v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor))


class CommCounter:
    """Count the bytes of the collectives issued while active, by kind.

    FSDP2 calls ``torch.distributed.all_gather_single`` / ``reduce_scatter_single``
    (older releases ``all_gather_into_tensor`` / ``reduce_scatter_tensor``),
    tensor parallelism and gradient clipping ``all_reduce``; we wrap those
    module functions, so every call made through ``torch.distributed.X`` is
    seen. DDP issues its all-reduces from C++ unless a communication hook
    routes them through Python (`count_ddp`).

    Convention (the one the ZeRO paper's 2Ψ / 3Ψ use): an all-gather or
    reduce-scatter moves the FULL tensor's bytes, an all-reduce twice its bytes
    (a reduce-scatter plus an all-gather): the "logical volume". ``wire`` holds what a rank
    really sends in a ring, (N-1)/N of that (`ring_wire_bytes`): a 2-rank all-reduce of Ψ bytes
    sends Ψ per rank, not 2Ψ.
    """

    _NAMES = {"all_gather_single": "all_gather", "all_gather_into_tensor": "all_gather",
              "reduce_scatter_single": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter",
              "all_reduce": "all_reduce"}

    def __init__(self):
        self.bytes = {"all_gather": 0, "reduce_scatter": 0, "all_reduce": 0}
        self.wire = {k: 0.0 for k in self.bytes}   # bytes this rank sends in a ring (`ring_wire_bytes`)
        self.calls = {k: 0 for k in self.bytes}
        self._saved = {}

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def wire_total(self) -> float:
        return sum(self.wire.values())

    def add(self, kind: str, n_bytes: int, world: int = 1) -> None:
        """Count one collective: ``n_bytes`` in the logical convention, and its ring wire bytes."""
        self.bytes[kind] += int(n_bytes)
        tensor = n_bytes / 2 if kind == "all_reduce" else n_bytes
        self.wire[kind] += ring_wire_bytes(kind, tensor, world)
        self.calls[kind] += 1

    def reset(self) -> None:
        for k in self.bytes:
            self.bytes[k] = 0
            self.wire[k] = 0.0
            self.calls[k] = 0

    def __enter__(self):
        import torch.distributed as dist

        for name, kind in self._NAMES.items():
            fn = getattr(dist, name, None)
            if fn is None:
                continue
            self._saved[name] = fn
            setattr(dist, name, self._wrap(fn, name, kind))
        return self

    def __exit__(self, *exc):
        import torch.distributed as dist

        for name, fn in self._saved.items():
            setattr(dist, name, fn)
        self._saved.clear()

    def _wrap(self, fn, name, kind):
        def counted(*args, **kwargs):
            if kind == "all_gather":      # (output, input): the full gathered tensor
                t = kwargs.get("output_tensor", args[0] if args else None)
                n = t.numel() * t.element_size()
            elif kind == "reduce_scatter":  # (output, input): the full tensor being reduced
                t = kwargs.get("input", kwargs.get("input_tensor", args[1] if len(args) > 1 else None))
                n = t.numel() * t.element_size()
            else:                          # all_reduce(tensor): reduce-scatter + all-gather
                t = kwargs.get("tensor", args[0] if args else None)
                n = 2 * t.numel() * t.element_size()
            pos = {"all_gather": 2, "reduce_scatter": 3, "all_reduce": 2}[kind]
            group = kwargs.get("group", args[pos] if len(args) > pos else None)
            import torch.distributed as dist

            group = group if isinstance(group, dist.ProcessGroup) else None
            self.add(kind, n, dist.get_world_size(group) if dist.is_initialized() else 1)
            return fn(*args, **kwargs)

        counted.__wrapped__ = fn
        return counted


def count_ddp(ddp_model) -> None:
    """Route DDP's gradient all-reduce through Python so `CommCounter` sees it.

    DDP normally calls the C++ process group directly; registering its own
    default all-reduce hook (same maths: sum, then divide by N) makes every
    bucket go through ``torch.distributed.all_reduce``.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    ddp_model.register_comm_hook(None, default_hooks.allreduce_hook)


def load_sharded(ckpt_dir: str | Path, layers: int):
    """Rebuild ONE process's full model from a sharded `torch.distributed.checkpoint` (safetensors files).

    No process group is needed: DCP's planner reads every rank's file and
    stitches the shards into the full tensors of the state dict we pass in.
    """
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    from . import models

    if not Path(ckpt_dir).exists():
        raise LabkitError(f"no checkpoint in {ckpt_dir}; run the 'ckpt' part of fsdp_train.py first")
    model = models.build(model_config(layers), device="cpu", seed=None)
    sd = model.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "assuming the intent is to load in a single process": yes
        dcp.load(sd, storage_reader=HuggingFaceStorageReader(str(ckpt_dir)))
    model.load_state_dict(sd)
    return model.eval()


# ---------------------------------------------------------------------------
# The calculator: ZeRO memory, communication, pipeline bubble
# ---------------------------------------------------------------------------
def zero_parts(n_params: float, n_gpus: int, stage: int, *, param_bytes: float = 2, grad_bytes: float = 2,
               optimizer_bytes: float = 12) -> dict:
    """Bytes per GPU of parameters, gradients and optimizer states under ZeRO stage 0-3.

    Mixed-precision Adam keeps per parameter: ``param_bytes`` (2: bf16/fp16
    weights), ``grad_bytes`` (2) and K = ``optimizer_bytes`` (12: fp32 master
    copy + two fp32 moments). With Ψ parameters on N GPUs (ZeRO paper, Rajbhandari et al. 2020):

    ======  =====================================  ==========================
    stage   what is sharded                        bytes per GPU
    ======  =====================================  ==========================
    0 (DDP) nothing                                (2 + 2 + K) Ψ
    1       optimizer states                       2Ψ + 2Ψ + KΨ/N
    2       + gradients                            2Ψ + (2 + K)Ψ/N
    3       + parameters (= FSDP full shard)       (2 + 2 + K)Ψ/N
    ======  =====================================  ==========================

    Pure fp32 training (what the lab measures on CPU) is param 4, grad 4, K=8.
    """
    if stage not in (0, 1, 2, 3):
        raise LabkitError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
    if n_gpus < 1 or n_params < 0:
        raise LabkitError("n_gpus must be at least 1 and n_params non-negative")
    p, g, o = param_bytes * n_params, grad_bytes * n_params, optimizer_bytes * n_params
    return {"params": p / n_gpus if stage >= 3 else p,
            "grads": g / n_gpus if stage >= 2 else g,
            "optimizer": o / n_gpus if stage >= 1 else o}


def zero_memory(n_params: float, n_gpus: int, stage: int, *, param_bytes: float = 2, grad_bytes: float = 2,
                optimizer_bytes: float = 12) -> float:
    """Bytes per GPU of model states (no activations) under ZeRO ``stage``; see `zero_parts` for the formula."""
    return sum(zero_parts(n_params, n_gpus, stage, param_bytes=param_bytes, grad_bytes=grad_bytes,
                          optimizer_bytes=optimizer_bytes).values())


def comm_volume(n_params: float, strategy: str = "zero3", *, bytes_per_elem: float = 2, n_gpus: int | None = None) -> float:
    """Bytes each GPU moves per training step (textbook volumes, ZeRO paper §7).

    * ``ddp`` / ``zero1`` / ``zero2``: 2Ψ -- one all-reduce of the gradients
      (= reduce-scatter Ψ + all-gather Ψ; ZeRO-1/2 do exactly those two halves);
    * ``zero3`` / ``fsdp``: 3Ψ -- all-gather the parameters in forward AND again
      in backward, reduce-scatter the gradients;
    * ``fsdp-no-reshard`` (``reshard_after_forward=False``): 2Ψ, the backward
      all-gather is skipped because forward kept the full parameters.

    Elements times ``bytes_per_elem`` (2 for bf16). With ``n_gpus`` the ring
    factor (N-1)/N is applied (what each GPU actually sends); without it, the
    large-N limit that the textbook numbers quote.
    """
    factor = {"ddp": 2, "zero1": 2, "zero2": 2, "zero3": 3, "fsdp": 3, "fsdp-no-reshard": 2}
    if strategy not in factor:
        raise LabkitError(f"unknown strategy {strategy!r}; use one of {', '.join(factor)}")
    ring = (n_gpus - 1) / n_gpus if n_gpus else 1.0
    return factor[strategy] * n_params * bytes_per_elem * ring


# Link bandwidths in BYTES per second, one direction (vendor figures).
LINKS = {
    "10GbE": 10e9 / 8,                  # 10 Gbit/s Ethernet
    "100GbE": 100e9 / 8,
    "InfiniBand NDR 400Gb/s": 400e9 / 8,  # one 400 Gbit/s HCA
    "PCIe 5.0 x16": 64e9,
    "NVLink 4 (H100)": 450e9,           # 900 GB/s total = 450 GB/s each way
}


def comm_time(n_bytes: float, bandwidth: float | str | None = None, *, gbit_per_s: float | None = None,
              gbyte_per_s: float | None = None) -> float:
    """Seconds to move ``n_bytes`` over a link (pure bandwidth: no latency, no overlap with compute).

    Give the bandwidth ONE way: ``bandwidth`` in **bytes per second** (or a name
    from `LINKS`, e.g. ``"10GbE"``), or ``gbit_per_s=`` (network units: 10 for
    10 GbE, 400 for NDR InfiniBand), or ``gbyte_per_s=`` (GB/s, 1e9 bytes).
    """
    given = [v is not None for v in (bandwidth, gbit_per_s, gbyte_per_s)]
    if sum(given) != 1:
        raise LabkitError("give the bandwidth exactly one way: bandwidth (bytes/s or a LINKS name), "
                          "gbit_per_s= or gbyte_per_s=")
    if isinstance(bandwidth, str):
        if bandwidth not in LINKS:
            raise LabkitError(f"unknown link {bandwidth!r}; known: {', '.join(LINKS)}")
        bytes_per_s = LINKS[bandwidth]
    elif bandwidth is not None:
        bytes_per_s = float(bandwidth)
    elif gbit_per_s is not None:
        bytes_per_s = gbit_per_s * 1e9 / 8
    else:
        bytes_per_s = gbyte_per_s * 1e9
    if bytes_per_s <= 0:
        raise LabkitError("bandwidth must be positive")
    return n_bytes / bytes_per_s


def bubble_fraction(stages: int, micro_batches: int) -> float:
    """Idle fraction of a GPipe / 1F1B pipeline: (p - 1) / (m + p - 1) for p stages, m micro-batches."""
    if stages < 1 or micro_batches < 1:
        raise LabkitError("stages and micro_batches must be at least 1")
    return (stages - 1) / (micro_batches + stages - 1)


# ---------------------------------------------------------------------------
# The experiment shared by the CLI, the notebook and the tests
# ---------------------------------------------------------------------------
SIZES = {  # profile -> (layers, steps, global batch, seq_len); lab-tiny's width (hidden 256)
    "smoke": (2, 3, 4, 32),
    "cpu": (4, 8, 8, 64),
    "full": (4, 20, 16, 128),
}


def model_config(layers: int):
    """lab-tiny's architecture, possibly with fewer layers (random init: the loss then falls visibly)."""
    from . import models

    return models.config("lab-tiny", num_hidden_layers=layers)


@functools.lru_cache(maxsize=4)
def corpus_tokens(n_docs: int = 200):
    """The first ``n_docs`` general-corpus stories, packed into one token stream."""
    from . import data, tokenizer, train

    return train.pack_documents(tokenizer.load_tokenizer(), data.load("general")[:n_docs])


def global_batches(seq_len: int, batch: int, seed: int = 0):
    """The seeded stream of global batches that every run (single or sharded) draws from."""
    from . import train

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
    from . import env, models, train

    env.seed_everything(seed)
    model = models.build(model_config(layers), device="cpu", seed=seed)
    cfg = train.TrainConfig(steps=steps, lr=lr, schedule="constant", progress=False)
    return train.train(model, global_batches(seq_len, batch, seed), cfg).loss


def main(argv: list[str]) -> int:
    from . import cli, env

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


# ---------------------------------------------------------------------------
# Tensor parallelism from scratch (Megatron-LM's two layers)
# ---------------------------------------------------------------------------
class ColumnParallelLinear:
    """Rank r keeps rows [r*k, (r+1)*k) of W (k = out/N): y_r = x W_r^T is its slice of the output.

    No communication: every rank has the whole input x and produces a slice of
    the output features -- exactly what the next, row-parallel layer wants.
    """

    def __init__(self, weight, rank: int, world: int):
        out = weight.shape[0]
        if out % world:
            raise LabkitError(f"{out} output features do not split over {world} ranks")
        k = out // world
        self.weight = weight[rank * k:(rank + 1) * k].detach().clone()

    def __call__(self, x):
        return x @ self.weight.T


class RowParallelLinear:
    """Rank r keeps columns [r*k, (r+1)*k) of W: x_r W_r^T is a partial sum; one all-reduce adds them."""

    def __init__(self, weight, rank: int, world: int):
        inp = weight.shape[1]
        if inp % world:
            raise LabkitError(f"{inp} input features do not split over {world} ranks")
        k = inp // world
        self.weight = weight[:, rank * k:(rank + 1) * k].detach().clone()

    def __call__(self, x_slice, reduce: bool = True):
        import torch.distributed as dist

        y = x_slice @ self.weight.T
        if reduce:
            dist.all_reduce(y)  # the ONE collective of a TP MLP's forward
        return y


def tp_mlp_forward(mlp, x, rank: int, world: int):
    """A Llama MLP, down(silu(gate x) * up x), split over ranks: gate/up column-, down row-parallel."""
    import torch.nn.functional as F

    gate = ColumnParallelLinear(mlp.gate_proj.weight, rank, world)
    up = ColumnParallelLinear(mlp.up_proj.weight, rank, world)
    down = RowParallelLinear(mlp.down_proj.weight, rank, world)
    return down(F.silu(gate(x)) * up(x))


# ---------------------------------------------------------------------------
# ZeRO-3 by hand (lab 07 §4): flat shards, all-gather, reduce-scatter, the ring
# ---------------------------------------------------------------------------
def shard_layout(numel: int, world: int) -> tuple[int, int]:
    """(padded numel, shard numel) of a flat parameter of ``numel`` elements over ``world`` ranks.

    ZeRO-3 / FSDP1 concatenate a unit's parameters into ONE flat vector and pad it with zeros to a
    multiple of the world size, so every rank holds an equal slice and ``all_gather_into_tensor``
    (which needs equal inputs) can rebuild it. Taught in lab 07 §4."""
    if not isinstance(numel, int) or numel < 0 or not isinstance(world, int) or world < 1:
        raise LabkitError(f"shard_layout needs numel >= 0 and world >= 1 (integers), got {numel!r}, {world!r}")
    shard = -(-numel // world)
    return shard * world, shard


def flat_shard(params, rank: int, world: int):
    """This rank's slice of the zero-padded concatenation of ``params`` (a unit's flat parameter)."""
    import torch

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    padded, shard = shard_layout(flat.numel(), world)
    flat = torch.nn.functional.pad(flat, (0, padded - flat.numel()))
    return flat[rank * shard:(rank + 1) * shard].clone()


def unit_views(full, unit) -> dict:
    """{parameter name: view of ``full``} -- the gathered flat vector seen as ``unit``'s parameters."""
    views, offset = {}, 0
    for name, p in unit.named_parameters():
        views[name] = full[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    return views


def gather_full(shard, dtype=None):
    """All-gather every rank's shard into the full flat vector (cast to ``dtype`` first: bf16 halves it)."""
    import torch.distributed as dist

    src = shard.detach() if dtype is None else shard.detach().to(dtype)
    full = src.new_empty(src.numel() * dist.get_world_size())
    dist.all_gather_into_tensor(full, src)
    return full


def zero3_step(units, shards, optimizer, x, y, param_dtype=None, reduce_dtype=None):
    """One ZeRO-3 training step by hand; returns this rank's loss (lab 07 §4).

    ``units`` run in order (the last gives logits); ``shards[i]`` is this rank's flat slice of unit
    i (a leaf the optimizer steps). Forward: all-gather a unit, run it, free it -- only unit inputs
    are kept. Backward, last unit first: all-gather again, recompute the unit with grad, reduce-scatter
    its gradient (mean over ranks) into the shard's ``.grad``. 2 all-gathers + 1 reduce-scatter = 3Ψ.
    ``param_dtype``/``reduce_dtype`` play FSDP2's MixedPrecisionPolicy (gather and compute in bf16,
    reduce in fp32)."""
    import torch
    import torch.distributed as dist
    from torch.func import functional_call

    world = dist.get_world_size()
    inputs = [x]
    with torch.no_grad():
        for unit, shard in zip(units, shards):
            inputs.append(functional_call(unit, unit_views(gather_full(shard, param_dtype), unit), (inputs[-1],)))
    logits = inputs.pop().requires_grad_()
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    loss.backward()
    grad_out = logits.grad
    for unit, shard, inp in reversed(list(zip(units, shards, inputs))):
        full = gather_full(shard, param_dtype).requires_grad_()
        inp = inp.detach().requires_grad_(inp.is_floating_point())
        with torch.enable_grad():
            out = functional_call(unit, unit_views(full, unit), (inp,))
            wrt = (full, inp) if inp.requires_grad else (full,)
            grads = torch.autograd.grad(out, wrt, grad_out)
        g_full = grads[0].to(reduce_dtype or shard.dtype)
        g_shard = g_full.new_empty(shard.numel())
        dist.reduce_scatter_tensor(g_shard, g_full)
        shard.grad = (g_shard / world).to(shard.dtype)
        grad_out = grads[1] if len(grads) > 1 else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def reduce_scatter_sim(per_rank: list) -> list:
    """Reduce-scatter simulated in one process: rank r ends with chunk r of the SUM of every rank's tensor.

    The inputs are flat tensors of equal length, divisible by the number of ranks (pad first:
    `shard_layout`). What `torch.distributed.reduce_scatter_tensor` returns on each rank."""
    import torch

    world = len(per_rank)
    if world < 1 or any(t.numel() != per_rank[0].numel() for t in per_rank) or per_rank[0].numel() % world:
        raise LabkitError("reduce_scatter_sim needs equal-length flat tensors whose length the rank count divides")
    return list(torch.stack([t.reshape(-1) for t in per_rank]).sum(0).chunk(world))


def ring_allreduce_sim(per_rank: list) -> tuple[list, list[int]]:
    """A ring all-reduce simulated in one process: (every rank's summed tensor, bytes each rank SENT).

    The tensor is cut into N chunks; in N-1 reduce-scatter steps rank r sends one chunk to rank r+1,
    which adds it; in N-1 all-gather steps the finished chunks travel round the ring. Each rank
    sends 2(N-1) chunks = 2(N-1)/N of the tensor: on 2 ranks Ψ bytes, not 2Ψ (lab 07 §8)."""
    world = len(per_rank)
    if world < 1 or any(t.numel() != per_rank[0].numel() for t in per_rank) or per_rank[0].numel() % world:
        raise LabkitError("ring_allreduce_sim needs equal-length flat tensors whose length the rank count divides")
    chunks = [list(t.reshape(-1).clone().chunk(world)) for t in per_rank]
    sent = [0] * world
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(world - 1):
            # rank r sends chunk (r - step) (reduce-scatter) or (r + 1 - step) (all-gather) to rank r + 1
            msgs = []
            for r in range(world):
                c = (r - step) % world if phase == "reduce-scatter" else (r + 1 - step) % world
                msgs.append((r, c, chunks[r][c].clone()))
                sent[r] += chunks[r][c].numel() * chunks[r][c].element_size()
            for r, c, payload in msgs:
                dst = (r + 1) % world
                chunks[dst][c] = chunks[dst][c] + payload if phase == "reduce-scatter" else payload
    import torch

    return [torch.cat(c).view_as(per_rank[0]) for c in chunks], sent


def ring_wire_bytes(kind: str, tensor_bytes: float, world: int) -> float:
    """Bytes ONE rank sends on the wire for a ring collective on a ``tensor_bytes`` full tensor.

    all-gather / reduce-scatter: (N-1)/N of the full tensor; all-reduce: 2(N-1)/N of it. The
    "logical volume" `CommCounter` and the ZeRO paper use is the full tensor (x2 for an
    all-reduce), i.e. the large-N limit of these (lab 07 §8)."""
    if kind not in ("all_gather", "reduce_scatter", "all_reduce"):
        raise LabkitError(f"kind must be all_gather, reduce_scatter or all_reduce, got {kind!r}")
    if not isinstance(world, int) or world < 1:
        raise LabkitError(f"world must be a positive integer, got {world!r}")
    return (2 if kind == "all_reduce" else 1) * tensor_bytes * (world - 1) / world


def tiny_lm(vocab: int = 2048, width: int = 64, hidden: int = 256, layers: int = 2, seed: int = 0):
    """A small LM as a list of units (nn.Sequential): embedding, residual MLP blocks, norm + head.

    Every unit takes one tensor and returns one, so the hand-written ZeRO-3 step can run the units
    in order (`zero3_step`) and FSDP2 can shard each one (lab 07 §4)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.up, self.down = nn.LayerNorm(width), nn.Linear(width, hidden), nn.Linear(hidden, width)

        def forward(self, x):
            return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))

    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(vocab, width), *[Block() for _ in range(layers)],
                         nn.Sequential(nn.LayerNorm(width), nn.Linear(width, vocab)))


def script_module(name: str):
    """Import a script of ``labs/scripts`` as a module, so a notebook can show its functions by object
    (``labkit.show(script_module("fsdp_train").shard)``) instead of slicing its text."""
    import importlib.util

    path = SCRIPTS_DIR / (name if name.endswith(".py") else name + ".py")
    if not path.exists():
        raise LabkitError(f"no script {path.name} in {SCRIPTS_DIR}")
    spec = importlib.util.spec_from_file_location(f"labs_scripts_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_functions(path: str | Path, *functions) -> Path:
    """Write ``functions``' source (e.g. the notebook's own ZeRO-3 step) into a module a torchrun
    script can import (``--impl path``), after the imports they may use (math, torch, torch.distributed as dist or tdist, functional_call)."""
    import inspect
    import textwrap

    parts = ["import math\nimport torch\nimport torch.distributed as dist\nimport torch.distributed as tdist\n"
             "from torch.func import functional_call\n"]
    for fn in functions:
        try:
            parts.append(textwrap.dedent(inspect.getsource(fn)))
        except (TypeError, OSError) as exc:
            raise LabkitError(f"cannot read the source of {fn!r} ({exc}); define it in a cell or a file") from None
    path = Path(path)
    path.write_text("\n\n".join(parts))
    return path

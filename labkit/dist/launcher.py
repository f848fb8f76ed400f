"""Launching torchrun jobs from a notebook, and what a worker script calls inside one (lab 07 §3).

A notebook cannot run ``torchrun`` in its own process, so `launch` runs it as a child process:
rank 0's output streams into the cell, every rank writes one JSON result, a failed rank becomes
ONE line (`LabkitError: rank 1 failed: ValueError: ...`), and the whole process group is killed
on failure, timeout or Ctrl-C, so no worker outlives the cell. Lab 07 §3 shows `launch` and
`init_worker`; every torchrun job of labs 07 and 12 goes through here.

* the launcher: `launch`, `kill_job`, `free_port`, `backend_for` (built in lab 07 §3);
* inside a script: `init_worker` joins the job (gloo on CPU, nccl on CUDA, a short collective
  timeout so nothing hangs), `write_result` reports, `worker_main` turns an exception into the
  one line the launcher reads (lab 07 §3, used by every script in ``labs/scripts/``);
* notebook <-> script: `script_module` imports a script so a cell shows its functions by object
  (lab 07 §5-6, lab 12), `save_functions` writes the notebook's own ZeRO-3 step into a module a
  script imports with ``--impl`` (lab 07 §5).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ..errors import LabkitError

__all__ = ["REPO_ROOT", "SCRIPTS_DIR", "OUT_ENV", "TIMEOUT_ENV", "LAST_LOG", "free_port", "backend_for", "launch",
           "kill_job", "worker_pids", "Worker", "init_worker", "write_result", "worker_main", "script_module",
           "save_functions"]

REPO_ROOT = Path(__file__).resolve().parents[2]
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
    from ..cli import to_jsonable

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
# A notebook and its scripts
# ---------------------------------------------------------------------------
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

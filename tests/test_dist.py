"""labkit.dist: the ZeRO/communication/bubble calculator against hand computations, and real
2-rank torchrun jobs (loss equality with one process, 1/N shards, TP, the failure path)."""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from labkit import dist
from labkit.errors import LabkitError

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- calculator
def test_zero_memory_matches_the_zero_paper_figure():
    # ZeRO paper, Figure 1: 7.5B parameters, 64 GPUs, K = 12 -> 120, 31.4, 16.6, 1.9 GB per GPU
    psi, n = 7.5e9, 64
    assert dist.zero_memory(psi, n, 0) == pytest.approx(16 * psi)
    assert dist.zero_memory(psi, n, 1) == pytest.approx(2 * psi + 2 * psi + 12 * psi / n)
    assert dist.zero_memory(psi, n, 2) == pytest.approx(2 * psi + 14 * psi / n)
    assert dist.zero_memory(psi, n, 3) == pytest.approx(16 * psi / n)
    assert [round(dist.zero_memory(psi, n, s) / 1e9, 1) for s in range(4)] == [120.0, 31.4, 16.6, 1.9]


def test_zero_memory_dtype_options_and_errors():
    # pure fp32 Adam: 4 + 4 + 8 bytes per parameter; stage 3 on 2 ranks halves all of it
    parts = dist.zero_parts(1000, 2, 3, param_bytes=4, grad_bytes=4, optimizer_bytes=8)
    assert parts == {"params": 2000, "grads": 2000, "optimizer": 4000}
    assert dist.zero_parts(1000, 4, 1)["params"] == 2000 and dist.zero_parts(1000, 4, 1)["optimizer"] == 3000
    with pytest.raises(LabkitError):
        dist.zero_memory(1e9, 8, 4)
    with pytest.raises(LabkitError):
        dist.zero_memory(1e9, 0, 3)


def test_the_65b_zero3_example():
    # 3 x 65e9 elements at 1 byte each (the seeds' count) = 195 GB; at 10 Gbit/s: 195e9 * 8 / 10e9 = 156 s
    volume = dist.comm_volume(65e9, "zero3", bytes_per_elem=1)
    assert volume == pytest.approx(195e9)
    assert dist.comm_time(volume, gbit_per_s=10) == pytest.approx(156.0)
    assert dist.comm_time(volume, "10GbE") == pytest.approx(156.0)
    assert dist.comm_time(volume, 10e9 / 8) == pytest.approx(156.0)          # bytes per second
    assert dist.comm_time(2 * volume, gbit_per_s=400) == pytest.approx(7.8)  # bf16 on 400 Gb/s InfiniBand
    assert dist.comm_time(1e9, gbyte_per_s=450) == pytest.approx(1 / 450)
    # the ring factor: each of 8 GPUs sends 7/8 of the textbook volume
    assert dist.comm_volume(1e9, "ddp", bytes_per_elem=2, n_gpus=8) == pytest.approx(2 * 2e9 * 7 / 8)
    with pytest.raises(LabkitError):
        dist.comm_time(1e9, 1e9, gbit_per_s=10)
    with pytest.raises(LabkitError):
        dist.comm_time(1e9, "carrier pigeon")


def test_bubble_fraction():
    assert dist.bubble_fraction(4, 4) == pytest.approx(3 / 7)
    assert dist.bubble_fraction(8, 32) == pytest.approx(7 / 39)
    assert dist.bubble_fraction(1, 5) == 0.0
    assert dist.bubble_fraction(4, 1000) < 0.003
    with pytest.raises(LabkitError):
        dist.bubble_fraction(0, 4)


def test_rank_slices_rebuild_the_global_batch():
    batches = [{"input_ids": torch.arange(8).view(4, 2), "labels": torch.arange(8).view(4, 2)}]
    parts = [next(dist.rank_slice(iter(batches), r, 2))["input_ids"] for r in range(2)]
    assert torch.equal(torch.cat(parts), batches[0]["input_ids"])
    with pytest.raises(LabkitError):
        next(dist.rank_slice(iter(batches), 0, 3))


def test_local_bytes_of_plain_tensors():
    assert dist.local_bytes([torch.zeros(10), torch.zeros(3, dtype=torch.bfloat16), None]) == 46


# --------------------------------------------------------------------------- real torchrun jobs
def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_cli_fsdp_equals_one_process_and_halves_every_rank():
    """One real job: `python -m labkit fsdp --nproc 2 --profile smoke --json` (2 gloo ranks)."""
    out = subprocess.run([sys.executable, "-m", "labkit", "fsdp", "--nproc", "2", "--profile", "smoke", "--json",
                          "--steps", "2"], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("nproc", "full_param_bytes", "per_rank_param_bytes", "per_rank_optimizer_bytes",
                "comm_bytes_per_step", "expected_comm_bytes_per_step", "loss_single", "loss_fsdp"):
        assert key in res, key
    assert res["nproc"] == 2 and len(res["loss_fsdp"]) == len(res["loss_single"]) == 2
    assert max(abs(a - b) for a, b in zip(res["loss_single"], res["loss_fsdp"])) < 1e-4
    half = res["full_param_bytes"] / 2
    assert all(abs(b - half) / half < 0.10 for b in res["per_rank_param_bytes"])
    assert sum(res["per_rank_param_bytes"]) == res["full_param_bytes"]     # shards partition the model
    # AdamW: two fp32 moments per local element (+ a 4-byte step counter per tensor)
    assert all(abs(o - 2 * half) / (2 * half) < 0.01 for o in res["per_rank_optimizer_bytes"])
    assert res["comm_bytes_per_step"] == pytest.approx(res["expected_comm_bytes_per_step"], rel=0.01)
    assert res["expected_comm_bytes_per_step"] == 3 * res["full_param_bytes"]
    assert res["tp_max_abs_diff"] < 1e-5


def _job_processes(tag: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
                state = (p / "stat").read_text().split(")")[-1].split()[0]
            except OSError:
                continue
            if tag.encode() in cmd and state != "Z":
                pids.append(int(p.name))
    return pids


def test_a_failing_rank_gives_one_line_and_leaves_no_process():
    tag = uuid.uuid4().hex
    with pytest.raises(LabkitError) as info:
        dist.launch("fsdp_train.py", 2, ["--only", "tp", "--layers", "1", "--fail-rank", "1", "--tag", tag],
                    timeout_s=120, collective_timeout_s=20, echo=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("rank 1 failed: RuntimeError: deliberate failure on rank 1"), msg
    assert _job_processes(tag) == []


def test_launch_rejects_bad_input():
    with pytest.raises(LabkitError):
        dist.launch("no_such_script.py", 2)
    with pytest.raises(LabkitError):
        dist.launch("fsdp_train.py", 0)


def test_a_failure_after_every_rank_reported_keeps_the_results(tmp_path, capsys):
    """A rank that fails while shutting down (after writing its result) must not throw away a
    finished job; a rank that never reports still fails the launch with one line."""
    script = tmp_path / "report_then_exit.py"
    script.write_text("import os, sys\nsys.path.insert(0, os.environ['LABKIT_ROOT'])\n"
                      "from labkit import dist as ld\n"
                      "rank = int(os.environ['RANK'])\n"
                      "if rank == 0 or os.environ.get('ALL_REPORT'):\n"
                      "    ld.write_result({'rank': rank})\n"
                      "raise SystemExit(3)\n")
    root = str(Path(__file__).resolve().parent.parent)
    ranks = dist.launch(script, 2, env={"LABKIT_ROOT": root, "ALL_REPORT": "1"}, echo=False)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert "after every rank had written its result" in capsys.readouterr().out
    with pytest.raises(LabkitError, match=r"rank\(s\) (0, )?1 reported no result"):
        dist.launch(script, 2, env={"LABKIT_ROOT": root}, echo=False)

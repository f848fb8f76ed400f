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


# --------------------------------------------------------------------------- ZeRO-3 by hand (lab 07 §4)
def test_shard_layout_and_flat_shard_rebuild_the_parameters():
    assert dist.shard_layout(10, 4) == (12, 3)
    assert dist.shard_layout(8, 4) == (8, 2)
    assert dist.shard_layout(0, 3) == (0, 0)
    assert dist.shard_layout(1, 8) == (8, 1)
    params = [torch.randn(3, 5), torch.randn(7)]             # 22 elements
    for world in (1, 2, 3, 4, 5):
        shards = [dist.flat_shard(params, r, world) for r in range(world)]
        padded, size = dist.shard_layout(22, world)
        assert all(s.numel() == size for s in shards)
        flat = torch.cat([p.reshape(-1) for p in params])
        assert torch.equal(torch.cat(shards)[:22], flat) and not torch.cat(shards)[22:].any()
    unit = torch.nn.Linear(5, 3)
    views = dist.unit_views(torch.cat([dist.flat_shard(list(unit.parameters()), 0, 1)]), unit)
    assert torch.equal(views["weight"], unit.weight) and torch.equal(views["bias"], unit.bias)
    with pytest.raises(LabkitError):
        dist.shard_layout(10, 0)
    with pytest.raises(LabkitError):
        dist.shard_layout(-1, 2)


def test_reduce_scatter_and_ring_simulations_against_torch_sum():
    gen = torch.Generator().manual_seed(0)
    for world in (1, 2, 3, 4, 7):
        per_rank = [torch.randn(5 * world, generator=gen) for _ in range(world)]
        total = torch.stack(per_rank).sum(0)
        rs = dist.reduce_scatter_sim(per_rank)
        assert torch.allclose(torch.cat(rs), total, atol=1e-6) and len(rs) == world
        summed, sent = dist.ring_allreduce_sim(per_rank)
        assert all(torch.allclose(s, total, atol=1e-5) for s in summed)
        assert sent == [2 * (world - 1) * 5 * 4] * world          # 2(N-1) chunks of 5 fp32 elements
        assert sent[0] == dist.ring_wire_bytes("all_reduce", 4 * total.numel(), world)
    _, sent = dist.ring_allreduce_sim([torch.zeros(100), torch.zeros(100)])
    assert sent == [400, 400]                                  # 2 ranks: Ψ bytes each, not 2Ψ
    with pytest.raises(LabkitError):
        dist.reduce_scatter_sim([torch.zeros(3), torch.zeros(3)])
    with pytest.raises(LabkitError):
        dist.ring_allreduce_sim([torch.zeros(4), torch.zeros(6)])


def test_ring_wire_bytes_and_the_counter_keep_both_conventions():
    assert dist.ring_wire_bytes("all_gather", 1000, 4) == 750
    assert dist.ring_wire_bytes("reduce_scatter", 1000, 1) == 0
    assert dist.ring_wire_bytes("all_reduce", 1000, 2) == 1000
    c = dist.CommCounter()
    c.add("all_reduce", 2000, world=2)        # logical: 2 x a 1000-byte tensor
    c.add("all_gather", 1000, world=4)
    assert c.bytes["all_reduce"] == 2000 and c.wire["all_reduce"] == 1000
    assert c.wire["all_gather"] == 750 and c.total == 3000 and c.wire_total == 1750
    with pytest.raises(LabkitError):
        dist.ring_wire_bytes("broadcast", 10, 2)
    with pytest.raises(LabkitError):
        dist.ring_wire_bytes("all_gather", 10, 0)


def test_tiny_lm_units_take_one_tensor():
    model = dist.tiny_lm(vocab=50, width=8, hidden=16, layers=2)
    x = torch.randint(0, 50, (2, 5))
    h = x
    for unit in model:
        h = unit(h)
    assert h.shape == (2, 5, 50) and torch.equal(h, model(x))
    assert torch.equal(dist.tiny_lm(vocab=50, width=8, hidden=16, layers=2)[0].weight, model[0].weight)  # seeded


def test_script_module_and_save_functions(tmp_path):
    mod = dist.script_module("fsdp_train")
    assert callable(mod.shard) and "FSDP2" in mod.shard.__doc__
    with pytest.raises(LabkitError, match="no script"):
        dist.script_module("no_such_script")

    def double(x):
        return torch.as_tensor(x) * 2

    path = dist.save_functions(tmp_path / "m.py", double)
    import importlib.util

    spec = importlib.util.spec_from_file_location("m", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    assert m.double(3).item() == 6
    with pytest.raises(LabkitError):
        dist.save_functions(tmp_path / "n.py", len)


def test_hand_written_zero3_equals_fully_shard_on_two_ranks():
    """zero3_step (fp32 and bf16 compute) vs FSDP2 fully_shard(+MixedPrecisionPolicy): losses,
    first-step gradients, parameters after training, per-rank bytes and collective bytes; and the
    one-process reduce-scatter / ring simulations vs torch's gloo collectives."""
    res = dist.launch("zero3_train.py", 2, ["--layers", "1", "--steps", "2", "--mixed"], echo=False, timeout_s=240)
    for r in res:
        for precision in ("fp32", "bf16"):
            d = r[precision]["diffs"]["labkit vs fsdp2"]
            assert d["loss"] < 1e-6 and d["grads"] < 1e-6 and d["params"] < 1e-6, (precision, d)
            assert r[precision]["labkit"]["bytes"] == r[precision]["fsdp2"]["bytes"]
            assert r[precision]["labkit"]["comm"] == r[precision]["fsdp2"]["comm"]
        full = 4 * sum(p.numel() for p in dist.tiny_lm(layers=1).parameters())
        assert r["fp32"]["labkit"]["bytes"]["params"] * 2 == full
        assert r["fp32"]["labkit"]["comm"]["all_gather"] == 2 * full                  # forward + backward
        assert r["bf16"]["labkit"]["comm"]["all_gather"] == full                      # bf16: half the bytes
        assert r["fp32"]["labkit"]["wire"]["reduce_scatter"] == full / 2              # ring, 2 ranks
        c = r["collectives"]
        assert c["reduce_scatter_vs_sim"] < 1e-6 and c["all_reduce_vs_ring_sim"] < 1e-6
        assert c["ring_sent_bytes"] == c["tensor_bytes"]


def test_dcp_checkpoint_with_adamw_state_resumes_on_four_ranks(tmp_path):
    args = ["--layers", "1", "--steps", "1", "--batch", "4", "--seq-len", "16", "--optim-dir", tmp_path]
    saved = dist.launch("fsdp_train.py", 2, [*args, "--only", "optsave"], echo=False, timeout_s=240)[0]["optsave"]
    loaded = dist.launch("fsdp_train.py", 4, [*args, "--only", "optload"], echo=False, timeout_s=240)[0]["optload"]
    assert loaded["moment_diff"] == 0
    assert max(abs(a - b) for a, b in zip(saved["next"], loaded["next"])) < 1e-4
    assert loaded["adam_bytes_per_rank"] < saved["adam_bytes_per_rank"]

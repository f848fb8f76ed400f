"""labkit.flops against torch's FlopCounterMode on real forward + backward passes, and by hand."""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from labkit import flops, models
from labkit.__main__ import main as labkit_main
from labkit.errors import LabkitError

SHAPES = [  # (hidden, intermediate, layers, heads, kv_heads, vocab, tied)
    (48, 96, 3, 4, 2, 100, True),       # grouped-query attention, tied embeddings
    (64, 160, 2, 4, 4, 77, False),
    (96, 256, 1, 6, 3, 128, False),
]


def _model(shape, attn):
    hidden, inter, layers, heads, kv, vocab, tied = shape
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tied,
                      max_position_embeddings=256, attn_implementation=attn)
    return cfg, LlamaForCausalLM(cfg)


def _counted(model, batch, seq, train=True):
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as counter:
        if train:
            model(ids, labels=ids).loss.backward()
        else:
            with torch.no_grad():
                model(ids)
    return counter.get_total_flops() / (batch * seq)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("seq", [8, 33])
def test_eager_training_step_equals_flop_counter_exactly(shape, seq):
    cfg, model = _model(shape, "eager")
    assert _counted(model, 2, seq) == flops.flops_per_token(cfg, seq, attn_implementation="eager")
    assert _counted(model, 2, seq, train=False) == flops.flops_per_token(cfg, seq, training=False,
                                                                          attn_implementation="eager")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gradient_checkpointing_recompute_equals_flop_counter(shape):
    cfg, model = _model(shape, "eager")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    assert _counted(model, 2, 16) == flops.flops_per_token(cfg, 16, attn_implementation="eager",
                                                           gradient_checkpointing=True)


def test_cpu_sdpa_kernel_is_invisible_to_the_counter():
    # on CPU sdpa runs a flash kernel FlopCounterMode has no formula for: only the weights are counted
    cfg, model = _model(SHAPES[0], "sdpa")
    parts = flops.flops_breakdown(cfg, 16, attn_implementation="sdpa")
    assert _counted(model, 2, 16) == parts["weights"]


def test_six_n_rule_and_attention_term_by_hand():
    cfg = models.config("llama-2-7b")
    n = flops.matmul_params(cfg)
    # 32 layers x (4 x 4096^2 + 3 x 4096 x 11008) + the 32000 x 4096 head; the embedding is not a matmul
    assert n["total"] == 32 * (4 * 4096 ** 2 + 3 * 4096 * 11008) + 32000 * 4096
    assert n["total"] == models.count_params(models.build("llama-2-7b", device="meta")) - 32000 * 4096 - (
        32 * 2 + 1) * 4096                                       # minus the embedding and the RMSNorm weights
    eager = flops.flops_breakdown(cfg, 2048, attn_implementation="eager")
    assert eager["weights"] == 6 * n["total"]
    assert eager["attention"] == 12 * 32 * 4096 * 2048
    causal = flops.flops_breakdown(cfg, 2048, attn_implementation="sdpa")
    assert causal["attention"] == 12 * 32 * 4096 * (2048 + 1) / 2
    assert flops.flops_per_token(cfg, 2048, training=False, attn_implementation="eager") == eager["total"] / 3


def test_mfu_and_step_time_by_hand():
    cfg = models.config("llama-2-7b")
    per_token = flops.flops_per_token(cfg, 2048, attn_implementation="eager")
    # the LLaMA paper's ~3,300 tokens/s/GPU (65B on A100s) style of arithmetic, here for 7B on one H100
    assert flops.mfu(3300, cfg, 2048, 989.4e12) == pytest.approx(3300 * per_token / 989.4e12)
    assert flops.mfu(3300, cfg, 2048, 989.4e12) == flops.mfu(3300.0, "llama-2-7b", 2048, 989.4e12)
    seconds = flops.step_seconds(cfg, 4, 2048, 989.4e12, 0.4)
    assert flops.mfu(4 * 2048 / seconds, cfg, 2048, 989.4e12) == pytest.approx(0.4)
    assert flops.hfu(1000, cfg, 2048, 1e15, gradient_checkpointing=True) > flops.hfu(1000, cfg, 2048, 1e15)


@pytest.mark.parametrize("call, match", [
    (lambda: flops.flops_per_token("llama-2-7b", 0), "seq_len"),
    (lambda: flops.flops_per_token("llama-2-7b", 128, attn_implementation="flash"), "attn_implementation"),
    (lambda: flops.flops_per_token("llama-2-7b", 128, training=False, gradient_checkpointing=True), "training"),
    (lambda: flops.mfu(-1, "llama-2-7b", 128, 1e15), "tokens_per_s"),
    (lambda: flops.mfu(1, "llama-2-7b", 128, 0), "peak_flops"),
    (lambda: flops.step_seconds("llama-2-7b", 1, 128, 1e15, 1.5), "utilisation"),
    (lambda: flops.flops_per_token("no-such-model", 128), "unknown model"),
])
def test_bad_input_is_one_line(call, match):
    with pytest.raises(LabkitError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_cli_json_and_exit_code_2(capsys):
    assert labkit_main(["mfu", "--model", "llama-3.2-1b", "--batch-size", "8", "--seq-len", "2048", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["mfu"] == 0.4 and out["gpu"] == "NVIDIA H100 SXM"
    assert out["tokens_per_s"] == pytest.approx(8 * 2048 / out["step_seconds"])
    assert out["model_flops_per_token"] == flops.flops_per_token("llama-3.2-1b", 2048, attn_implementation="eager")
    assert labkit_main(["mfu", "--model", "llama-3.2-1b", "--batch-size", "8", "--seq-len", "2048",
                        "--gpu", "B300"]) == 2
    assert labkit_main(["mfu", "--model", "llama-3.2-1b", "--batch-size", "8", "--seq-len", "2048",
                        "--mfu", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_profile_steps_counts_matmul_flops_and_times_categories(tmp_path, capfd):
    cfg, model = _model(SHAPES[0], "eager")
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    out = flops.profile_steps(step, 2, trace_path=tmp_path / "trace.json")
    # the profiler counts the same matmuls FlopCounterMode counts (eager attention included) plus the
    # elementwise aten::mul / aten::add it also has formulas for: a little more, never less
    matmuls = 2 * 16 * flops.flops_per_token(cfg, 16, attn_implementation="eager")
    assert matmuls <= out["flops_per_step"] <= 1.03 * matmuls
    assert out["seconds_per_step"]["matmul"] > 0 and out["seconds_per_step"]["optimizer"] > 0
    assert set(out["seconds_per_step"]) == set(flops.CATEGORIES)
    assert (tmp_path / "trace.json").stat().st_size > 1000
    assert "profiler_start" not in capfd.readouterr().err          # kineto's native lines are silenced
    assert flops.op_category("aten::addmm") == "matmul" and flops.op_category("c10d::allreduce_") == "communication"
    with pytest.raises(LabkitError, match="steps"):
        flops.profile_steps(step, 0)

    # every step is one STEP_MARK span: comm_split reads the trace; no collective ran -> no communication
    split = flops.comm_split(tmp_path / "trace.json")
    assert len(split) == 2 and all(s["comm_s"] == 0 and s["compute_s"] == s["step_s"] > 0 for s in split)


def _x(name, ts, dur, tid=1, pid=7):
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "cat": "cpu_op"}


def test_comm_split_counts_nested_and_overlapping_communication_once():
    trace = {"traceEvents": [
        _x(flops.STEP_MARK, 0, 1000), _x(flops.STEP_MARK, 2000, 500),
        _x("FSDP::all_gather (model.layers.0)", 100, 200),        # 100-300 ...
        _x("c10d::_allgather_base_", 150, 100),                   # ... nested: counted once
        _x("FSDP::post_backward_reduce (lm_head)", 250, 150),     # overlaps it: 300-400 is new
        _x("aten::mm", 500, 300),                                 # compute
        _x("gloo:all_gather", 120, 400, tid=2),                   # another thread: in flight, not exposed
        _x("c10d::allreduce_", 1900, 200),                        # straddles the second step's start
        _x("c10d::allreduce_", 2100, 50, pid=8),                  # another process: not this rank's
        {"ph": "M", "name": "thread_name", "pid": 7, "tid": 2},   # metadata: ignored
    ]}
    first, second = flops.comm_split(trace)
    assert first == pytest.approx({"step_s": 1e-3, "comm_s": 300e-6, "compute_s": 700e-6, "comm_share": 0.3,
                                   "in_flight_s": 400e-6})
    assert second["comm_s"] == pytest.approx(100e-6) and second["comm_share"] == pytest.approx(0.2)
    assert flops.comm_split(trace["traceEvents"]) == flops.comm_split(trace)
    for name in ("FSDP::all_gather_copy_out (model.layers.2)", "fsdp::all_gather_copy_in", "gloo:all_reduce",
                 "FSDP::post_backward_reduce", "record_param_comms"):
        assert flops.op_category(name) == "communication", name
    with pytest.raises(LabkitError, match="no 'labkit::step' span"):
        flops.comm_split({"traceEvents": [_x("aten::mm", 0, 10)]})
    with pytest.raises(LabkitError, match="no trace file"):
        flops.comm_split("/no/such/trace.json")


def test_bus_bandwidth_is_nccl_tests_convention():
    # 2 ranks: an all-reduce's bus bandwidth equals its algorithm bandwidth (2(n-1)/n = 1); 8 ranks: 1.75x
    assert flops.bus_bandwidth(1e6, 1e-3, 2) == {"algbw": 1e9, "busbw": 1e9}
    assert flops.bus_bandwidth(1e6, 1e-3, 8)["busbw"] == pytest.approx(1.75e9)
    assert flops.bus_bandwidth(1e6, 1e-3, 4, "all_gather")["busbw"] == pytest.approx(0.75e9)
    for call, match in ((lambda: flops.bus_bandwidth(1e6, 0, 2), "seconds"),
                        (lambda: flops.bus_bandwidth(1e6, 1e-3, 0), "world"),
                        (lambda: flops.bus_bandwidth(1e6, 1e-3, 2, "alltoall"), "unknown collective")):
        with pytest.raises(LabkitError, match=match):
            call()


# ---------------------------------------------------------------------------
# labkit/bench/mfu.py: only its CPU-side pieces can run here
# ---------------------------------------------------------------------------
def test_mfu_bench_parses_points_and_refuses_without_cuda(capsys, tmp_path):
    from labkit import cli
    from labkit.bench import mfu as bench

    assert bench.parse_points("4x2048, 8X1024") == ((4, 2048), (8, 1024))
    for bad in ("4x", "4x2048x2", "0x128", "ax1"):
        with pytest.raises(LabkitError, match="--points"):
            bench.parse_points(bad)
    args = bench.parser().parse_args(["--points", "2x512,1x4096", "--steps", "4", "--quick"])
    assert args.points == ((2, 512), (1, 4096)) and args.steps == 4 and args.quick and args.device == "cuda"
    assert bench.parser().parse_args([]).points == bench.POINTS and bench.parser().parse_args([]).model == "llama-3.2-1b"
    out = tmp_path / "mfu.csv"
    argv = ["--device", "cpu", "--out", str(out)]
    assert cli.run(bench.main, argv) == 2
    if not torch.cuda.is_available():
        assert cli.run(bench.main, ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("error: the MFU benchmark") for line in err) and len(err) == (
        1 if torch.cuda.is_available() else 2)
    assert not out.exists()


def test_mfu_bench_measure_loop_on_cpu_with_cuda_timing_faked(monkeypatch):
    # the timing loop itself, run on CPU: CUDA events replaced by a CPU clock, memory calls by no-ops
    import time as _time

    from labkit.bench import mfu as bench

    class Event:
        def __init__(self, enable_timing=True):
            self.t = None

        def record(self):
            self.t = _time.perf_counter()

        def elapsed_time(self, other):
            return 1e3 * (other.t - self.t)

    for name, value in (("Event", Event), ("synchronize", lambda: None), ("empty_cache", lambda: None),
                        ("reset_peak_memory_stats", lambda: None), ("max_memory_allocated", lambda: 0)):
        monkeypatch.setattr(torch.cuda, name, value)
    real_autocast = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: real_autocast("cpu", dtype=dtype))
    cfg = models.config("lab-tiny", **bench.QUICK_MODEL)
    row = bench.measure(cfg, 2, 16, steps=2, warmup=1, peak_flops=1e12, device="cpu")
    assert row["status"] == "ok" and row["tokens_per_step"] == 32
    assert row["step_ms"] == pytest.approx(row["fwd_ms"] + row["bwd_ms"] + row["opt_ms"], abs=0.05)
    assert row["fwd_share"] + row["bwd_share"] + row["opt_share"] == pytest.approx(1, abs=1e-3)
    assert row["mfu"] == pytest.approx(flops.mfu(row["tokens_per_s"], cfg, 16, 1e12), rel=1e-2)


def test_fsdp_profile_script_splits_each_rank_and_zero3_moves_one_and_a_half_times_the_bytes():
    from labkit import dist

    ranks = dist.launch("fsdp_profile.py", 2, ["--layers", 1, "--steps", 1, "--batch", 2, "--seq-len", 16,
                                               "--repeats", 1, "--iters", 2, "--sizes", 4096], echo=False)
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        arms = r["profile"]
        for arm in ("reshard", "noreshard"):
            (step,) = arms[arm][0]["steps"]
            assert 0 < step["comm_share"] < 1 and step["compute_s"] > 0 and step["in_flight_s"] > 0
        # ZeRO-3 all-gathers in forward and again in backward: 3 psi against 2 psi without resharding
        assert arms["reshard"][0]["comm_bytes_per_step"] == pytest.approx(1.5 * arms["noreshard"][0]["comm_bytes_per_step"])
        assert list(r["allreduce"]) == ["4096"] and len(r["allreduce"]["4096"]) == 1

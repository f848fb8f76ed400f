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

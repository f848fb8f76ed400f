"""Bad input gives ONE line that says what to do -- checked *before* the expensive part runs.

CLI cases run `labkit.__main__.main` in-process: exit code 2, a single ``error: ...`` line on
stderr, no traceback. Where a command would otherwise load a model, train or launch torchrun,
that step is replaced by a sentinel that fails loudly, so each test proves the check comes
first and stays fast.
"""
import math

import pytest
import torch

from labkit import exercises, quant
from labkit.__main__ import main as labkit_main
from labkit.errors import LabkitError


def _one_line_error(capsys, argv, *needles):
    """Run a command that must fail: exit 2, exactly one stderr line starting 'error:'."""
    code = labkit_main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def no_cot_model(monkeypatch):
    """`cot` must validate its arguments before loading a model: loading is an error here."""
    from labkit import prompting

    def refuse(*a, **k):
        raise LabkitError("SENTINEL: the model was loaded before the arguments were checked")

    monkeypatch.setattr(prompting, "load_model", refuse)


# ---------------------------------------------------------------------------
# 1-2. cot: --n, --k, --samples and --out checked before any model loads
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--n", "-99"), ("--n", "0"), ("--k", "-1"), ("--k", "9"),
                                        ("--samples", "0")])
def test_cot_rejects_bad_sizes_before_loading(capsys, no_cot_model, flag, value):
    line = _one_line_error(capsys, ["cot", "--profile", "smoke", flag, value], flag)
    assert "SENTINEL" not in line


def test_cot_rejects_missing_out_directory_before_evaluating(capsys, no_cot_model, tmp_path):
    missing = tmp_path / "missing" / "dir"
    line = _one_line_error(capsys, ["cot", "--profile", "smoke", "--out", str(missing / "x.json")],
                           f"directory {missing} does not exist", "--out")
    assert "SENTINEL" not in line


def test_cot_rejects_out_that_is_a_directory(capsys, no_cot_model, tmp_path):
    line = _one_line_error(capsys, ["cot", "--profile", "smoke", "--out", str(tmp_path)], "--out")
    assert "SENTINEL" not in line


# ---------------------------------------------------------------------------
# 3. fsdp: non-positive sizes rejected before training or launching torchrun
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [(["--steps", "0"], "--steps"), (["--steps", "-3"], "--steps"),
                                         (["--nproc", "0"], "--nproc"), (["--nproc", "-2"], "--nproc"),
                                         (["--timeout", "0"], "--timeout")])
def test_fsdp_rejects_non_positive_sizes_up_front(capsys, monkeypatch, argv, needle):
    from labkit import dist

    def refuse(*a, **k):
        raise LabkitError("SENTINEL: training started before the arguments were checked")

    monkeypatch.setattr(dist, "train_single", refuse)
    monkeypatch.setattr(dist, "launch", refuse)
    line = _one_line_error(capsys, ["fsdp", "--profile", "smoke", *argv], needle)
    assert "SENTINEL" not in line


# ---------------------------------------------------------------------------
# 4. memory: a sequence beyond the context is a warning (still estimated);
#    a LoRA rank above min(in, out) of a targeted layer is an error
# ---------------------------------------------------------------------------
def test_memory_warns_when_seq_len_exceeds_the_context(capsys):
    # lab-tiny was trained with max_position_embeddings=512; the estimate is still computed (exit 0)
    assert labkit_main(["memory", "--model", "lab-tiny", "--seq-len", "1024"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("warning: "), captured.err
    assert "512" in warning[0] and "1024" in warning[0]
    assert "total" in captured.out                   # the table is still printed


def test_memory_estimate_warns_about_seq_len_beyond_context():
    from labkit import memory

    est = memory.estimate("lab-tiny", batch_size=1, seq_len=1024)
    assert len(est.warnings) == 1 and "512" in est.warnings[0] and "max_position_embeddings" in est.warnings[0]
    assert "warning: " in str(est)                   # a notebook sees it in the printed estimate
    assert memory.estimate("lab-tiny", batch_size=1, seq_len=512).warnings == []


def test_memory_rejects_lora_rank_above_the_layer_sizes(capsys):
    # lab-tiny: hidden 256, so q_proj/v_proj are 256 x 256: a rank above 256 adds nothing
    _one_line_error(capsys, ["memory", "--model", "lab-tiny", "--lora-rank", "100000"], "100000", "256")
    # the bound is min(in, out) of each targeted layer: lab-tiny's rank 256 is still allowed
    assert labkit_main(["memory", "--model", "lab-tiny", "--lora-rank", "256"]) == 0


def test_memory_lora_rank_bound_uses_the_smallest_targeted_layer():
    from labkit import memory

    # llama-3-8b: v_proj is 4096 -> 1024 (8 KV heads x 128), so rank 2048 is meaningless there
    with pytest.raises(LabkitError, match="v_proj"):
        memory.estimate("llama-3-8b", batch_size=1, seq_len=8, lora_rank=2048)
    memory.estimate("llama-3-8b", batch_size=1, seq_len=8, lora_rank=2048, lora_targets=("q_proj",))


# ---------------------------------------------------------------------------
# 5. --profile must be a profile, on every command that takes it
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["memory", "--model", "lab-tiny"], ["cot"], ["fsdp"], ["forgetting"]])
def test_bogus_profile_is_rejected(capsys, no_cot_model, argv):
    line = _one_line_error(capsys, [*argv, "--profile", "bogus"], "bogus", "smoke")
    assert "SENTINEL" not in line


# ---------------------------------------------------------------------------
# 6. memory: the models a message lists as known are models memory can estimate
# ---------------------------------------------------------------------------
def test_memory_unknown_model_lists_only_supported_models(capsys):
    line = _one_line_error(capsys, ["memory", "--model", "bogus"], "bogus", "llama-2-7b", "lab-tiny")
    assert "gpt2" not in line and "chatglm" not in line


@pytest.mark.parametrize("name", ["gpt2", "chatglm-6b"])
def test_memory_unsupported_architecture_says_what_to_use(capsys, name):
    _one_line_error(capsys, ["memory", "--model", name], name, "llama-2-7b", "lab-tiny")


def test_every_model_memory_lists_works():
    from labkit import memory

    for name in memory.supported_models():
        assert memory.estimate(name, batch_size=1, seq_len=8).total > 0


# ---------------------------------------------------------------------------
# 7. exercises.check: answers of the wrong type
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("answer", ["65504", " 65504 ", "65,504", "6.5504e4", torch.tensor(65504.0),
                                    torch.tensor([65504.0])])
def test_check_accepts_numbers_written_as_strings_or_tensors(capsys, answer):
    assert exercises.check("00.fp16_max", answer) is True
    assert "correct (65504)" in capsys.readouterr().out


@pytest.mark.parametrize("answer", ["lots", "2^15", "", "1e400", True, [65504], torch.tensor([1.0, 2.0]),
                                    torch.zeros(4, 4), 10**400, 1 + 2j])
def test_check_rejects_non_numbers_with_one_line(answer):
    with pytest.raises(LabkitError, match="00.fp16_max") as err:
        exercises.check("00.fp16_max", answer)
    assert "\n" not in str(err.value) and "number" in str(err.value)


def test_check_wrong_numeric_string_prints_not_yet(capsys):
    assert exercises.check("00.fp16_max", "65000") is False
    assert "not yet (65000)" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# 8. quant: NaN / inf inside a block is an error that says where
# ---------------------------------------------------------------------------
def test_nf4_quantize_rejects_non_finite_values_and_names_the_blocks():
    w = torch.randn(4, 64)
    w[2, 5] = float("nan")
    w[2, 9] = float("inf")
    w[3, 0] = float("-inf")
    with pytest.raises(LabkitError) as err:
        quant.nf4_quantize(w)
    msg = str(err.value)
    assert "\n" not in msg
    assert "3 non-finite" in msg and "blocks 2, 3" in msg and "(2, 5)" in msg
    assert "clean" in msg or "clip" in msg


def test_absmax_and_blockwise_quantize_reject_non_finite_values():
    x = torch.randn(3, 8)
    x[1, 2] = float("nan")
    for fn in (lambda: quant.absmax_quantize(x), lambda: quant.absmax_quantize(x, dim=-1),
               lambda: quant.blockwise_quantize(x), lambda: quant.int8_matmul(x, torch.randn(4, 8))):
        with pytest.raises(LabkitError, match="1 non-finite") as err:
            fn()
        assert "\n" not in str(err.value)
    with pytest.raises(LabkitError, match="row 1"):
        quant.absmax_quantize(x, dim=-1)


def test_linear4bit_from_a_nan_weight_raises():
    lin = torch.nn.Linear(64, 2)
    with torch.no_grad():
        lin.weight[1, 63] = float("nan")
    with pytest.raises(LabkitError, match="block 1"):
        quant.Linear4bit.from_linear(lin)


def test_finite_tensors_still_quantize():
    w = torch.randn(2, 64)
    packed, absmax = quant.nf4_quantize(w)
    assert torch.isfinite(quant.nf4_dequantize(packed, absmax, w.shape)).all()
    assert math.isfinite(float(quant.absmax_quantize(w)[1]))


# ---------------------------------------------------------------------------
# 9. forgetting: a broken LABKIT_MODEL directory is one line, not an OSError traceback
# ---------------------------------------------------------------------------
def _tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                       architectures=["LlamaForCausalLM"])


def test_forgetting_with_a_config_only_model_dir_is_one_line(capsys, monkeypatch, tmp_path):
    _tiny_llama_config().save_pretrained(tmp_path)
    monkeypatch.setenv("LABKIT_MODEL", str(tmp_path))
    _one_line_error(capsys, ["forgetting", "--profile", "smoke", "--strategies", "full_ft"])


def test_forgetting_with_weights_but_no_tokenizer_is_one_line(capsys, monkeypatch, tmp_path):
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(_tiny_llama_config()).save_pretrained(tmp_path)
    monkeypatch.setenv("LABKIT_MODEL", str(tmp_path))
    _one_line_error(capsys, ["forgetting", "--profile", "smoke", "--strategies", "full_ft"], "tokenizer")


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_forgetting_rejects_a_seed_numpy_cannot_take_before_loading(capsys, monkeypatch, seed):
    from labkit import forgetting

    def refuse(*a, **k):
        raise LabkitError("SENTINEL: the model was loaded before the arguments were checked")

    monkeypatch.setattr(forgetting, "setup", refuse)
    line = _one_line_error(capsys, ["forgetting", "--profile", "smoke", "--seed", seed], "--seed")
    assert "SENTINEL" not in line

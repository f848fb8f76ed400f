"""labkit.memory: the estimator against what autograd really saves and what a step really holds (CPU)."""
import contextlib
import copy
import json
import warnings

import pytest
import torch

from labkit import memory, models
from labkit.__main__ import main as labkit_main
from labkit.errors import LabkitError

warnings.filterwarnings("ignore", message=".*use_cache=True.*")

SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4)


def _config(kind: str):
    if kind == "tiny":          # lab-tiny keeps head_dim=64 > hidden/heads: q_proj is 64 -> 256
        return models.config("lab-tiny", **SMALL)
    if kind == "gqa":
        return models.config("lab-tiny", **SMALL, head_dim=16, num_key_value_heads=2)
    if kind == "dropout":
        return models.config("lab-tiny", **SMALL, head_dim=16, attention_dropout=0.1)
    if kind == "qwen":          # q/k/v biases, GQA
        return models.config("qwen2.5-0.5b", **SMALL, num_key_value_heads=2, layer_types=["full_attention"] * 2)
    raise ValueError(kind)


def _model(cfg, attn="sdpa", precision="fp32", ckpt=False, lora=None, targets=("q_proj", "v_proj")):
    torch.manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else None
    model = models.build(copy.deepcopy(cfg), device="cpu", dtype=dtype, attn_implementation=attn).train()
    if ckpt:
        model.gradient_checkpointing_enable()
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora, target_modules=list(targets))).train()
    return model


def _autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()


CASES = [  # kind, attention, precision, checkpointing, LoRA rank, batch, seq
    ("tiny", "sdpa", "fp32", False, None, 2, 32),
    ("tiny", "eager", "fp32", False, None, 2, 32),
    ("tiny", "sdpa", "bf16-mixed", False, None, 2, 48),
    ("tiny", "eager", "bf16-mixed", True, None, 1, 64),
    ("tiny", "sdpa", "bf16", False, 4, 2, 32),
    ("gqa", "sdpa", "fp32", False, None, 3, 40),
    ("gqa", "eager", "bf16-mixed", False, 8, 2, 32),
    ("gqa", "sdpa", "bf16-mixed", True, 8, 2, 32),
    ("qwen", "sdpa", "bf16-mixed", False, None, 2, 32),
    ("qwen", "eager", "fp32", False, 4, 1, 50),
    ("qwen", "sdpa", "bf16", True, None, 2, 32),
    ("dropout", "eager", "fp32", False, None, 2, 32),
]


@pytest.mark.parametrize("kind,attn,precision,ckpt,lora,batch,seq", CASES)
def test_activations_match_what_autograd_saves(kind, attn, precision, ckpt, lora, batch, seq):
    cfg = _config(kind)
    model = _model(cfg, attn, precision, ckpt, lora)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(1))
    with _autocast(precision):
        measured = memory.saved_activation_bytes(model, ids)
    est = memory.estimate(cfg, batch_size=batch, seq_len=seq, precision=precision, attn_implementation=attn,
                          gradient_checkpointing=ckpt, lora_rank=lora)
    assert abs(est.activations / measured - 1) < 0.02, (est.activations, measured)


def test_saved_activation_bytes_skips_parameters_and_counts_storages_once():
    lin = torch.nn.Linear(8, 8, bias=False)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 8)
            self.lin = lin

        def forward(self, ids, labels=None):
            h = self.emb(ids)            # saves only the ids (excluded)
            y = self.lin(h)              # saves h: 2*3*8 fp32 = 192 bytes (the weight is a parameter)
            return y * y                 # saves y twice -- one storage: 192 bytes

    assert memory.saved_activation_bytes(Tiny(), torch.zeros(2, 3, dtype=torch.long)) == 384


def test_live_peak_bytes_hand_computed():
    def step():
        a = torch.ones(1000)                            # 4000 bytes
        view = a.view(10, 100)                          # a view: no new memory
        view.mul_(2)                                    # in place: none either
        b = torch.ones(500, dtype=torch.float64)        # +4000 -> peak 8000
        del a, view, b
        torch.ones(100)                                 # 400, after the peak

    assert memory.live_peak_bytes(step) == 8000


@pytest.mark.parametrize("kind,attn,precision,ckpt,lora", [
    ("gqa", "sdpa", "fp32", False, None),
    ("gqa", "sdpa", "bf16-mixed", True, 8),
    ("qwen", "eager", "bf16", False, None),
])
def test_peak_of_a_training_step_matches_live_tensors(kind, attn, precision, ckpt, lora):
    """The backward/optimizer replay predicts the peak of a real step (CPU: live tensors, for-loop AdamW)."""
    cfg = _config(kind)
    model = _model(cfg, attn, precision, ckpt, lora)
    ids = torch.randint(0, cfg.vocab_size, (2, 64), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "labels": ids}
    opt = memory.make_optimizer(model.parameters(), "adamw")
    memory.training_step(model, batch, opt, precision)           # creates the optimizer states
    opt.zero_grad(set_to_none=True)
    measured = memory.live_peak_bytes(memory.training_step, model, batch, opt, precision)
    est = memory.estimate(cfg, batch_size=2, seq_len=64, precision=precision, attn_implementation=attn,
                          gradient_checkpointing=ckpt, lora_rank=lora, device="cpu")
    above_resident = est.peak_allocated - est.weights - est.optimizer - ids.numel() * 8
    assert abs(above_resident / measured - 1) < 0.03, (est.peak_phase, above_resident, measured)
    assert est.cuda_context == 0 and est.total == est.peak_allocated


@pytest.mark.parametrize("precision,optimizer,per_param", [
    ("fp32", "adamw", 16),          # 4 weights + 4 gradients + 4 m + 4 v
    ("bf16-mixed", "adamw", 16),    # fp32 masters: the same 16
    ("fp16-mixed", "adamw", 16),
    ("bf16", "adamw", 8),           # 2 + 2 + 2 + 2
    ("fp32", "sgd", 8),             # no state
    ("fp32", "sgd-momentum", 12),   # one buffer
])
def test_bytes_per_parameter_rules(precision, optimizer, per_param):
    est = memory.estimate("llama-2-7b", batch_size=1, seq_len=16, precision=precision, optimizer=optimizer)
    n = models.published_params("llama-2-7b")
    assert est.n_params == est.n_trainable == n == 6_738_415_616
    assert est.weights + est.gradients + est.optimizer == per_param * n
    for name in ("weights", "gradients", "optimizer", "activations", "total", "peak_allocated"):
        assert isinstance(getattr(est, name), int)


def test_parameter_count_equals_the_built_model():
    for name in ("lab-small", "llama-3.2-1b", "qwen2.5-0.5b"):
        assert memory.estimate(name, batch_size=1, seq_len=8).n_params == models.count_params(models.build(name))


def test_adamw_8bit_states():
    # tensors of >= 4096 values: 2 uint8 states + an fp32 absmax per 256 values; smaller ones: 8 bytes
    est = memory.estimate("lab-tiny", batch_size=1, seq_len=8, precision="bf16", optimizer="adamw-8bit")
    cfg = models.config("lab-tiny")
    big = cfg.num_hidden_layers * (4 * 256 * 256 + 3 * 256 * 768) + 2 * 2048 * 256
    small = (2 * cfg.num_hidden_layers + 1) * 256
    assert est.optimizer == 2 * big + 2 * 4 * big // 256 + 8 * small


def test_lora_trainable_count_equals_peft():
    cfg = _config("qwen")
    for targets in (("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")):
        model = _model(cfg, lora=8, targets=targets)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        est = memory.estimate(cfg, batch_size=1, seq_len=8, lora_rank=8, lora_targets=targets)
        assert est.n_trainable == trainable
        assert est.gradients == 4 * trainable and est.optimizer == 8 * trainable   # fp32 adapters


def test_nf4_weight_bytes_hand_computed():
    cfg = models.config("lab-tiny", **SMALL, head_dim=16)
    est = memory.estimate(cfg, batch_size=1, seq_len=8, precision="bf16", lora_rank=8, quantization="nf4")
    linear = 2 * (4 * 64 * 64 + 3 * 64 * 160)          # q, k, v, o + gate, up, down, in 2 layers = 94208
    nf4 = linear // 2 + linear // 64 * 4                # 4-bit codes + one fp32 absmax per 64 = 52992
    rest = (512 * 64 * 2 + 5 * 64) * 2                  # embedding, lm_head, norms in bf16 = 131712
    lora = 2 * 2 * (8 * 64 + 64 * 8) * 4                # A and B on q, v in 2 layers, fp32 = 16384
    assert est.weights == nf4 + rest + lora == 201088


def test_qlora_activations_with_bitsandbytes():
    pytest.importorskip("bitsandbytes")
    from labkit.bench.memory import quantize_nf4_
    from peft import LoraConfig, get_peft_model

    cfg = _config("gqa")
    model = models.build(copy.deepcopy(cfg), device="cpu", dtype=torch.bfloat16)
    model = get_peft_model(quantize_nf4_(model), LoraConfig(r=8, target_modules=["q_proj", "v_proj"])).train()
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    measured = memory.saved_activation_bytes(model, ids)
    est = memory.estimate(cfg, batch_size=2, seq_len=32, precision="bf16", lora_rank=8, quantization="nf4")
    assert abs(est.activations / measured - 1) < 0.02


def test_kv_cache_bytes_hand_computed():
    # Llama-3-8B: 32 layers, 8 KV heads (GQA) x 128 dims; Llama-2-7B: 32 KV heads
    assert memory.kv_cache_bytes("llama-3-8b", 1, 8192, "bf16") == 2 * 32 * 1 * 8192 * 8 * 128 * 2 == 2**30
    assert memory.kv_cache_bytes("llama-2-7b", 1, 4096, torch.float16) == 2 * 32 * 4096 * 32 * 128 * 2 == 2**31
    assert memory.kv_cache_bytes("llama-2-7b", 4, 1024, "fp32") == 2 * 32 * 4 * 1024 * 32 * 128 * 4
    with pytest.raises(LabkitError):
        memory.kv_cache_bytes("llama-2-7b", 0, 1024)


def test_checkpointing_and_lora_shrink_memory():
    base = dict(batch_size=1, seq_len=2048, precision="bf16-mixed")
    full = memory.estimate("llama-2-7b", **base)
    ckpt = memory.estimate("llama-2-7b", **base, gradient_checkpointing=True)
    lora = memory.estimate("llama-2-7b", **base, lora_rank=16)
    qlora = memory.estimate("llama-2-7b", batch_size=1, seq_len=2048, precision="bf16", lora_rank=16,
                            quantization="nf4")
    assert ckpt.activations < full.activations / 5
    assert lora.total < full.total / 2 and qlora.total < lora.total / 2
    assert full.total == full.peak_allocated + full.cuda_context
    assert full.peak_allocated >= full.weights + full.optimizer + max(full.activations, full.gradients)


@pytest.mark.parametrize("kwargs", [
    dict(batch_size=0, seq_len=128), dict(batch_size=-1, seq_len=128), dict(batch_size=1, seq_len=0),
    dict(batch_size=1, seq_len=128, precision="fp8"), dict(batch_size=1, seq_len=128, optimizer="lion"),
    dict(batch_size=1, seq_len=128, quantization="nf4"), dict(batch_size=1, seq_len=128, attn_implementation="x"),
    dict(batch_size=1, seq_len=128, lora_rank=8, lora_targets=("wq",)),
    dict(batch_size=1, seq_len=128, optimizer="adamw-8bit", device="cpu"),
    dict(batch_size=1, seq_len=128, precision="fp16-mixed", device="cpu"),
])
def test_impossible_requests_raise_one_line(kwargs):
    with pytest.raises(LabkitError) as err:
        memory.estimate("llama-2-7b", **kwargs)
    assert "\n" not in str(err.value)


def test_unknown_and_unsupported_models_raise():
    with pytest.raises(LabkitError):
        memory.estimate("no-such-model", batch_size=1, seq_len=8)
    with pytest.raises(LabkitError, match="Llama"):
        memory.estimate("gpt2", batch_size=1, seq_len=8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_measure_training_step_needs_cuda():
    model = _model(_config("tiny"))
    with pytest.raises(LabkitError, match="CUDA"):
        memory.measure_training_step(model, torch.zeros(1, 8, dtype=torch.long))


def test_cli_json_last_line(capsys):
    assert labkit_main(["memory", "--model", "llama-3.2-1b", "--batch-size", "2", "--seq-len", "512",
                        "--lora-rank", "8", "--gradient-checkpointing", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    data = json.loads(out[-1])
    est = memory.estimate("llama-3.2-1b", batch_size=2, seq_len=512, lora_rank=8, gradient_checkpointing=True)
    for name in ("weights", "gradients", "optimizer", "activations", "total", "n_params", "n_trainable"):
        assert data[name] == getattr(est, name)
    assert any("activations" in line for line in out[:-1])     # the table came first


@pytest.mark.parametrize("argv", [
    ["memory", "--model", "llama-2-7b", "--batch-size", "0"],
    ["memory", "--model", "nope"],
    ["memory", "--model", "llama-2-7b", "--quantization", "nf4"],
    ["memory", "--model", "llama-2-7b", "--batch-size", "two"],
])
def test_cli_bad_input_exits_2_with_one_line(argv, capsys):
    assert labkit_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and len(captured.err.strip().splitlines()) == 1

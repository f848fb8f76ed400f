"""labkit.lora against peft 0.21 and against values computed by hand."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit import lora, models
from labkit.errors import LabkitError

ATOL = 1e-5


@pytest.fixture
def base(tiny_config):
    return models.build(tiny_config, device="cpu", seed=0).eval()


def _ids(vocab=256, shape=(2, 12), seed=1):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def _randomize_b(model, seed=2):
    """B starts at zero (the update is zero); give it values so the adapter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


def _peft(model, r, alpha, targets):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0))


def _copy_into_peft(ours, peft_model):
    """Copy our A and B into the peft model, module by module."""
    n = 0
    for name, layer in lora.lora_layers(ours).items():
        target = peft_model.base_model.model.get_submodule(name)
        with torch.no_grad():
            target.lora_A["default"].weight.copy_(layer.lora_A)
            target.lora_B["default"].weight.copy_(layer.lora_B)
        n += 1
    return n


# --------------------------------------------------------------------------- the layer
def test_layer_shapes_init_and_frozen_base():
    torch.manual_seed(0)
    lin = nn.Linear(20, 12)
    layer = lora.LoRALinear(lin, r=4, alpha=8)
    assert layer.base is lin and layer.scaling == 2.0
    assert layer.lora_A.shape == (4, 20) and layer.lora_B.shape == (12, 4)
    assert isinstance(layer.lora_A, nn.Parameter) and layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert not lin.weight.requires_grad and not lin.bias.requires_grad
    assert torch.count_nonzero(layer.lora_B) == 0
    # Kaiming-uniform with a=sqrt(5) on a (r, in) tensor: U(-1/sqrt(in), 1/sqrt(in)), like peft
    bound = 1 / math.sqrt(20)
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.8 * bound
    torch.manual_seed(5)
    a = lora.LoRALinear(nn.Linear(20, 12), 4, 8).lora_A
    torch.manual_seed(5)
    nn.Linear(20, 12)
    ref = torch.empty(4, 20)
    nn.init.kaiming_uniform_(ref, a=math.sqrt(5))
    assert torch.equal(a, ref)


def test_forward_is_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    layer = lora.LoRALinear(lin, r=2, alpha=6)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(layer(x), lin(x), rtol=0, atol=0)  # B = 0: exactly the base
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = x @ lin.weight.T + lin.bias + (x @ layer.lora_A.T @ layer.lora_B.T) * 3.0
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=ATOL)
    layer(x).sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None and lin.weight.grad is None


def test_merge_unmerge_roundtrip():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    w0 = lin.weight.detach().clone()
    layer = lora.LoRALinear(lin, r=4, alpha=4)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 16)
    before = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(lin.weight, w0 + layer.lora_B @ layer.lora_A, rtol=0, atol=ATOL)
    torch.testing.assert_close(layer(x), before, rtol=0, atol=ATOL)
    layer.merge()  # a second merge must not add the update twice
    torch.testing.assert_close(layer(x), before, rtol=0, atol=ATOL)
    layer.unmerge()
    torch.testing.assert_close(lin.weight, w0, rtol=0, atol=ATOL)
    torch.testing.assert_close(layer(x), before, rtol=0, atol=ATOL)


# --------------------------------------------------------------------------- against peft
@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), "all-linear"])
def test_outputs_and_counts_equal_peft(base, targets):
    ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, target_modules=targets)
    _randomize_b(ours)
    theirs = _peft(copy.deepcopy(base), 4, 8, list(targets) if isinstance(targets, tuple) else targets)
    assert _copy_into_peft(ours, theirs) == (4 if targets != "all-linear" else 14)
    ids = _ids()
    with torch.no_grad():
        a, b, plain = ours(ids).logits, theirs(ids).logits, base(ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
    assert (a - plain).abs().max() > 1e-3  # the adapter really changes the output
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    total = lambda m: sum(p.numel() for p in m.parameters())
    assert trainable(ours) == trainable(theirs) == lora.lora_param_count(ours)
    assert total(ours) == total(theirs)


def test_trainable_count_by_formula(base):
    model = lora.inject_lora(base, r=8, alpha=16, target_modules=("q_proj", "v_proj"))
    cfg = base.config
    h, q, kv = cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    expected = cfg.num_hidden_layers * 8 * ((h + q) + (h + kv))  # r (d_in + d_out) for q_proj and v_proj
    assert models.count_params(model, trainable_only=True) == expected
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(("lora_A", "lora_B")) for n in names)


def test_chatglm6b_r8_famous_figure():
    model = lora.inject_lora(models.build("chatglm-6b", device="meta"), r=8, alpha=16,
                             target_modules="query_key_value")
    trainable, total = models.count_params(model, trainable_only=True), models.count_params(model)
    assert (trainable, total) == (3_670_016, 6_176_956_416)
    assert f"{100 * trainable / total:.4f}" == "0.0594"


def test_merge_lora_gives_plain_linears_and_same_outputs(base):
    model = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, target_modules="all-linear")
    _randomize_b(model)
    ids = _ids()
    with torch.no_grad():
        unmerged = model(ids).logits
        merged_model = lora.merge_lora(model)
        merged = merged_model(ids).logits
    assert not lora.lora_layers(merged_model)
    assert isinstance(merged_model.model.layers[0].self_attn.q_proj, nn.Linear)
    assert models.count_params(merged_model) == models.count_params(base)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=ATOL)
    # and it agrees with peft's merge_and_unload
    theirs = _peft(copy.deepcopy(base), 4, 8, "all-linear")
    ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, target_modules="all-linear")
    _randomize_b(ours)
    _copy_into_peft(ours, theirs)
    plain, ours = theirs.merge_and_unload(), lora.merge_lora(ours)
    for (name, p), (name2, q) in zip(plain.named_parameters(), ours.named_parameters()):
        assert name == name2
        torch.testing.assert_close(p, q, rtol=0, atol=ATOL)


def test_unload_restores_the_base(base):
    ids = _ids()
    with torch.no_grad():
        before = base(ids).logits
    model = lora.inject_lora(base, r=2, alpha=2)
    _randomize_b(model)
    lora.unload_lora(model)
    assert not lora.lora_layers(model)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)


# --------------------------------------------------------------------------- adapters on disk
def test_labkit_adapter_loads_in_peft(base, tmp_path):
    from peft import PeftModel

    ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=16, target_modules=("q_proj", "k_proj", "v_proj"))
    _randomize_b(ours)
    lora.save_adapter(ours, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, rtol=0, atol=ATOL)
    assert theirs.peft_config["default"].r == 4 and theirs.peft_config["default"].lora_alpha == 16


def test_peft_adapter_loads_in_labkit(base, tmp_path):
    theirs = _peft(copy.deepcopy(base), 8, 4, ["q_proj", "o_proj", "up_proj"])
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    theirs.save_pretrained(tmp_path)
    ours = lora.load_adapter(copy.deepcopy(base), tmp_path)
    assert len(lora.lora_layers(ours)) == 6
    assert all(m.r == 8 and m.scaling == 0.5 for m in lora.lora_layers(ours).values())
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=ATOL)
    assert models.count_params(ours, trainable_only=True) == sum(
        p.numel() for p in theirs.parameters() if p.requires_grad)


def test_rslora_scaling_equals_peft_and_survives_the_adapter_file(base, tmp_path):
    """rsLoRA (alpha / sqrt(r)): same scaling and logits as peft's use_rslora, both ways on disk."""
    from peft import LoraConfig, PeftModel, get_peft_model

    ours = lora.inject_lora(copy.deepcopy(base), r=16, alpha=8, target_modules=("q_proj", "v_proj"), use_rslora=True)
    assert all(m.scaling == 8 / 4 for m in lora.lora_layers(ours).values())
    _randomize_b(ours)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=16, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                            use_rslora=True))
    _copy_into_peft(ours, theirs)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=ATOL)
    lora.save_adapter(ours, tmp_path / "ours")
    in_peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    assert in_peft.peft_config["default"].use_rslora
    theirs.save_pretrained(tmp_path / "peft")
    back = lora.load_adapter(copy.deepcopy(base), tmp_path / "peft")
    assert all(m.use_rslora and m.scaling == 2.0 for m in lora.lora_layers(back).values())
    with torch.no_grad():
        torch.testing.assert_close(in_peft(ids).logits, ours(ids).logits, rtol=0, atol=ATOL)
        torch.testing.assert_close(back(ids).logits, ours(ids).logits, rtol=0, atol=ATOL)


def test_load_adapter_into_a_model_that_has_lora(base, tmp_path):
    """Continue training: loading replaces the weights of existing layers, which stay trainable."""
    a = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8)
    _randomize_b(a)
    lora.save_adapter(a, tmp_path)
    b = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8)
    lora.load_adapter(b, tmp_path)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(b(ids).logits, a(ids).logits, rtol=0, atol=0)
    assert models.count_params(b, trainable_only=True) == lora.lora_param_count(b) > 0


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("r", [0, -1, 2.5, True])
def test_bad_rank_is_one_clear_line(base, r):
    with pytest.raises(LabkitError, match="rank r must be a positive integer") as exc:
        lora.inject_lora(base, r=r, alpha=8)
    assert "\n" not in str(exc.value)
    with pytest.raises(LabkitError):
        lora.LoRALinear(nn.Linear(4, 4), r=r, alpha=1)


def test_unknown_target_is_one_clear_line(base):
    with pytest.raises(LabkitError, match="'qkv' matches no nn.Linear") as exc:
        lora.inject_lora(base, r=4, alpha=8, target_modules=("q_proj", "qkv"))
    assert "\n" not in str(exc.value) and "q_proj" in str(exc.value)  # lists what exists
    assert not lora.lora_layers(base)  # nothing half-injected


def test_other_bad_input(base, tmp_path):
    with pytest.raises(LabkitError, match="alpha"):
        lora.inject_lora(base, r=4, alpha=0)
    with pytest.raises(LabkitError, match="dropout"):
        lora.inject_lora(base, r=4, alpha=8, dropout=1.5)
    with pytest.raises(LabkitError, match="no LoRA layers"):
        lora.save_adapter(base, tmp_path)
    with pytest.raises(LabkitError, match="not a LoRA adapter directory"):
        lora.load_adapter(base, tmp_path)
    with pytest.raises(LabkitError, match="is a LlamaAttention, not an nn.Linear"):
        lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, target_modules=["self_attn"])
    lora.inject_lora(base, r=4, alpha=8)
    with pytest.raises(LabkitError, match="already have LoRA"):
        lora.inject_lora(base, r=4, alpha=8, target_modules=("q_proj",))


# --------------------------------------------------------------------------- SFT batches
def test_instruction_batches_train_on_the_answer_only():
    from labkit.tokenizer import load_tokenizer

    tok = load_tokenizer()
    items = [{"prompt": "What is 2 plus 3?", "response": "2 plus 3 is 5.", "task": "add"},
             {"prompt": "Reverse the words: a b c", "response": "c b a", "task": "reverse"}]
    batch = next(lora.instruction_batches(tok, items, batch_size=2, seed=0))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    answers = set()
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        trained = ids[labels != -100].tolist()
        answers.add(tok.decode(trained))
        assert (labels[mask == 0] == -100).all()
    assert answers == {"2 plus 3 is 5.<|end|>", "c b a<|end|>"}
    evals = lora.instruction_eval_batches(tok, items * 3, batch_size=4)
    assert [b["input_ids"].shape[0] for b in evals] == [4, 2]


# --------------------------------------------------------------------------- the GPU benchmark's code path
def test_bench_quick_runs_on_cpu():
    from labkit.bench import lora as bench

    rows = bench.run(device="cpu", quick=True)
    assert [(r["targets"], r["impl"]) for r in rows] == [("q,v", "peft"), ("q,v", "labkit"),
                                                         ("all-linear", "peft"), ("all-linear", "labkit")]
    for a, b in zip(rows[::2], rows[1::2]):
        assert a["trainable_params"] == b["trainable_params"] > 0
        assert a["tokens_per_s"] > 0 and b["tokens_per_s"] > 0 and a["throughput_vs_peft"] == 1.0


# =========================================================================== peft parity: options and edge cases
def _peft_cfg(**kw):
    from peft import LoraConfig

    kw.setdefault("lora_dropout", 0.0)
    return LoraConfig(**kw)


def _peft_model(model, **kw):
    from peft import get_peft_model

    return get_peft_model(model, _peft_cfg(**kw))


def _peft_wrapped(peft_model) -> list[str]:
    from peft.tuners.lora import LoraLayer

    return sorted(n for n, m in peft_model.base_model.model.named_modules() if isinstance(m, LoraLayer))


def _to_peft(ours, theirs):
    """Copy A, B (and DoRA's magnitude, modules_to_save copies) from labkit into the peft model."""
    with torch.no_grad():
        for name, layer in lora.lora_layers(ours).items():
            t = theirs.base_model.model.get_submodule(name)
            t.lora_A["default"].weight.copy_(layer.lora_A)
            t.lora_B["default"].weight.copy_(layer.lora_B)
            if layer.use_dora:
                t.lora_magnitude_vector["default"].weight.copy_(layer.lora_magnitude_vector)
        for name, saved in lora.saved_modules(ours).items():
            t = theirs.base_model.model.get_submodule(name)
            t.modules_to_save["default"].load_state_dict(saved.trained.state_dict())


def _trainable(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def _state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=128, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(cfg).eval()


# --------------------------------------------------------------------------- item 4: GPT-2's Conv1D
def test_gpt2_all_linear_wraps_conv1d_like_peft(gpt2, tmp_path):
    """peft wraps GPT-2's Conv1D c_attn/c_proj/c_fc (fan_in_fan_out); labkit must too, never 0 trainable."""
    from peft import PeftModel

    ours = lora.inject_lora(copy.deepcopy(gpt2), r=4, alpha=8, target_modules="all-linear")
    theirs = _peft_model(copy.deepcopy(gpt2), r=4, lora_alpha=8, target_modules="all-linear")
    assert sorted(lora.lora_layers(ours)) == _peft_wrapped(theirs)
    assert {n.rpartition(".")[2] for n in lora.lora_layers(ours)} == {"c_attn", "c_proj", "c_fc"}
    assert all(m.fan_in_fan_out for m in lora.lora_layers(ours).values())
    assert _trainable(ours) == _trainable(theirs) == lora.lora_param_count(ours) > 0
    _randomize_b(ours)
    _to_peft(ours, theirs)
    ids = _ids(vocab=128)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=ATOL)
        assert (ours(ids).logits - gpt2(ids).logits).abs().max() > 1e-3
    lora.save_adapter(ours, tmp_path)
    in_peft = PeftModel.from_pretrained(copy.deepcopy(gpt2), tmp_path)
    back = lora.load_adapter(copy.deepcopy(gpt2), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(in_peft(ids).logits, ours(ids).logits, rtol=0, atol=ATOL)
        torch.testing.assert_close(back(ids).logits, ours(ids).logits, rtol=0, atol=0)
    _state_equal(lora.merge_lora(ours), theirs.merge_and_unload())


def test_conv1d_layer_equals_peft_forward_merge_unmerge():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(12, 20)  # d_in 20 -> d_out 12, weight stored 20 x 12
    holder = nn.Module()
    holder.layer = copy.deepcopy(conv)
    peft_layer = _peft_model(holder, r=4, lora_alpha=8, target_modules=["layer"]).base_model.model.layer
    ours = lora.LoRALinear(conv, r=4, alpha=8)
    assert (ours.in_features, ours.out_features) == (20, 12) and ours.delta_weight().shape == conv.weight.shape
    with torch.no_grad():
        ours.lora_B.normal_()
        peft_layer.lora_A["default"].weight.copy_(ours.lora_A)
        peft_layer.lora_B["default"].weight.copy_(ours.lora_B)
        x = torch.randn(3, 5, 20)
        assert torch.equal(ours(x), peft_layer(x))
        ours.merge(), peft_layer.merge()
        assert torch.equal(ours.base.weight, peft_layer.get_base_layer().weight)
        ours.unmerge(), peft_layer.unmerge()
        assert torch.equal(ours.base.weight, peft_layer.get_base_layer().weight)


# --------------------------------------------------------------------------- items 5, 6: 16-bit bases
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("safe_merge", [False, True])
def test_merge_into_16bit_base_is_bit_exact_with_peft(base, dtype, safe_merge):
    ours = lora.inject_lora(copy.deepcopy(base).to(dtype), r=4, alpha=8, target_modules="all-linear")
    assert all(m.lora_A.dtype == torch.float32 for m in lora.lora_layers(ours).values())
    _randomize_b(ours)
    theirs = _peft_model(copy.deepcopy(base).to(dtype), r=4, lora_alpha=8, target_modules="all-linear")
    _to_peft(ours, theirs)
    twice = {n: (m.base.weight + m.delta_weight().to(dtype)).detach() for n, m in lora.lora_layers(ours).items()}
    merged, peft_merged = lora.merge_lora(ours, safe_merge=safe_merge), theirs.merge_and_unload(safe_merge=safe_merge)
    _state_equal(merged, peft_merged)
    # the two-rounding merge (cast the update first) is peft's safe path only: it differs from the default
    differ = sum((merged.get_submodule(n).weight != w).sum().item() for n, w in twice.items())
    assert (differ == 0) if safe_merge else (differ > 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dropout_on_16bit_base_equals_peft(dtype):
    """peft casts the input to the adapter dtype *before* dropout; same seed -> same output, bit for bit."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 48).to(dtype)
    holder = nn.Module()
    holder.layer = copy.deepcopy(lin)
    theirs = _peft_model(holder, r=4, lora_alpha=8, target_modules=["layer"], lora_dropout=0.3).base_model.model.layer
    ours = lora.LoRALinear(lin, r=4, alpha=8, dropout=0.3)
    with torch.no_grad():
        ours.lora_B.normal_()
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    x = torch.randn(4, 7, 64).to(dtype)
    ours.train(), theirs.train()
    torch.manual_seed(3)
    a = ours(x)
    torch.manual_seed(3)
    b = theirs(x)
    assert a.dtype == b.dtype == dtype and torch.equal(a, b)
    torch.manual_seed(3)
    old = (lin(x) + F.linear(F.linear(nn.functional.dropout(x, 0.3).float(), ours.lora_A), ours.lora_B) * 2).to(dtype)
    assert not torch.equal(old, a)  # dropout before the cast (labkit before the fix) gives other numbers
    a.float().square().sum().backward()
    b.float().square().sum().backward()
    assert torch.equal(ours.lora_B.grad, theirs.lora_B["default"].weight.grad)


# --------------------------------------------------------------------------- items 7, 8: targets and the file
TARGET_CASES = [
    dict(target_modules=["q_proj", "v_proj"]),
    dict(target_modules=["self_attn.o_proj", "model.layers.1.mlp.down_proj"]),
    dict(target_modules=r".*\.layers\.1\..*_proj"),
    dict(target_modules=r"model\.layers\.0\.self_attn\.(q|k)_proj"),
    dict(target_modules="all-linear"),
    dict(target_modules=["q_proj", "up_proj"], layers_to_transform=1),
    dict(target_modules=["q_proj", "up_proj"], layers_to_transform=[0]),
    dict(target_modules=["q_proj"], layers_to_transform=[1], layers_pattern="layers"),
    dict(target_modules=["q_proj", "model.layers.0.self_attn.v_proj"], layers_to_transform=[1]),  # exact name: kept
    dict(target_modules="all-linear", exclude_modules=["o_proj", "down_proj"]),
    dict(target_modules=["q_proj", "k_proj"], exclude_modules=r".*layers\.0\.self_attn\.k_proj"),
]


@pytest.mark.parametrize("case", TARGET_CASES, ids=lambda c: str(c)[:60])
def test_target_module_names_equal_peft(base, case):
    theirs = _peft_model(copy.deepcopy(base), r=2, lora_alpha=4, **case)
    names = lora.target_module_names(base, **case)
    assert sorted(names) == _peft_wrapped(theirs)
    ours = lora.inject_lora(copy.deepcopy(base), 2, 4, **case)
    assert sorted(lora.lora_layers(ours)) == _peft_wrapped(theirs) and _trainable(ours) == _trainable(theirs)


def test_target_errors_are_clear(base):
    with pytest.raises(LabkitError, match="layers_to_transform cannot be used with a string"):
        lora.target_module_names(base, r".*q_proj", layers_to_transform=[0])
    with pytest.raises(LabkitError, match="layers_pattern needs layers_to_transform"):
        lora.target_module_names(base, ["q_proj"], layers_pattern="layers")
    with pytest.raises(LabkitError, match="matches no nn.Linear in this model \\(in layers \\[7\\]\\)"):
        lora.target_module_names(base, ["q_proj"], layers_to_transform=[7])
    with pytest.raises(LabkitError, match="matches no nn.Linear"):
        lora.target_module_names(base, r"q_pro.*")  # a regex must match the whole name, as in peft
    with pytest.raises(LabkitError, match="not an nn.Linear"):
        lora.target_module_names(base, r".*self_attn")


def test_partial_adapter_file_lands_on_the_same_modules_in_peft(base, tmp_path):
    """An adapter on layer 1's q_proj only: the file must put it there in peft, not on every q_proj."""
    import json

    from peft import PeftModel

    ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, target_modules=["q_proj"], layers_to_transform=[1])
    assert list(lora.lora_layers(ours)) == ["model.layers.1.self_attn.q_proj"]
    _randomize_b(ours)
    lora.save_adapter(ours, tmp_path)
    assert json.loads((tmp_path / lora.ADAPTER_CONFIG).read_text())["target_modules"] == \
        ["model.layers.1.self_attn.q_proj"]
    in_peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert _peft_wrapped(in_peft) == ["model.layers.1.self_attn.q_proj"]
    back = lora.load_adapter(copy.deepcopy(base), tmp_path)
    assert list(lora.lora_layers(back)) == ["model.layers.1.self_attn.q_proj"]
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(in_peft(ids).logits, ours(ids).logits, rtol=0, atol=ATOL)
        assert torch.equal(back(ids).logits, ours(ids).logits)
    # and a peft file written with layers_to_transform loads into labkit on the same modules
    theirs = _peft_model(copy.deepcopy(base), r=4, lora_alpha=8, target_modules=["k_proj"], layers_to_transform=[0])
    theirs.save_pretrained(tmp_path / "peft")
    assert list(lora.lora_layers(lora.load_adapter(copy.deepcopy(base), tmp_path / "peft"))) == \
        _peft_wrapped(theirs) == ["model.layers.0.self_attn.k_proj"]


def test_rank_and_alpha_pattern_equal_peft_and_survive_the_file(base, tmp_path):
    from peft import PeftModel

    kw = dict(target_modules=["q_proj", "v_proj", "down_proj"], rank_pattern={r"layers\.0\.self_attn\.q_proj": 8,
              "down_proj": 2}, alpha_pattern={r"^model\.layers\.1.*v_proj": 3, "down_proj": 5})
    theirs = _peft_model(copy.deepcopy(base), r=4, lora_alpha=8, **kw)
    ours = lora.inject_lora(copy.deepcopy(base), 4, 8, **kw)
    for name, layer in lora.lora_layers(ours).items():
        t = theirs.base_model.model.get_submodule(name)
        assert (layer.r, layer.alpha, layer.scaling) == (t.r["default"], t.lora_alpha["default"], t.scaling["default"])
    assert {m.r for m in lora.lora_layers(ours).values()} == {2, 4, 8}
    assert _trainable(ours) == _trainable(theirs)
    _randomize_b(ours)
    _to_peft(ours, theirs)
    ids = _ids()
    lora.save_adapter(ours, tmp_path / "ours")
    in_peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "peft")
    back = lora.load_adapter(copy.deepcopy(base), tmp_path / "peft")
    assert [(m.r, m.alpha) for m in lora.lora_layers(back).values()] == \
        [(m.r, m.alpha) for m in lora.lora_layers(ours).values()]
    with torch.no_grad():
        want = ours(ids).logits
        torch.testing.assert_close(theirs(ids).logits, want, rtol=0, atol=ATOL)
        torch.testing.assert_close(in_peft(ids).logits, want, rtol=0, atol=ATOL)
        torch.testing.assert_close(back(ids).logits, want, rtol=0, atol=ATOL)


# --------------------------------------------------------------------------- features
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dora_forward_grad_merge_equal_peft(base, dtype, tmp_path):
    from peft import PeftModel

    model = copy.deepcopy(base).to(dtype)
    ours = lora.inject_lora(copy.deepcopy(model), r=4, alpha=8, target_modules="all-linear", use_dora=True,
                            dropout=0.1)
    theirs = _peft_model(copy.deepcopy(model), r=4, lora_alpha=8, target_modules="all-linear", use_dora=True,
                         lora_dropout=0.1)
    for name, layer in lora.lora_layers(ours).items():  # m = ||W|| row-wise at init, as peft computes it
        t = theirs.base_model.model.get_submodule(name).lora_magnitude_vector["default"].weight
        assert layer.lora_magnitude_vector.dtype == t.dtype and torch.equal(layer.lora_magnitude_vector, t)
    assert _trainable(ours) == _trainable(theirs) == lora.lora_param_count(ours)
    _randomize_b(ours)
    with torch.no_grad():
        for layer in lora.lora_layers(ours).values():
            layer.lora_magnitude_vector.mul_(1.1)
    _to_peft(ours, theirs)
    ids = _ids()
    ours.eval(), theirs.eval()
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, theirs(ids).logits)
    ours.train(), theirs.train()
    torch.manual_seed(5)
    ours(ids).logits.float().square().mean().backward()
    torch.manual_seed(5)
    theirs(ids).logits.float().square().mean().backward()
    for name, layer in lora.lora_layers(ours).items():
        t = theirs.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_magnitude_vector.grad, t.lora_magnitude_vector["default"].weight.grad,
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.lora_A.grad, t.lora_A["default"].weight.grad, rtol=1e-5, atol=1e-6)
    ours.eval(), theirs.eval()
    lora.save_adapter(ours, tmp_path)
    in_peft = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path)
    back = lora.load_adapter(copy.deepcopy(model), tmp_path)
    with torch.no_grad():
        want = ours(ids).logits
        assert torch.equal(in_peft(ids).logits, want) and torch.equal(back(ids).logits, want)
        lora.merge_adapter(ours), theirs.merge_adapter()
        for name, layer in lora.lora_layers(ours).items():
            assert torch.equal(layer.base.weight, theirs.base_model.model.get_submodule(name).get_base_layer().weight)
        lora.unmerge_adapter(ours), theirs.unmerge_adapter()
        for name, layer in lora.lora_layers(ours).items():
            assert torch.equal(layer.base.weight, theirs.base_model.model.get_submodule(name).get_base_layer().weight)
        _state_equal(lora.merge_lora(ours), theirs.merge_and_unload())


@pytest.mark.parametrize("init", ["gaussian", False])
def test_init_lora_weights_same_seed_same_tensors_as_peft(base, init):
    torch.manual_seed(7)
    theirs = _peft_model(copy.deepcopy(base), r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                         init_lora_weights=init)
    torch.manual_seed(7)
    ours = lora.inject_lora(copy.deepcopy(base), 4, 8, init_lora_weights=init)
    for name, layer in lora.lora_layers(ours).items():
        t = theirs.base_model.model.get_submodule(name)
        assert torch.equal(layer.lora_A, t.lora_A["default"].weight)
        assert torch.equal(layer.lora_B, t.lora_B["default"].weight)
        assert bool(layer.lora_B.any()) == (init is False)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=ATOL)
    if init == "gaussian":
        a = torch.cat([m.lora_A.flatten() for m in lora.lora_layers(ours).values()])
        assert abs(a.std().item() - 1 / 4) < 0.02
    with pytest.raises(LabkitError, match="init_lora_weights='pissa' is not implemented"):
        lora.inject_lora(copy.deepcopy(base), 4, 8, init_lora_weights="pissa")


def test_disable_adapter_context_equals_peft(base):
    ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, modules_to_save=["lm_head"])
    _randomize_b(ours)
    with torch.no_grad():
        lora.saved_modules(ours)["lm_head"].trained.weight.mul_(1.5)
    theirs = _peft_model(copy.deepcopy(base), r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                         modules_to_save=["lm_head"])
    _to_peft(ours, theirs)
    ids = _ids()
    with torch.no_grad():
        adapted, plain = ours(ids).logits, base(ids).logits
        with lora.disable_adapter(ours):
            assert torch.equal(ours(ids).logits, plain)
        with theirs.disable_adapter():
            assert torch.equal(theirs(ids).logits, plain)
        assert torch.equal(ours(ids).logits, adapted)
        torch.testing.assert_close(theirs(ids).logits, adapted, rtol=0, atol=ATOL)
        lora.merge_adapter(ours)  # a merged adapter is taken out when disabled, as in peft
        with lora.disable_adapter(ours):
            torch.testing.assert_close(ours(ids).logits, plain, rtol=0, atol=ATOL)  # W + d - d: fp32 rounding
        assert not any(m.merged for m in lora.lora_layers(ours).values())
        torch.testing.assert_close(ours(ids).logits, adapted, rtol=0, atol=ATOL)


def test_modules_to_save_equal_peft_and_file_both_ways(base, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    kw = dict(target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"])
    ours = lora.inject_lora(copy.deepcopy(base), 4, 8, **kw)
    theirs = _peft_model(copy.deepcopy(base), r=4, lora_alpha=8, **kw)
    assert _trainable(ours) == _trainable(theirs) == lora.lora_param_count(ours)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    _randomize_b(ours)
    with torch.no_grad():
        lora.saved_modules(ours)["lm_head"].trained.weight.add_(0.1)
    _to_peft(ours, theirs)
    lora.save_adapter(ours, tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "peft")
    mine, peft_file = (load_file(str(tmp_path / d / lora.ADAPTER_WEIGHTS)) for d in ("ours", "peft"))
    assert sorted(mine) == sorted(peft_file) and "base_model.model.lm_head.weight" in mine
    assert all(torch.equal(mine[k], peft_file[k]) for k in mine)
    ids = _ids()
    in_peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    back = lora.load_adapter(copy.deepcopy(base), tmp_path / "peft")
    with torch.no_grad():
        want = ours(ids).logits
        assert (want - base(ids).logits).abs().max() > 1e-3
        torch.testing.assert_close(theirs(ids).logits, want, rtol=0, atol=ATOL)
        torch.testing.assert_close(in_peft(ids).logits, want, rtol=0, atol=ATOL)
        assert torch.equal(back(ids).logits, want)
    _state_equal(lora.merge_lora(ours), theirs.merge_and_unload())


def test_safe_merge_refuses_nan_and_leaves_weights(base):
    ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8)
    _randomize_b(ours)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with torch.no_grad():
        lora.lora_layers(ours)["model.layers.1.self_attn.v_proj"].lora_B[0, 0] = float("nan")
    with pytest.raises(LabkitError, match="model.layers.1.self_attn.v_proj: NaNs detected") as exc:
        lora.merge_lora(ours, safe_merge=True)
    assert "\n" not in str(exc.value)
    assert all(not m.merged for m in lora.lora_layers(ours).values())
    for k, v in ours.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, before[k]), k
    theirs = _peft_model(copy.deepcopy(base), r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    _to_peft(ours, theirs)
    with pytest.raises(ValueError, match="NaNs detected"):
        theirs.merge_and_unload(safe_merge=True)


def test_merge_adapter_keeps_layers_and_unmerge_equals_peft(base):
    ours = lora.inject_lora(copy.deepcopy(base), r=4, alpha=8, target_modules="all-linear")
    _randomize_b(ours)
    theirs = _peft_model(copy.deepcopy(base), r=4, lora_alpha=8, target_modules="all-linear")
    _to_peft(ours, theirs)
    ids = _ids()
    with torch.no_grad():
        want = ours(ids).logits
        lora.merge_adapter(ours), theirs.merge_adapter()
        assert len(lora.lora_layers(ours)) == 14 and all(m.merged for m in lora.lora_layers(ours).values())
        for name, layer in lora.lora_layers(ours).items():
            assert torch.equal(layer.base.weight, theirs.base_model.model.get_submodule(name).get_base_layer().weight)
        torch.testing.assert_close(ours(ids).logits, want, rtol=0, atol=ATOL)
        lora.unmerge_adapter(ours), theirs.unmerge_adapter()
        for name, layer in lora.lora_layers(ours).items():
            assert not layer.merged
            assert torch.equal(layer.base.weight, theirs.base_model.model.get_submodule(name).get_base_layer().weight)
        torch.testing.assert_close(ours(ids).logits, want, rtol=0, atol=ATOL)
    assert lora.merge_and_unload is lora.merge_lora


KEYS = ["", "q_proj", "model.layers.1.self_attn.q_proj", "model.layers.10.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj.inner", "transformer.h.2.attn.c_attn", "h.2.attn.c_attn",
        "encoder.block.0.layer.1.DenseReluDense.wo", "mlp.blocks.1.weight", "blocks.1.weight",
        "a.layers.003.experts.2.w1", "a.layers.3.experts.2.w1", "xq_proj", "foo.bar.q_proj"]
CONFIGS = [
    dict(target_modules=["q_proj"]), dict(target_modules=["q_proj", "c_attn", "wo"]),
    dict(target_modules=["self_attn.q_proj"]), dict(target_modules=["model.layers.1.self_attn.q_proj"]),
    dict(target_modules=[]), dict(target_modules="q_proj"), dict(target_modules=r".*q_proj"),
    dict(target_modules=r".*\.(q_proj|c_attn)$"), dict(target_modules=r".*block\.0.*(wo|wi)"),
    dict(target_modules=["q_proj", "c_attn"], layers_to_transform=1),
    dict(target_modules=["q_proj", "c_attn"], layers_to_transform=[1, 2]),
    dict(target_modules=["q_proj", "w1"], layers_to_transform=[3], layers_pattern="layers"),
    dict(target_modules=["w1"], layers_to_transform=[2], layers_pattern=["experts"]),
    dict(target_modules=["weight"], layers_to_transform=[1], layers_pattern=["blocks"]),
    dict(target_modules=["c_attn"], layers_to_transform=[2], layers_pattern="h"),
    dict(target_modules=["q_proj"], layers_to_transform=[], layers_pattern=""),
    dict(target_modules=["model.layers.1.self_attn.q_proj"], layers_to_transform=[5]),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c)[:70])
def test_target_matches_equals_peft_check_target_module_exists(config):
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    peft_config = LoraConfig(**config)
    for key in KEYS:
        assert lora.target_matches(key, **config) == bool(check_target_module_exists(peft_config, key)), key


def test_dora_on_gpt2_conv1d_equals_peft(gpt2):
    ours = lora.inject_lora(copy.deepcopy(gpt2), r=4, alpha=8, target_modules=["c_attn", "c_fc"], use_dora=True)
    theirs = _peft_model(copy.deepcopy(gpt2), r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], use_dora=True)
    for name, layer in lora.lora_layers(ours).items():
        t = theirs.base_model.model.get_submodule(name).lora_magnitude_vector["default"].weight
        assert torch.equal(layer.lora_magnitude_vector, t)
    _randomize_b(ours)
    _to_peft(ours, theirs)
    ids = _ids(vocab=128)
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, theirs(ids).logits)
    _state_equal(lora.merge_lora(ours), theirs.merge_and_unload())


class _MLP(nn.Module):
    """A plain (non-transformers) model: every Linear is a candidate for 'all-linear', as in peft."""

    def __init__(self):
        super().__init__()
        self.lin0, self.relu, self.lin1 = nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 2)

    def forward(self, x):
        return self.lin1(self.relu(self.lin0(x)))


@pytest.mark.parametrize("case", [dict(target_modules="lin0"), dict(target_modules="all-linear"),
                                  dict(target_modules=["lin0", "lin1"], modules_to_save=["lin1"]),
                                  dict(target_modules=["lin0"], modules_to_save=["lin1"], use_dora=True)],
                         ids=str)
def test_plain_mlp_targets_outputs_and_training_equal_peft(case):
    torch.manual_seed(0)
    mlp = _MLP()
    peft_kw = {("lora_alpha" if k == "alpha" else k): v for k, v in case.items()}
    theirs = _peft_model(copy.deepcopy(mlp), r=4, lora_alpha=8, init_lora_weights=False, **peft_kw)
    ours = lora.inject_lora(copy.deepcopy(mlp), 4, 8, **case)
    assert sorted(lora.lora_layers(ours)) == _peft_wrapped(theirs)
    assert _trainable(ours) == _trainable(theirs)
    _randomize_b(ours)
    _to_peft(ours, theirs)
    x = torch.randn(5, 10)
    assert torch.equal(ours(x), theirs(x))
    opt_a = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.1)
    opt_b = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.1)
    for opt, m in ((opt_a, ours), (opt_b, theirs)):
        m(x).square().sum().backward()
        opt.step()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    frozen = {n: p for n, p in mlp.named_parameters()}
    for name, layer in lora.lora_layers(ours).items():  # the base never moves
        assert torch.equal(layer.base.weight, frozen[name + ".weight"])

"""labkit.lora against peft 0.21 and against values computed by hand."""
import copy
import math

import pytest
import torch
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
    with pytest.raises(LabkitError, match="is a Conv1D, not an nn.Linear"):
        lora.inject_lora(models.build("gpt2", device="meta"), r=4, alpha=8, target_modules="c_attn")
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

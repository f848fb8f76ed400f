"""labkit.soft_prompts against peft 0.21 side by side: the same weights in both, then the same
logits and loss bit for bit (prompt tuning, P-tuning MLP/LSTM, prefix tuning with and without the
projection, (IA)^3; Llama with grouped-query attention, GPT-2's Conv1D, bf16), the same
initialisation from the same seed, the same gradients, and the same trainable-parameter counts on
small real models and on meta-device real shapes."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from labkit import models
from labkit import soft_prompts as sp
from labkit.errors import LabkitError

peft = pytest.importorskip("peft")
from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig  # noqa: E402

N = 5  # virtual tokens


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes (e.g. on fan_in_fan_out) are not under test
        yield


def _llama(**kw):
    """Grouped-query attention (4 heads, 2 KV heads) so the prefix has kv_heads, not heads."""
    base = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64)
    base.update(kw)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**base)).eval()


def _gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()


@pytest.fixture
def llama():
    return _llama()


def _batch(vocab=128, batch=3, length=7):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, :2] = 0                          # a left-padded row
    labels = ids.clone()
    labels[1, :3] = -100                     # a row with a masked prompt
    labels[0, :2] = -100
    return ids, mask, labels


def _peft(model, config):
    return peft.get_peft_model(copy.deepcopy(model), config).eval()


def _same_outputs(ours, peft_model, batch=None):
    ids, mask, labels = batch or _batch(ours_vocab(ours))
    a = ours(ids, attention_mask=mask, labels=labels)
    b = peft_model(input_ids=ids, attention_mask=mask, labels=labels)
    assert a.logits.shape == b.logits.shape
    assert torch.equal(a.logits, b.logits)   # the same operations in the same order: bit-equal
    assert torch.equal(a.loss, b.loss)
    return a


def ours_vocab(ours):
    m = getattr(ours, "model", ours)
    return m.config.vocab_size


def _randomize(module, seed=3):
    """Give every trainable tensor of ours values (peft's zero / one initialisations prove little)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.dim() == 1 and p.numel() > 0 else 0.0))


# --------------------------------------------------------------------------- prompt tuning
def test_prompt_tuning_equals_peft_logits_loss_and_shapes(llama):
    pm = _peft(llama, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N))
    ours = sp.load_from_peft(sp.PromptTuning(copy.deepcopy(llama), num_virtual_tokens=N).eval(), pm)
    out = _same_outputs(ours, pm)
    assert out.logits.shape == (3, N + 7, 128)          # virtual positions are in the output, as in peft
    assert sp.trainable_parameters(ours) == pm.get_nb_trainable_parameters()[0] == N * 32
    assert all(not p.requires_grad for p in ours.model.parameters())


def test_prompt_tuning_copy_to_peft_and_no_mask_no_labels(llama):
    ours = sp.PromptTuning(copy.deepcopy(llama), N).eval()
    _randomize(ours)
    pm = sp.copy_to_peft(ours, _peft(llama, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N)))
    ids, _, _ = _batch()
    assert torch.equal(ours(ids).logits, pm(input_ids=ids).logits)


def test_prompt_tuning_is_the_model_on_virtual_then_real_embeddings(llama):
    """By hand: the output is the frozen model run on [prompt; embed(ids)]; the loss is the mean
    cross-entropy over real labels, the last virtual position predicting labels[:, 0]."""
    ours = sp.PromptTuning(llama, N).eval()
    ids, mask, labels = _batch()
    out = ours(ids, attention_mask=mask, labels=labels)
    embeds = torch.cat([ours.embedding.weight.expand(3, -1, -1), llama.model.embed_tokens(ids)], dim=1)
    ref = llama(inputs_embeds=embeds, attention_mask=torch.cat([torch.ones(3, N, dtype=torch.long), mask], 1))
    assert torch.equal(out.logits, ref.logits)
    full = torch.cat([torch.full((3, N), -100), labels], 1)
    loss = F.cross_entropy(ref.logits[:, :-1].reshape(-1, 128), full[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, loss)        # HF's loss function sums then divides: rounding only


@pytest.mark.parametrize("init", ["SAMPLE_VOCAB", "RANDOM"])
def test_prompt_tuning_init_from_the_same_seed_equals_peft(llama, init):
    torch.manual_seed(7)
    pm = _peft(llama, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N, prompt_tuning_init=init))
    torch.manual_seed(7)
    ours = sp.PromptTuning(copy.deepcopy(llama), N, init=init.lower())
    theirs = pm.prompt_encoder["default"].embedding.weight
    assert torch.equal(ours.embedding.weight, theirs) and ours.embedding.weight.dtype == torch.float32
    if init == "SAMPLE_VOCAB":                          # rows are real token embeddings
        vocab = llama.model.embed_tokens.weight
        assert all((vocab == row).all(-1).any() for row in ours.embedding.weight)


def test_prompt_tuning_text_init_equals_peft(llama):
    from labkit import tokenizer as lab_tokenizer

    tok = lab_tokenizer.load_tokenizer()
    big = _llama(vocab_size=len(tok))
    text = "Answer the question:"
    for n in (3, 17):                                  # cut, and repeated to length
        pm = _peft(big, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, prompt_tuning_init="TEXT",
                                           prompt_tuning_init_text=text,
                                           tokenizer_name_or_path=str(lab_tokenizer.TOKENIZER_DIR)))
        ours = sp.PromptTuning(copy.deepcopy(big), n, init="text", init_text=text, tokenizer=tok)
        assert torch.equal(ours.embedding.weight, pm.prompt_encoder["default"].embedding.weight)


# --------------------------------------------------------------------------- P-tuning
@pytest.mark.parametrize("kind,hidden,layers", [("MLP", 16, 2), ("MLP", None, 2), ("LSTM", 12, 2), ("LSTM", 8, 1)])
def test_p_tuning_equals_peft_and_same_seed_same_init(llama, kind, hidden, layers):
    torch.manual_seed(11)
    pm = _peft(llama, PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=N, encoder_hidden_size=hidden,
                                          encoder_reparameterization_type=kind, encoder_num_layers=layers))
    torch.manual_seed(11)
    ours = sp.PromptEncoder(copy.deepcopy(llama), N, encoder_hidden_size=hidden,
                            encoder_reparameterization_type=kind, encoder_num_layers=layers).eval()
    theirs = pm.prompt_encoder["default"].state_dict()
    mine = {k: v for k, v in ours.state_dict().items() if not k.startswith("model.")}
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)  # same RNG order
    _randomize(ours)
    sp.copy_to_peft(ours, pm)
    _same_outputs(ours, pm)
    assert sp.trainable_parameters(ours) == pm.get_nb_trainable_parameters()[0]
    ids = torch.arange(N).unsqueeze(0)
    assert torch.equal(ours.encode(ids), pm.prompt_encoder["default"](ids))


# --------------------------------------------------------------------------- prefix tuning
@pytest.mark.parametrize("projection,hidden", [(False, None), (True, None), (True, 24)])
def test_prefix_tuning_equals_peft_with_grouped_query_attention(llama, projection, hidden):
    pm = _peft(llama, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N, prefix_projection=projection,
                                         encoder_hidden_size=hidden))
    ours = sp.PrefixTuning(copy.deepcopy(llama), N, prefix_projection=projection, encoder_hidden_size=hidden).eval()
    _randomize(ours)
    sp.copy_to_peft(ours, pm)
    out = _same_outputs(ours, pm)
    assert out.logits.shape == (3, 7, 128)              # the prefix is in the cache, not in the sequence
    keys, values = ours.prefix(2)[1]
    assert keys.shape == values.shape == (2, 2, N, 8)   # (batch, kv_heads, n, head_dim)
    kv = 2 * 8
    expected = N * 3 * 2 * kv if not projection else N * kv + kv * (hidden or kv) + (hidden or kv) \
        + (hidden or kv) * 3 * 2 * kv + 3 * 2 * kv
    assert sp.trainable_parameters(ours) == pm.get_nb_trainable_parameters()[0] == expected


def test_prefix_is_a_kv_cache_of_earlier_tokens(llama):
    """Fill the prefix with the keys and values the model itself caches for n real tokens: the
    prefix-tuned model on x is then the plain model on [those tokens; x] (real positions start at n)."""
    g = torch.Generator().manual_seed(5)
    context, x = torch.randint(0, 128, (1, N), generator=g), torch.randint(0, 128, (1, 6), generator=g)
    cache = llama(context, use_cache=True).past_key_values
    layers = [(cache.layers[i].keys, cache.layers[i].values) for i in range(3)]
    flat = torch.stack([t for kv in layers for t in kv])           # (2L, 1, kv_heads, n, head_dim)
    ours = sp.PrefixTuning(llama, N).eval()
    with torch.no_grad():
        ours.embedding.weight.copy_(flat.permute(1, 3, 0, 2, 4).reshape(N, -1))
    got = ours(x).logits
    want = llama(torch.cat([context, x], 1)).logits[:, N:]
    # one attention over N + 6 keys vs cached keys + 6 new: same numbers, summed in another order
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_prefix_tuning_builds_a_fresh_cache_every_call(llama):
    ours = sp.PrefixTuning(llama, N).eval()
    ids, mask, _ = _batch()
    assert torch.equal(ours(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits)
    cache = DynamicCache(ours.prefix(1))
    assert cache.get_seq_length() == N and len(cache.layers) == 3


# --------------------------------------------------------------------------- (IA)^3
@pytest.mark.parametrize("targets,ff", [(None, None), (["q_proj", "up_proj", "down_proj"], ["down_proj"]),
                                        (r".*\.layers\.[12]\..*(v_proj|gate_proj)", r".*gate_proj"),
                                        ("all-linear", ["down_proj", "o_proj"]),
                                        (["down_proj", "wn_proj"], ["wn_proj"])])  # ff is a plain suffix in peft
def test_ia3_equals_peft(llama, targets, ff):
    pm = _peft(llama, IA3Config(task_type="CAUSAL_LM", target_modules=targets, feedforward_modules=ff))
    ours = sp.inject_ia3(copy.deepcopy(llama), target_modules=targets, feedforward_modules=ff).eval()
    _same_outputs(ours, pm)                            # all ones: both are the base model
    _randomize(ours)
    sp.copy_to_peft(ours, pm)
    _same_outputs(ours, pm)
    peft_layers = {n: m.is_feedforward for n, m in pm.get_base_model().named_modules() if hasattr(m, "ia3_l")}
    assert {n: m.is_feedforward for n, m in sp.ia3_layers(ours).items()} == peft_layers
    assert sp.trainable_parameters(ours) == pm.get_nb_trainable_parameters()[0]


def test_ia3_starts_as_the_base_model_and_scales_by_hand(llama):
    ids, mask, _ = _batch()
    before = llama(ids, attention_mask=mask).logits
    ours = sp.inject_ia3(copy.deepcopy(llama))
    assert torch.equal(ours(ids, attention_mask=mask).logits, before)
    lin = nn.Linear(6, 4)
    x = torch.randn(3, 6)
    out_scaled, in_scaled = sp.IA3Linear(lin), sp.IA3Linear(lin, is_feedforward=True)
    assert out_scaled.ia3_l.shape == (4,) and in_scaled.ia3_l.shape == (6,)
    with torch.no_grad():
        out_scaled.ia3_l.copy_(torch.tensor([1.0, 2.0, 0.5, 0.0]))
        in_scaled.ia3_l.copy_(torch.arange(6.0))
    assert torch.equal(out_scaled(x), lin(x) * torch.tensor([1.0, 2.0, 0.5, 0.0]))
    assert torch.equal(in_scaled(x), lin(x * torch.arange(6.0)))


# --------------------------------------------------------------------------- GPT-2 (Conv1D, no GQA) and bf16
def test_gpt2_prompt_prefix_and_ia3_equal_peft():
    gpt2 = _gpt2()
    batch = _batch(length=6)
    for ours, config in [(sp.PromptTuning(copy.deepcopy(gpt2), N), PromptTuningConfig(task_type="CAUSAL_LM",
                                                                                         num_virtual_tokens=N)),
                         (sp.PrefixTuning(copy.deepcopy(gpt2), N), PrefixTuningConfig(task_type="CAUSAL_LM",
                                                                                        num_virtual_tokens=N)),
                         (sp.inject_ia3(copy.deepcopy(gpt2)), IA3Config(task_type="CAUSAL_LM"))]:
        ours.eval()
        _randomize(ours)
        pm = sp.copy_to_peft(ours, _peft(gpt2, config))
        _same_outputs(ours, pm, batch)
        assert sp.trainable_parameters(ours) == pm.get_nb_trainable_parameters()[0]


def test_bf16_model_fp32_soft_prompt_equals_peft():
    model = _llama().to(torch.bfloat16)
    for ours, config in [(sp.PromptTuning(copy.deepcopy(model), N), PromptTuningConfig(task_type="CAUSAL_LM",
                                                                                          num_virtual_tokens=N)),
                         (sp.PrefixTuning(copy.deepcopy(model), N), PrefixTuningConfig(task_type="CAUSAL_LM",
                                                                                         num_virtual_tokens=N)),
                         (sp.inject_ia3(copy.deepcopy(model)), IA3Config(task_type="CAUSAL_LM"))]:
        ours.eval()
        _randomize(ours)
        pm = sp.copy_to_peft(ours, _peft(model, config))
        assert all(p.dtype == torch.float32 for p in ours.parameters() if p.requires_grad)  # as peft keeps them
        out = _same_outputs(ours, pm)
        assert out.logits.dtype == torch.bfloat16


# --------------------------------------------------------------------------- training: the same gradients
@pytest.mark.parametrize("make,config", [
    (lambda m: sp.PromptTuning(m, N), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N)),
    (lambda m: sp.PromptEncoder(m, N, 16, "LSTM"), PromptEncoderConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=N, encoder_hidden_size=16, encoder_reparameterization_type="LSTM")),
    (lambda m: sp.PrefixTuning(m, N, prefix_projection=True), PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=N, prefix_projection=True)),
    (lambda m: sp.inject_ia3(m), IA3Config(task_type="CAUSAL_LM"))])
def test_one_training_step_equals_peft(llama, make, config):
    ours = make(copy.deepcopy(llama)).train()
    _randomize(ours)
    pm = sp.copy_to_peft(ours, _peft(llama, config)).train()
    ids, mask, labels = _batch()
    for model in (ours, pm):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
    for mine, theirs, name in sp._pairs(ours, pm):
        assert torch.equal(mine, theirs.reshape(mine.shape)), name   # the same gradients, the same step
    assert all(p.grad is None for p in ours.parameters() if not p.requires_grad)


# --------------------------------------------------------------------------- Freeze
def test_freeze_last_k_and_modules(llama):
    per_layer = sum(p.numel() for p in llama.model.layers[0].parameters())
    mlp = sum(p.numel() for p in llama.model.layers[0].mlp.parameters())
    sp.freeze(llama, last_k=2)
    trained = {n for n, p in llama.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("model.layers.1.", "model.layers.2.")) for n in trained)
    assert sp.trainable_parameters(llama) == 2 * per_layer
    sp.freeze(llama, last_k=1, modules=["mlp", "input_layernorm"])
    assert sp.trainable_parameters(llama) == mlp + 32
    sp.freeze(llama, modules="self_attn.v_proj")       # every layer, one module
    assert sp.trainable_parameters(llama) == 3 * 16 * 32
    assert sp.count_parameters(llama.config, "freeze", freeze_last_k=2) == 2 * per_layer
    assert sp.count_parameters(llama.config, "freeze", freeze_last_k=1, target_modules=["mlp"]) == mlp


def test_freeze_gpt2_finds_its_blocks():
    gpt2 = _gpt2()
    sp.freeze(gpt2, last_k=1)
    assert sp.trainable_parameters(gpt2) == sum(p.numel() for p in gpt2.transformer.h[1].parameters())


# --------------------------------------------------------------------------- count_parameters
@pytest.mark.parametrize("method,kw,config", [
    ("prompt_tuning", {}, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N)),
    ("p_tuning", {}, PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=N)),
    ("p_tuning", {"encoder_hidden_size": 24, "encoder_reparameterization_type": "LSTM", "encoder_num_layers": 1},
     PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=N, encoder_hidden_size=24,
                         encoder_reparameterization_type="LSTM", encoder_num_layers=1)),
    ("prefix_tuning", {}, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N)),
    ("prefix_tuning", {"prefix_projection": True, "encoder_hidden_size": 40},
     PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N, prefix_projection=True, encoder_hidden_size=40)),
    ("ia3", {}, IA3Config(task_type="CAUSAL_LM")),
    ("ia3", {"target_modules": ["o_proj", "up_proj"], "feedforward_modules": ["o_proj"]},
     IA3Config(task_type="CAUSAL_LM", target_modules=["o_proj", "up_proj"], feedforward_modules=["o_proj"])),
    ("lora", {"r": 4}, LoraConfig(task_type="CAUSAL_LM", r=4)),
])
def test_count_parameters_equals_peft_on_small_real_models(llama, method, kw, config):
    for model in (llama, _gpt2()) if "target_modules" not in kw else (llama,):   # Llama's names
        got = sp.count_parameters(model.config, method, num_virtual_tokens=N, **kw)
        assert got == _peft(model, copy.deepcopy(config)).get_nb_trainable_parameters()[0], model.config.model_type


@pytest.mark.parametrize("method,kw,config", [
    ("prompt_tuning", {}, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)),
    ("p_tuning", {"encoder_hidden_size": 128},
     PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=20, encoder_hidden_size=128)),
    ("prefix_tuning", {}, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20)),
    ("prefix_tuning", {"prefix_projection": True},
     PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20, prefix_projection=True)),
    ("ia3", {}, IA3Config(task_type="CAUSAL_LM")),
])
def test_count_parameters_equals_peft_on_meta_smollm2(method, kw, config):
    peft_model = peft.get_peft_model(models.build("smollm2-135m", device="meta"), config)
    assert sp.count_parameters("smollm2-135m", method, **kw) == peft_model.get_nb_trainable_parameters()[0]


def test_count_parameters_llama_2_7b_meta_and_by_hand():
    peft_model = peft.get_peft_model(models.build("llama-2-7b", device="meta"),
                                     PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20))
    assert sp.count_parameters("llama-2-7b", "prefix_tuning") == peft_model.get_nb_trainable_parameters()[0] \
        == 20 * 32 * 2 * 4096
    assert sp.count_parameters("llama-2-7b", "prompt_tuning") == 20 * 4096
    assert sp.count_parameters("llama-2-7b", "ia3") == 32 * (4096 + 4096 + 11008)
    assert sp.count_parameters("llama-3-8b", "prefix_tuning") == 20 * 32 * 2 * (8 * 128)   # GQA: 8 KV heads
    assert sp.count_parameters(models.config("llama-2-7b"), "freeze", freeze_last_k=2) == 2 * 202_383_360
    assert sp.count_parameters("llama-2-7b", "lora", r=8) == 32 * 2 * 8 * (4096 + 4096)


# --------------------------------------------------------------------------- bad input: one line
@pytest.mark.parametrize("call,needle", [
    (lambda m: sp.PromptTuning(m, 0), "num_virtual_tokens"),
    (lambda m: sp.PromptTuning(m, 4, init="vocab"), "init must be"),
    (lambda m: sp.PromptTuning(m, 4, init="text"), "init_text"),
    (lambda m: sp.PromptEncoder(m, 4, encoder_reparameterization_type="GRU"), "MLP' or 'LSTM"),
    (lambda m: sp.PrefixTuning(m, 4, encoder_hidden_size=-1), "encoder_hidden_size"),
    (lambda m: sp.PromptTuning(nn.Linear(2, 2), 4), "causal LM"),
    (lambda m: (m.gradient_checkpointing_enable(), sp.PrefixTuning(m, 4)), "gradient_checkpointing_disable"),
    (lambda m: sp.inject_ia3(m, target_modules=["qkv"]), "match no module"),
    (lambda m: sp.inject_ia3(m, target_modules=["k_proj"], feedforward_modules=["down_proj"]), "subset"),
    (lambda m: sp.inject_ia3(m, target_modules=["input_layernorm"], feedforward_modules=[]), "nn.Linear or Conv1D"),
    (lambda m: sp.freeze(m), "last_k"),
    (lambda m: sp.freeze(m, last_k=4), "has 3 layers"),
    (lambda m: sp.freeze(m, last_k=1, modules=["attn"]), "a layer holds"),
    (lambda m: sp.count_parameters(m.config, "bitfit"), "method must be"),
    (lambda m: sp.count_parameters(m.config, "lora"), "needs r"),
    (lambda m: sp.count_parameters(m.config, "freeze"), "freeze_last_k"),
    (lambda m: sp.count_parameters("llama-9b", "ia3"), "unknown model"),
    (lambda m: sp.load_from_peft(sp.PromptTuning(m, 4), peft.get_peft_model(
        copy.deepcopy(m), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6))), "does not match"),
    (lambda m: sp.load_from_peft(sp.PromptTuning(m, 4), peft.get_peft_model(
        copy.deepcopy(m), IA3Config(task_type="CAUSAL_LM"))), "prompt-learning"),
])
def test_bad_input_is_one_line(llama, call, needle):
    with pytest.raises(LabkitError) as err:
        call(llama)
    assert needle in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- the GPU bench's code path, on CPU
def test_bench_peft_quick_code_path(tmp_path):
    from labkit import results
    from labkit.bench import peft as bench

    out = tmp_path / "peft.csv"
    assert bench.main(["--quick", "--device", "cpu", "--bases", "bf16", "nf4", "--out", str(out)]) == 0
    _, rows = results.read_csv(out)
    assert [(r["base"], r["method"]) for r in rows] == [(b, m) for b in ("bf16", "nf4") for m in bench.METHODS]
    by = {(r["base"], r["method"]): r for r in rows}
    assert all(r["quantized_linears"] == 0 for r in rows if r["base"] == "bf16")
    # a frozen layer is quantized, a trained one never: Freeze keeps its 2 layers (all of this model) in bf16
    assert by["nf4", "Freeze last 2 layers"]["quantized_linears"] == 0
    assert by["nf4", "LoRA r=8 q,v"]["quantized_linears"] == 2 * 7
    assert by["nf4", "prompt tuning n=20"]["trainable_params"] == 20 * 256

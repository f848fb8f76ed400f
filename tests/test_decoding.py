"""labkit.decoding against transformers: every processor on random logits (ties and -inf
included), and generate token for token against model.generate."""
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import (NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                                                    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from labkit import decoding, memory
from labkit.errors import LabkitError


def _logits(seed, batch=4, vocab=50, ties=True, infs=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, vocab, generator=gen) * 3
    if ties:                                  # repeated values: top-k keeps every tie of the k-th
        x[:, 10:20] = x[:, :1]
        x[:, 30:33] = torch.round(x[:, 30:33])
    if infs:
        x[0, :25] = -math.inf                 # a row with half its tokens already removed
        x[1, 5] = -math.inf
    return x


def _ids(seed, batch=4, length=12, vocab=50):
    gen = torch.Generator().manual_seed(seed + 100)
    return torch.randint(0, vocab, (batch, length), generator=gen)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("t", [0.1, 0.7, 1.0, 1.5, 4.0])
def test_temperature_equals_transformers(seed, t):
    x = _logits(seed)
    assert torch.equal(decoding.temperature(x, t), TemperatureLogitsWarper(float(t))(None, x))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 2, 5, 11, 26, 49, 50, 80])
@pytest.mark.parametrize("keep", [1, 3])
def test_top_k_equals_transformers_with_ties_and_inf(seed, k, keep):
    x = _logits(seed)
    ref = TopKLogitsWarper(k, min_tokens_to_keep=keep)(None, x)
    assert torch.equal(decoding.top_k(x, k, min_tokens_to_keep=keep), ref)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("p", [1e-6, 0.1, 0.5, 0.9, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("keep", [1, 4])
def test_top_p_equals_transformers_with_ties_and_inf(seed, p, keep):
    x = _logits(seed)
    ref = TopPLogitsWarper(p, min_tokens_to_keep=keep)(None, x)
    assert torch.equal(decoding.top_p(x, p, min_tokens_to_keep=keep), ref)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.2, 2.0, 10.0])
def test_repetition_penalty_equals_transformers(seed, penalty):
    x, ids = _logits(seed), _ids(seed)
    ref = RepetitionPenaltyLogitsProcessor(float(penalty))(ids, x.clone())
    assert torch.equal(decoding.repetition_penalty(x, ids, penalty), ref)


def test_repetition_penalty_by_hand_and_ids_past_the_vocab():
    x = torch.tensor([[2.0, -2.0, 1.0, 0.0]])
    out = decoding.repetition_penalty(x, torch.tensor([[0, 1, 1, 7]]), 2.0)   # 7: past the LM head, ignored
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.0]]                          # once per token, however often seen
    ref = RepetitionPenaltyLogitsProcessor(2.0)(torch.tensor([[0, 1, 1, 7]]), x.clone())
    assert torch.equal(out, ref)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [1, 2, 3, 4, 12, 13])
def test_no_repeat_ngram_equals_transformers(seed, n):
    x = _logits(seed)
    ids = _ids(seed, vocab=6)                 # a small alphabet: many repeated n-grams
    assert torch.equal(decoding.no_repeat_ngram(x, ids, n), NoRepeatNGramLogitsProcessor(n)(ids, x.clone()))


def test_no_repeat_ngram_by_hand():
    ids = torch.tensor([[5, 6, 7, 5, 6]])     # "5 6" was followed by 7: 7 is banned next
    out = decoding.no_repeat_ngram(torch.zeros(1, 10), ids, 3)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [7]
    assert torch.equal(decoding.no_repeat_ngram(torch.zeros(1, 10), ids[:, :2], 3), torch.zeros(1, 10))


@pytest.mark.parametrize("call, match", [
    (lambda x, i: decoding.temperature(x, 0), "positive number.*do_sample=False"),
    (lambda x, i: decoding.temperature(x, -1.0), "positive number"),
    (lambda x, i: decoding.top_k(x, 0), "positive integer"),
    (lambda x, i: decoding.top_p(x, 0.0), r"\(0, 1\]"),
    (lambda x, i: decoding.top_p(x, 1.5), r"\(0, 1\]"),
    (lambda x, i: decoding.repetition_penalty(x, i, 0.0), "positive number"),
    (lambda x, i: decoding.no_repeat_ngram(x, i, 0), "positive integer"),
    (lambda x, i: decoding.top_k(x[0], 3), r"\(batch, vocab\)"),
    (lambda x, i: decoding.repetition_penalty(x, i.float(), 1.2), "integer tensor"),
    (lambda x, i: decoding.repetition_penalty(x, i[:2], 1.2), "rows"),
])
def test_bad_arguments_are_one_line_errors(call, match):
    with pytest.raises(LabkitError, match=match) as err:
        call(_logits(0), _ids(0))
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- metrics
def test_distinct_n_and_repetition_rate_by_hand():
    tokens = [1, 2, 1, 2, 1, 2]               # bigrams: 12 21 12 21 12 -> 2 distinct of 5
    assert decoding.distinct_n(tokens, 2) == pytest.approx(2 / 5)
    assert decoding.repetition_rate(tokens, 2) == pytest.approx(3 / 5)
    assert decoding.distinct_n(torch.tensor([4, 5, 6]), 1) == 1.0
    assert decoding.repetition_rate([4, 5, 6], 1) == 0.0
    assert decoding.distinct_n([7], 2) == 0.0 and decoding.repetition_rate([7], 2) == 0.0
    with pytest.raises(LabkitError, match="one sequence"):
        decoding.distinct_n(torch.zeros(2, 3, dtype=torch.long), 2)
    with pytest.raises(LabkitError, match="positive integer"):
        decoding.repetition_rate([1, 2], 0)


# ----------------------------------------------------------------------------- generate
@pytest.fixture(scope="module")
def gqa_model():
    """A random Llama with grouped-query attention (4 query heads share 2 key/value heads)."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def _prompts(batch=3, length=5):
    return torch.randint(3, 64, (batch, length), generator=torch.Generator().manual_seed(1))


def _hf(model, ids, n, **kw):
    kw.setdefault("eos_token_id", None)
    kw.setdefault("top_k", 0)
    return model.generate(ids, max_new_tokens=n, pad_token_id=0, **kw)


@pytest.mark.parametrize("kw", [{}, dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2),
                                dict(repetition_penalty=0.8, no_repeat_ngram_size=3)], ids=str)
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generate_equals_transformers(gqa_model, kw, use_cache):
    ids = _prompts()
    ref = _hf(gqa_model, ids, 20, do_sample=False, **kw)
    assert torch.equal(decoding.generate(gqa_model, ids, 20, use_cache=use_cache, **kw), ref)


@pytest.mark.parametrize("kw", [dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8),
                                dict(temperature=1.4, top_k=20, top_p=0.9, repetition_penalty=1.2)], ids=str)
def test_sampling_draws_the_same_tokens_with_the_same_seed(gqa_model, kw):
    ids = _prompts()
    torch.manual_seed(7)
    ref = _hf(gqa_model, ids, 20, do_sample=True, **kw)
    torch.manual_seed(7)
    ours = decoding.generate(gqa_model, ids, 20, do_sample=True, **kw)
    assert torch.equal(ours, ref)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(decoding.generate(gqa_model, ids, 10, do_sample=True, generator=gen_a, **kw),
                       decoding.generate(gqa_model, ids, 10, do_sample=True, generator=gen_b, **kw))


def test_eos_pads_finished_rows_and_stops_like_transformers(gqa_model):
    ids = _prompts()
    free = decoding.generate(gqa_model, ids, 12)
    eos = int(free[0, ids.shape[1] + 2])                       # row 0 emits this at its third step
    ref = _hf(gqa_model, ids, 12, do_sample=False, eos_token_id=eos)
    ours = decoding.generate(gqa_model, ids, 12, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(ours, ref)
    all_done = decoding.generate(gqa_model, ids[:1], 12, eos_token_id=eos)
    assert all_done.shape[1] == ids.shape[1] + 3 and int(all_done[0, -1]) == eos   # stops when all have finished


def test_kv_cache_bytes_equal_the_estimator_with_gqa(gqa_model):
    ids = _prompts(batch=2, length=9)
    cache = decoding.KVCache(gqa_model.config.num_hidden_layers)
    logits = decoding.forward_logits(gqa_model, ids, cache)
    with torch.no_grad():
        ref = gqa_model(ids).logits[:, -1]
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    assert cache.length == 9 and cache.keys[0].shape == (2, 2, 9, 8)         # only the 2 key/value heads
    assert cache.nbytes() == memory.kv_cache_bytes(gqa_model.config, 2, 9, dtype=torch.float32)
    decoding.forward_logits(gqa_model, ids[:, :1], cache)
    assert cache.nbytes() == memory.kv_cache_bytes(gqa_model.config, 2, 10, dtype=torch.float32)


def test_generate_refuses_bad_input_in_one_line(gqa_model):
    for kw, match in [(dict(max_new_tokens=0), "positive integer"),
                      (dict(max_new_tokens=5, do_sample=True, temperature=-1.0), "positive number"),
                      (dict(max_new_tokens=5, do_sample=True, top_p=0.0), r"\(0, 1\]"),
                      (dict(max_new_tokens=5, repetition_penalty=0), "positive number")]:
        with pytest.raises(LabkitError, match=match):
            decoding.generate(gqa_model, _prompts(), **kw)
    with pytest.raises(LabkitError, match="integer tensor"):
        decoding.generate(gqa_model, _prompts()[0], 5)
    with pytest.raises(LabkitError, match="Llama-family"):
        decoding.generate(torch.nn.Linear(2, 2), _prompts(), 5)


@pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_batch_equals_transformers(gqa_model, use_cache):
    ids = _prompts(batch=3, length=7)
    mask = torch.ones_like(ids)
    mask[0, :3], mask[2, :5] = 0, 0                              # rows 0 and 2 are shorter prompts
    ids = ids.masked_fill(mask == 0, 0)
    ref = gqa_model.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False, pad_token_id=0,
                             eos_token_id=None)
    ours = decoding.generate(gqa_model, ids, 15, attention_mask=mask, use_cache=use_cache)
    assert torch.equal(ours, ref)
    torch.manual_seed(11)
    ref = gqa_model.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=True, top_k=0, top_p=0.9,
                             pad_token_id=0, eos_token_id=None)
    torch.manual_seed(11)
    assert torch.equal(decoding.generate(gqa_model, ids, 15, attention_mask=mask, do_sample=True, top_p=0.9), ref)
    with pytest.raises(LabkitError, match="shape of input_ids"):
        decoding.generate(gqa_model, ids, 5, attention_mask=mask[:, 1:])


def test_bench_quick_path_on_cpu(tmp_path):
    """The GPU benchmark's code path, shrunk: every base decodes, the CSV reads back, no GPU file."""
    from labkit import results
    from labkit.bench import decode as bench

    out = tmp_path / "decode.csv"
    assert bench.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    meta, rows = results.read_csv(out)
    assert [(r["base"], r["batch"]) for r in rows] == [(b, n) for b in bench.BASES for n in bench.QUICK["batches"]]
    assert all(r["decode_tokens_per_s"] > 0 and r["weight_gb"] > 0 for r in rows)
    by = {r["base"]: r["weight_gb"] for r in rows}
    assert by["nf4"] < by["int8"] < by["bf16"]
    with pytest.raises(LabkitError, match="_gpu.csv"):
        bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "decode_gpu.csv")])


def test_cli_prints_the_grid_as_json_and_refuses_bad_values(capsys):
    import json

    from labkit.__main__ import main as labkit_main

    assert labkit_main(["decode", "--profile", "smoke", "--top-p", "0.8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["profile"] == "smoke" and "greedy" in out["grid"] and "yours: top_p=0.8" in out["grid"]
    assert all(0 <= v["repetition_rate"] <= 1 for v in out["grid"].values())
    for bad in (["--temperature", "-1"], ["--top-p", "0"], ["--top-p", "1.5"], ["--repetition-penalty", "0"],
                ["--model", "gpt-9"]):
        assert labkit_main(["decode", "--profile", "smoke", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")


# ----------------------------------------------------------------------------- repetition_grid
@pytest.fixture(scope="module")
def tiny_and_tok():
    from labkit import models

    return models.load("lab-tiny")


GRID_PROMPTS = ["The old bridge over the river", "She took the train to", "In the morning the market"]
GRID_SETTINGS = {"greedy": {}, "no-repeat 2": {"no_repeat_ngram_size": 2},
                 "top-p 0.9": {"do_sample": True, "top_p": 0.9}}


def test_repetition_grid_returns_runs_distinct_2_and_texts(tiny_and_tok):
    model, tok = tiny_and_tok
    grid = decoding.repetition_grid(model, tok, GRID_PROMPTS, GRID_SETTINGS, 12, seeds=(0, 1), n=3)
    assert list(grid) == list(GRID_SETTINGS)
    for name, r in grid.items():
        k = 2 if GRID_SETTINGS[name].get("do_sample") else 1
        assert r["runs"] == k and r["seeds"] == [0, 1][:k]
        assert [len(x) for x in (r["per_run"], r["texts"], r["new_tokens"])] == [k, k, k]
        assert all(len(row) == len(GRID_PROMPTS) for row in r["per_run"] + r["texts"] + r["new_tokens"])
        assert r["per_prompt"] == pytest.approx([sum(c) / k for c in zip(*r["per_run"])])
        assert r["repetition_rate"] == pytest.approx(sum(r["per_prompt"]) / len(GRID_PROMPTS))
        assert len(r["distinct_2_per_prompt"]) == len(GRID_PROMPTS) and 0 < r["distinct_2"] <= 1
        assert r["distinct_2"] == pytest.approx(sum(r["distinct_2_per_prompt"]) / len(GRID_PROMPTS))
        assert r["new_tokens"] == [[12] * len(GRID_PROMPTS)] * k           # no eos given: every token counts
    assert grid["no-repeat 2"]["distinct_2"] == 1.0                          # the ban leaves no repeated bigram
    # the greedy cell is one batched generate call, its texts decoded and measured row by row
    tok.padding_side = "left"
    enc = tok(GRID_PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    out = decoding.generate(model, enc.input_ids, 12, attention_mask=enc.attention_mask, pad_token_id=tok.pad_token_id)
    new = out[:, enc.input_ids.shape[1]:].tolist()
    assert grid["greedy"]["texts"][0] == [tok.decode(row, skip_special_tokens=True) for row in new]
    assert grid["greedy"]["per_run"][0] == [decoding.repetition_rate(row, 3) for row in new]
    assert grid["greedy"]["distinct_2_per_prompt"] == [decoding.distinct_n(row, 2) for row in new]
    # the same seeds give the same samples
    again = decoding.repetition_grid(model, tok, GRID_PROMPTS, {"top-p 0.9": GRID_SETTINGS["top-p 0.9"]}, 12,
                                     seeds=(0, 1), n=3)
    assert again["top-p 0.9"]["texts"] == grid["top-p 0.9"]["texts"]


def test_repetition_grid_takes_token_ids_and_stops_at_eos(tiny_and_tok):
    model, tok = tiny_and_tok
    as_text = decoding.repetition_grid(model, tok, GRID_PROMPTS, {"greedy": {}}, 10)["greedy"]
    as_ids = decoding.repetition_grid(model, tok, [tok(p, add_special_tokens=False).input_ids for p in GRID_PROMPTS],
                                      {"greedy": {}}, 10)["greedy"]
    assert as_ids["texts"] == as_text["texts"] and as_ids["per_run"] == as_text["per_run"]
    # end at the token greedy writes 4th after the first prompt: that continuation keeps 3 tokens
    tok.padding_side = "left"
    enc = tok(GRID_PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    out = decoding.generate(model, enc.input_ids, 10, attention_mask=enc.attention_mask, pad_token_id=tok.pad_token_id)
    first = out[0, enc.input_ids.shape[1]:].tolist()
    stop = first[3]
    cut = decoding.repetition_grid(model, tok, GRID_PROMPTS, {"greedy": {}}, 10, eos_token_id=[stop])["greedy"]
    assert cut["new_tokens"][0][0] == first.index(stop) <= 3
    assert cut["texts"][0][0] == tok.decode(first[:first.index(stop)], skip_special_tokens=True)
    assert all(n <= 10 for n in cut["new_tokens"][0])
    with pytest.raises(LabkitError, match="prompts must be"):
        decoding.repetition_grid(model, tok, [], {"greedy": {}}, 4)

"""labkit.rag against the libraries it rebuilds, side by side on the same inputs: the chunkers
against langchain-text-splitters (random texts and settings, long unsplittable words), BM25
against rank_bm25 (bit for bit), cosine_top_k against faiss.IndexFlatIP, the prompt template,
length-based example selector, JSON parser and chat buffer string against langchain-core; the
metrics, RRF, InfoNCE, the calculator and the ReAct loop by hand."""
import json
import logging
import math
import random

import faiss
import numpy as np
import pytest
import torch
from langchain_core.example_selectors import LengthBasedExampleSelector
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, get_buffer_string
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.prompts import PromptTemplate as LCPromptTemplate
from langchain_text_splitters import CharacterTextSplitter, RecursiveCharacterTextSplitter
from rank_bm25 import BM25Okapi
from transformers import LlamaConfig, LlamaForCausalLM

from labkit import rag
from labkit.errors import LabkitError


@pytest.fixture(autouse=True)
def _quiet_splitter_warnings():
    """LangChain logs a warning for every chunk longer than chunk_size (long words do that)."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


# ---------------------------------------------------------------------------
# 1. chunking
# ---------------------------------------------------------------------------
def _random_text(seed: int) -> str:
    """Words of 1..40 letters (the long ones cannot be split by spaces) between mixed whitespace."""
    rng = random.Random(seed)
    out = []
    for _ in range(rng.randint(0, 80)):
        out.append("".join(rng.choice("abcxyz") for _ in range(rng.choice([1, 2, 3, 5, 8, 15, 40]))))
        out.append(rng.choice([" ", " ", " ", "  ", "\n", "\n\n", "\n\n\n", " \n ", ". ", "\t"]))
    return "".join(out)


def _settings(seed: int):
    rng = random.Random(1000 + seed)
    size = rng.choice([1, 2, 3, 5, 8, 10, 20, 50, 100, 300])
    return size, rng.choice([0, 1, size // 4, size // 2, size])


@pytest.mark.parametrize("separator", ["\n\n", "\n", " ", "", ". ", "ab"])
def test_fixed_size_chunks_equal_character_text_splitter_on_random_texts(separator):
    for seed in range(120):
        text, (size, overlap) = _random_text(seed), _settings(seed)
        ref = CharacterTextSplitter(separator=separator, chunk_size=size, chunk_overlap=overlap).split_text(text)
        assert rag.fixed_size_chunks(text, size, overlap, separator=separator) == ref, (seed, size, overlap)


@pytest.mark.parametrize("separators", [None, ["\n\n", "\n", " ", ""], ["\n", " "], [" "], ["x", "\n"],
                                        [". ", "\n", ""], ["zzz"]])
def test_recursive_chunks_equal_recursive_character_text_splitter_on_random_texts(separators):
    for seed in range(120):
        text, (size, overlap) = _random_text(seed), _settings(seed)
        ref = RecursiveCharacterTextSplitter(separators=separators, chunk_size=size,
                                             chunk_overlap=overlap).split_text(text)
        assert rag.recursive_chunks(text, size, overlap, separators=separators) == ref, (seed, size, overlap)


def test_chunkers_on_edge_texts():
    for text in ["", "   ", "\n\n\n", "a", "one two three", "x" * 50, "word " * 30]:
        for size, overlap in [(1, 0), (4, 2), (10, 3), (1000, 0)]:
            assert rag.fixed_size_chunks(text, size, overlap, separator=" ") == CharacterTextSplitter(
                separator=" ", chunk_size=size, chunk_overlap=overlap).split_text(text)
            assert rag.recursive_chunks(text, size, overlap) == RecursiveCharacterTextSplitter(
                chunk_size=size, chunk_overlap=overlap).split_text(text)


def test_chunk_overlap_by_hand():
    # "a b c d e" at " ": pieces a..e; 3 characters per chunk ("a b"), the next starts with "b"
    assert rag.fixed_size_chunks("a b c d e", 3, 1, separator=" ") == ["a b", "b c", "c d", "d e"]
    assert rag.fixed_size_chunks("a b c d e", 3, 0, separator=" ") == ["a b", "c d", "e"]
    # the recursive splitter keeps the separator at the start of the next piece: "aaa", " bbb",
    # " ccc". The carried-over tail must fit in the overlap *and* leave room for the next piece
    assert rag.recursive_chunks("aaa bbb ccc", 8, 3) == ["aaa bbb", "ccc"]        # " bbb" > 3
    assert rag.recursive_chunks("aaa bbb ccc", 7, 4) == ["aaa bbb", "ccc"]        # " bbb ccc" > 7
    assert rag.recursive_chunks("aaa bbb ccc", 8, 4) == ["aaa bbb", "bbb ccc"]
    for size, overlap in [(8, 3), (7, 4), (8, 4)]:
        assert rag.recursive_chunks("aaa bbb ccc", size, overlap) == RecursiveCharacterTextSplitter(
            chunk_size=size, chunk_overlap=overlap).split_text("aaa bbb ccc")


def test_long_word_is_kept_whole_and_unstripped_like_langchain():
    # no "" separator: a 10-letter word cannot be cut, and LangChain keeps it *with* its leading space
    text = "bb aaaaaaaaaa cc"
    ours = rag.recursive_chunks(text, 5, 0, separators=[" "])
    assert ours == ["bb", " aaaaaaaaaa", "cc"]
    assert ours == RecursiveCharacterTextSplitter(separators=[" "], chunk_size=5, chunk_overlap=0).split_text(text)
    # with the default separators it is cut into characters instead
    assert all(len(c) <= 5 for c in rag.recursive_chunks(text, 5, 0))


@pytest.mark.parametrize("size,overlap", [(0, 0), (-3, 0), (5, -1), (5, 6), (2.5, 0), (5, True)])
def test_chunk_sizes_are_checked_in_one_line(size, overlap):
    for fn in (rag.fixed_size_chunks, rag.recursive_chunks):
        with pytest.raises(LabkitError) as e:
            fn("some text", size, overlap)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# 2. BM25
# ---------------------------------------------------------------------------
def test_tokenize_lowercase_words():
    assert rag.tokenize("The GPU's 80-GB!  memory_bw") == ["the", "gpu", "s", "80", "gb", "memory_bw"]
    assert rag.tokenize("") == []


def _corpus(seed: int):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(rng.choice([3, 10, 50]))]   # 3 words: most idfs are negative
    docs = [[rng.choice(vocab) for _ in range(rng.randint(0, 30))] for _ in range(rng.randint(1, 40))]
    docs[0].append(vocab[0])                                      # never an all-empty corpus
    queries = [[rng.choice(vocab + ["unseen"]) for _ in range(rng.randint(0, 6))] for _ in range(5)]
    return docs, queries


@pytest.mark.parametrize("k1,b,epsilon", [(1.5, 0.75, 0.25), (1.2, 0.0, 0.25), (2.0, 1.0, 0.0), (0.5, 0.3, 1.0),
                                          (0, 0.75, 0.25)])
def test_bm25_scores_equal_rank_bm25_bit_for_bit(k1, b, epsilon):
    for seed in range(40):
        docs, queries = _corpus(seed)
        ref = BM25Okapi(docs, k1=k1, b=b, epsilon=epsilon)
        ours = rag.BM25(docs, k1=k1, b=b, epsilon=epsilon)
        assert ours.idf == ref.idf and ours.average_idf == ref.average_idf and ours.avgdl == ref.avgdl
        for query in queries:                       # same float64 operations in the same order: exact
            with np.errstate(invalid="ignore"):     # b=1 and an empty document: 0/0, nan in both
                assert np.array_equal(ours.scores(query), ref.get_scores(query), equal_nan=True), (seed, query)


def test_bm25_by_hand_with_the_epsilon_floor():
    docs = [["gpu", "memory"], ["gpu"], ["gpu", "cache", "cache"]]
    bm = rag.BM25(docs, k1=1.5, b=0.75, epsilon=0.25)
    idf_gpu = math.log(3 - 3 + 0.5) - math.log(3 + 0.5)          # in every document: negative
    idf_rare = math.log(3 - 1 + 0.5) - math.log(1 + 0.5)
    floor = 0.25 * (idf_gpu + 2 * idf_rare) / 3
    assert bm.idf["gpu"] == pytest.approx(floor) and bm.idf["cache"] == pytest.approx(idf_rare)
    avgdl = 6 / 3
    tf, dl = 2, 3
    expected = idf_rare * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * dl / avgdl))
    assert bm.scores(["cache"]).tolist() == pytest.approx([0, 0, expected])
    assert bm.scores(["cache", "cache"]).tolist() == pytest.approx([0, 0, 2 * expected])   # repeats count
    assert bm.scores(["unseen"]).tolist() == [0, 0, 0]


def test_bm25_top_k_and_ties():
    texts = ["the cat sat", "a dog ran", "the cat ate the cat food", "a dog ran", "the sun is hot", "rain falls",
             "gpu memory"]                 # "cat" in 2 of 7 documents: a positive idf
    docs = [rag.tokenize(t) for t in texts]
    bm = rag.BM25(docs)
    assert bm.top_k("cat", 2) == [2, 0]
    assert bm.top_k(["cat"], 2) == bm.top_k("CAT!", 2)
    scores = bm.scores(["dog"])
    assert scores[1] == scores[3] > 0
    # duplicates tie: lower id first; rank_bm25's get_top_n reverses an argsort (higher id first here)
    assert bm.top_k("dog", 2) == [1, 3]
    assert BM25Okapi(docs).get_top_n(["dog"], list(range(7)), n=2) == [3, 1]


@pytest.mark.parametrize("bad", [[], "a text", [["a"], "b"], [[], []]])
def test_bm25_bad_corpus_is_one_line(bad):
    with pytest.raises(LabkitError) as e:
        rag.BM25(bad)
    assert "\n" not in str(e.value)


def test_bm25_bad_query_and_k_are_one_line():
    bm = rag.BM25([["a", "b"], ["b"]])
    for call in (lambda: bm.scores("a b"), lambda: bm.top_k("a", 3), lambda: bm.top_k("a", 0)):
        with pytest.raises(LabkitError):
            call()


# ---------------------------------------------------------------------------
# 3. dense retrieval
# ---------------------------------------------------------------------------
def test_mean_pool_by_hand_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(rag.mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    assert torch.equal(rag.mean_pool(hidden, torch.zeros(2, 3)), torch.zeros(2, 2))   # no tokens: zeros


@pytest.fixture(scope="module")
def tiny_llama():
    from labkit.tokenizer import load_tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval(), load_tokenizer()


TEXTS = ["The KV cache grows with every token.", "LoRA trains two small matrices.", "hi",
         "Gradient checkpointing recomputes activations during the backward pass, trading compute for memory."]


def test_embed_is_the_normalised_mean_of_last_hidden_states(tiny_llama):
    model, tok = tiny_llama
    ours = rag.embed(model, tok, TEXTS, batch_size=3)
    assert ours.shape == (4, 32) and ours.dtype == torch.float32
    with torch.no_grad():                 # each text alone: no padding at all
        ref = torch.stack([model.model(input_ids=torch.tensor([tok(t)["input_ids"]])).last_hidden_state[0].mean(0)
                           for t in TEXTS])
    # batched vs one at a time: different matmul shapes, so float rounding differs (~1e-7)
    assert torch.allclose(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(4))
    assert torch.allclose(rag.embed(model, tok, TEXTS, batch_size=1), ours, atol=1e-5)
    assert model.training is False


def test_embed_bi_encoder_and_errors(tiny_llama):
    _, tok = tiny_llama
    torch.manual_seed(0)
    enc = rag.BiEncoder(vocab_size=2048, dim=16, n_layers=1, n_heads=2)
    enc.train()
    vecs = rag.embed(enc, tok, TEXTS, batch_size=2)
    assert vecs.shape == (4, 16) and enc.training      # training mode restored
    one = torch.stack([rag.embed(enc, tok, [t])[0] for t in TEXTS])
    assert torch.allclose(vecs, one, atol=1e-5)        # padding does not change a text's vector
    for bad in ("a single string", [], ["ok", 3]):
        with pytest.raises(LabkitError):
            rag.embed(enc, tok, bad)


def _faiss_search(queries: np.ndarray, docs: np.ndarray, k: int):
    q, d = queries.copy(), docs.copy()
    faiss.normalize_L2(q)
    faiss.normalize_L2(d)
    index = faiss.IndexFlatIP(d.shape[1])
    index.add(d)
    return index.search(q, k)


@pytest.mark.parametrize("n_docs,n_queries,dim,k", [(10, 1, 8, 1), (50, 5, 32, 5), (300, 25, 96, 10),
                                                    (300, 30, 16, 300), (64, 3, 64, 64)])
def test_cosine_top_k_equals_faiss_index_flat_ip(n_docs, n_queries, dim, k):
    # 25+ queries takes faiss's BLAS path, fewer its SIMD loop: both must agree
    for seed in range(4):
        rng = np.random.default_rng(seed)
        scale = rng.uniform(0.1, 10, (n_docs, 1)).astype("float32")      # unnormalised on purpose
        docs = rng.standard_normal((n_docs, dim)).astype("float32") * scale
        queries = rng.standard_normal((n_queries, dim)).astype("float32")
        D, I = _faiss_search(queries, docs, k)
        scores, ids = rag.cosine_top_k(queries, docs, k, return_scores=True)
        assert np.array_equal(ids.numpy(), I)                       # no near-ties in random data: exact
        # dot products summed in another order than faiss's kernels: equal to float32 rounding
        assert np.allclose(scores.numpy(), D, atol=1e-6)
        assert torch.equal(rag.cosine_top_k(torch.from_numpy(queries), torch.from_numpy(docs), k), ids)


def test_cosine_top_k_ties_lower_id_first_where_faiss_lists_higher_first():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((5, 8)).astype("float32")
    docs = np.concatenate([base, base])          # doc i and i + 5 are duplicates
    query = rng.standard_normal((1, 8)).astype("float32")
    D, I = _faiss_search(query, docs, 4)
    scores, ids = rag.cosine_top_k(query, docs, 4, return_scores=True)
    assert np.allclose(scores.numpy(), D, atol=1e-6)
    best, second = int(ids[0, 0]), int(ids[0, 2])
    assert ids.tolist() == [[best, best + 5, second, second + 5]]
    assert I.tolist() == [[best + 5, best, second + 5, second]]       # faiss: the same pairs, reversed


def test_cosine_top_k_errors_are_one_line():
    docs = np.ones((4, 3), dtype="float32")
    for queries, k in [(np.ones((2, 5)), 1), (np.ones(3), 1), (np.ones((1, 3)), 5), (np.ones((1, 3)), 0)]:
        with pytest.raises(LabkitError) as e:
            rag.cosine_top_k(queries, docs, k)
        assert "\n" not in str(e.value)


def test_reciprocal_rank_fusion_by_hand():
    bm25, dense = [1, 2, 3], [3, 1, 4]
    # 1: 1/61 + 1/62, 3: 1/63 + 1/61, 2: 1/62, 4: 1/63
    assert rag.reciprocal_rank_fusion([bm25, dense]) == [1, 3, 2, 4]
    # k=0: first places dominate -- 1: 1 + 1/2, 3: 1/3 + 1, 2: 1/2, 4: 1/3
    assert rag.reciprocal_rank_fusion([bm25, dense], k=0) == [1, 3, 2, 4]
    assert rag.reciprocal_rank_fusion([[5, 6]]) == [5, 6]
    assert rag.reciprocal_rank_fusion([[7, 8], [8, 7]]) == [7, 8]                       # tie: first met
    assert rag.reciprocal_rank_fusion([torch.tensor([2, 0]), np.array([0, 1])]) == [0, 2, 1]   # tensors work
    for bad in ([], [[1, 1]], ["abc"]):
        with pytest.raises(LabkitError):
            rag.reciprocal_rank_fusion(bad)


def test_recall_at_k_and_mrr_by_hand():
    retrieved = [[3, 1, 2], [2, 5, 7], [9, 8, 6]]
    relevant = [1, {7, 5}, 4]
    assert rag.recall_at_k(retrieved, relevant, k=1) == 0.0
    assert rag.recall_at_k(retrieved, relevant, k=2) == pytest.approx((1 + 0.5 + 0) / 3)
    assert rag.recall_at_k(retrieved, relevant, k=3) == pytest.approx((1 + 1 + 0) / 3)
    assert rag.mrr(retrieved, relevant) == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert rag.mrr(retrieved, relevant, k=1) == 0.0
    assert rag.recall_at_k([3, 1, 2], {1, 9}, k=2) == 0.5                 # one query, flat ranking
    assert rag.mrr([3, 1, 2], 2) == pytest.approx(1 / 3)
    assert rag.mrr(torch.tensor([[3, 1], [2, 5]]), torch.tensor([1, 7])) == 0.25     # tensors of ids
    for call in (lambda: rag.recall_at_k(retrieved, [1, 2], 1), lambda: rag.recall_at_k([[1]], [set()], 1),
                 lambda: rag.recall_at_k([], [], 1), lambda: rag.mrr([[1]], [1], k=0)):
        with pytest.raises(LabkitError):
            call()


def test_contrastive_loss_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])                 # normalised inside: [1, 0], [0, 1]
    d = torch.tensor([[3.0, 4.0], [0.0, 1.0]])                 # [0.6, 0.8], [0, 1]
    t = 0.5
    # logits = cos / t: row 0 [0.6, 0] / t, row 1 [0.8, 1] / t; the diagonal is the positive
    row0 = -(0.6 / t) + math.log(math.exp(0.6 / t) + math.exp(0.0))
    row1 = -(1.0 / t) + math.log(math.exp(0.8 / t) + math.exp(1.0 / t))
    assert rag.contrastive_loss(q, d, temperature=t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # matching rows far apart from the others at low temperature: loss -> 0
    eye = torch.eye(4)
    assert rag.contrastive_loss(eye, eye, temperature=0.01).item() < 1e-6
    with pytest.raises(LabkitError):
        rag.contrastive_loss(q, d[:1], 0.1)
    with pytest.raises(LabkitError):
        rag.contrastive_loss(q, d, 0)


def test_bi_encoder_unit_vectors_padding_invariant_and_trainable():
    torch.manual_seed(0)
    enc = rag.BiEncoder(vocab_size=50, dim=16, n_layers=1, n_heads=4, max_len=12).eval()
    ids = torch.randint(1, 50, (3, 6))
    out = enc(ids, torch.ones_like(ids))
    assert out.shape == (3, 16) and torch.allclose(out.norm(dim=-1), torch.ones(3))
    padded = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(3, 6), torch.zeros(3, 4)], dim=1).long()
    assert torch.allclose(enc(padded, mask), out, atol=1e-6)          # pads are masked and not pooled
    enc.train()
    loss = rag.contrastive_loss(enc(ids[:2]), enc(ids[1:]), temperature=0.1)
    loss.backward()
    assert all(p.grad is not None for p in enc.parameters())
    with pytest.raises(LabkitError):
        enc(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(LabkitError):
        rag.BiEncoder(vocab_size=50, dim=10, n_heads=4)
    assert rag.BiEncoder(vocab_size=50, dim=8, n_layers=0)(ids).shape == (3, 8)   # bag of words


# ---------------------------------------------------------------------------
# 4. the LangChain pieces
# ---------------------------------------------------------------------------
TEMPLATES = [
    ("Q: {question}\nA:", {"question": "What is LoRA?"}),
    ("{b} then {a} then {b}", {"a": 1, "b": 2.5}),
    ("Literal {{braces}} and {x}", {"x": "y"}),
    ("JSON: {{\"answer\": \"{answer}\"}}", {"answer": "42"}),
    ("{x!r} | {y:>6} | {z:.3f}", {"x": "quoted", "y": "right", "z": math.pi}),
    ("no variables at all", {}),
    ("Ünïcödé {wörd} ✓", {"wörd": "ok"}),
    ("{context}\n\nQuestion: {question}", {"context": "doc {not a field}", "question": "q", "extra": "ignored"}),
]


@pytest.mark.parametrize("template,variables", TEMPLATES)
def test_prompt_template_equals_langchain(template, variables):
    ref = LCPromptTemplate.from_template(template)
    ours = rag.PromptTemplate(template)
    assert ours.input_variables == ref.input_variables
    assert ours.format(**variables) == ref.format(**variables)


@pytest.mark.parametrize("template", ["{x.attr}", "{x[0]}", "{}", "{0}", "{x:{y}}", "unclosed {x", "stray }"])
def test_prompt_template_refuses_what_langchain_refuses(template):
    with pytest.raises((ValueError, IndexError)):   # LangChain: ValueError, or IndexError for "{}"
        LCPromptTemplate.from_template(template).format(x=1, y=2)
    with pytest.raises(LabkitError) as e:
        rag.PromptTemplate(template)
    assert "\n" not in str(e.value)


def test_prompt_template_missing_variable_is_one_line():
    with pytest.raises(KeyError):
        LCPromptTemplate.from_template("{a} {b}").format(a=1)
    with pytest.raises(LabkitError) as e:
        rag.PromptTemplate("{a} {b}").format(a=1)
    assert "'b'" in str(e.value) and "\n" not in str(e.value)


def _examples(seed: int):
    rng = random.Random(seed)
    words = ["happy", "sad", "tall", "short", "a very long answer indeed", "x\ny", "two  spaces"]
    return [{"input": rng.choice(words), "output": rng.choice(words)} for _ in range(rng.randint(0, 8))]


@pytest.mark.parametrize("length_fn", [None, len])
def test_length_example_selector_equals_langchain(length_fn):
    template = "Input: {input}\nOutput: {output}"
    for seed in range(40):
        examples = _examples(seed)
        for max_length in [0, 1, 4, 9, 20, 37, 60, 500]:
            kw = {} if length_fn is None else {"get_text_length": length_fn}
            ref = LengthBasedExampleSelector(examples=list(examples), max_length=max_length,
                                             example_prompt=LCPromptTemplate.from_template(template), **kw)
            ours = rag.LengthExampleSelector(examples, rag.PromptTemplate(template), max_length=max_length,
                                             get_text_length=length_fn)
            assert ours.example_text_lengths == ref.example_text_lengths
            for new in [{"input": "big"}, {"input": "a b c d e f", "output": ""}, {}]:
                assert ours.select_examples(new) == ref.select_examples(new), (seed, max_length, new)
            ours.add_example({"input": "new one", "output": "added"})
            ref.add_example({"input": "new one", "output": "added"})
            assert ours.select_examples({"input": "big"}) == ref.select_examples({"input": "big"})


AGREE = ['{"a": 1}', '  {"a": [1, 2, {"b": null}]}\n', "[1, 2, 3]", '"hi"', "42", "true", "null",
         '```json\n{"a": 1}\n```', '```\n{"a": 1}\n```', '`{"a": 1}`', '```json\n[{"a": 1}, {"a": 2}]\n```',
         'Sure! Here it is:\n```json\n{"a": 1, "b": "x"}\n```\nHope this helps.',
         '{"text": "line one\nline two"}', '{"a": 1} and then some words', '{"answer": "Paris", "confidence": 0.9}']


@pytest.mark.parametrize("text", AGREE)
def test_parse_json_output_equals_langchain_on_valid_and_fenced(text):
    assert rag.parse_json_output(text) == JsonOutputParser().parse(text)


@pytest.mark.parametrize("text", ["not json at all", "", "The answer is {\"a\": 1}", "{'a': 1}",
                                  '```json\n{"a": 1,}\n```'])
def test_parse_json_output_fails_where_langchain_fails(text):
    with pytest.raises(OutputParserException):
        JsonOutputParser().parse(text)
    with pytest.raises(LabkitError) as e:
        rag.parse_json_output(text)
    assert "\n" not in str(e.value)
    assert rag.parse_json_output(text, raise_on_error=False) is None


def test_parse_json_output_does_not_repair_broken_json():
    # LangChain closes what a truncated reply left open, and returns None for mismatched brackets
    assert JsonOutputParser().parse('{"a": 1, "b": [2') == {"a": 1, "b": [2]}
    assert JsonOutputParser().parse('{"a": 1]}') is None
    for text in ['{"a": 1, "b": [2', '{"a": 1]}']:
        with pytest.raises(LabkitError):
            rag.parse_json_output(text)
        assert rag.parse_json_output(text, raise_on_error=False) is None


def test_buffer_memory_keeps_messages_and_counts_tokens_per_turn():
    mem = rag.BufferMemory()
    mem.add_system_message("You are terse.")                 # 3 words
    mem.add_user_message("What is a KV cache?")              # 5
    mem.add_ai_message("Stored keys and values.")            # 4
    mem.add_user_message("Why?")                             # 1
    mem.add_ai_message("To avoid recomputing them.")         # 4
    assert mem.message_tokens == [3, 5, 4, 1, 4]
    assert mem.tokens_per_turn == [12, 17] and mem.tokens() == 17
    assert [m["content"] for m in mem.messages][1] == "What is a KV cache?"
    lc = [SystemMessage("You are terse."), HumanMessage("What is a KV cache?"), AIMessage("Stored keys and values."),
          HumanMessage("Why?"), AIMessage("To avoid recomputing them.")]
    assert mem.buffer_string() == get_buffer_string(lc)
    assert mem.buffer_string("User", "Bot") == get_buffer_string(lc, human_prefix="User", ai_prefix="Bot")
    chars = rag.BufferMemory(count_tokens=len)
    chars.add_user_message("abc")
    chars.add_ai_message("de")
    assert chars.tokens_per_turn == [5]
    mem.clear()
    assert mem.messages == [] and mem.tokens() == 0
    with pytest.raises(LabkitError):
        mem.add_user_message(None)


@pytest.mark.parametrize("expression", ["1 + 2", "(3 + 4) * 2.5", "-5 + +3", "10 / 4", "2 * (3 - (4 / 8))",
                                        "  7  ", "1e3 - 0.5", "((((1))))", "6 / 3"])
def test_calculator_equals_python_arithmetic(expression):
    assert rag.calculator(expression) == eval(expression)   # the test's own literals: safe here


@pytest.mark.parametrize("expression", ["__import__('os').system('echo hi')", "2 ** 10", "a + 1", "abs(-1)",
                                        "1 if 1 else 2", "[1, 2]", "True + 1", "1 // 2", "5 % 3", "1 / 0",
                                        "", "1 +", "'a' * 3", "(1).__class__", "1" * 201])
def test_calculator_refuses_anything_but_arithmetic(expression):
    with pytest.raises(LabkitError) as e:
        rag.calculator(expression)
    assert "\n" not in str(e.value)


class _Script:
    """A fake model: returns the scripted replies in turn and records each prompt it saw."""

    def __init__(self, *replies):
        self.replies, self.prompts = list(replies), []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        return self.replies.pop(0)


def test_react_calls_the_calculator_then_answers():
    fake = _Script(" I need to multiply.\nAction: calculator\nAction Input: 12 * (3 + 4)\nObservation: 99 (invented)",
                   " I now know the answer.\nFinal Answer: 84")
    out = rag.react(fake, "What is 12 times 7?", {"calculator": rag.calculator}, max_steps=4)
    assert out["answer"] == "84"
    assert [s["observation"] for s in out["steps"]] == ["84", None]
    assert out["steps"][0]["action"] == "calculator" and out["steps"][0]["input"] == "12 * (3 + 4)"
    assert "Question: What is 12 times 7?" in fake.prompts[0] and "calculator:" in fake.prompts[0]
    assert fake.prompts[1].endswith("Action Input: 12 * (3 + 4)\nObservation: 84\nThought:")
    assert "invented" not in fake.prompts[1]                  # the model's own observation was cut
    assert out["prompt"].endswith("Final Answer: 84")


def test_react_turns_mistakes_into_observations_and_stops_at_max_steps():
    fake = _Script("Action: search\nAction Input: cats", "I will just talk.",
                   "Action: calculator\nAction Input: __import__('os')", "Action: calculator\nAction Input: \"2 + 2\"")
    out = rag.react(fake, "q?", {"calculator": rag.calculator}, max_steps=4)
    assert out["answer"] is None and len(out["steps"]) == 4
    obs = [s["observation"] for s in out["steps"]]
    assert obs[0].startswith("unknown tool 'search'") and obs[1].startswith("Invalid format")
    assert obs[2].startswith("error: the calculator accepts") and obs[3] == "4"
    with pytest.raises(LabkitError):
        rag.react(lambda p: 3, "q?", {"calculator": rag.calculator})
    with pytest.raises(LabkitError):
        rag.react(fake, "q?", {}, max_steps=1)


# ---------------------------------------------------------------------------
# 5. similarity selector, summary memory, the lab's QA task, the CLI
# ---------------------------------------------------------------------------
class _HashEmbeddings:
    """A deterministic bag-of-words embedding: what matters is that both sides use the same one."""

    def __call__(self, texts):
        out = np.zeros((len(texts), 32), dtype="float32")
        for i, t in enumerate(texts):
            for w in rag.tokenize(t):
                out[i, sum(map(ord, w)) % 32] += 1.0 + len(w) / 10
            out[i, 31] += 0.01 * (i + 1)
        return out


def test_similarity_example_selector_equals_langchain():
    from langchain_core.embeddings import Embeddings
    from langchain_core.example_selectors import SemanticSimilarityExampleSelector
    from langchain_core.vectorstores import InMemoryVectorStore

    fn = _HashEmbeddings()

    class LCEmb(Embeddings):
        def embed_documents(self, texts):
            return fn(texts).tolist()

        def embed_query(self, text):
            return fn([text])[0].tolist()

    examples = [{"input": f"{a} {b}", "output": f"{b} {a}"} for a, b in
                [("red", "apple"), ("green", "pear"), ("blue", "sea"), ("red", "rose"), ("dark", "night"),
                 ("river", "flows"), ("capital", "city"), ("pump", "valve")]]
    for k in (1, 3, 5):
        for keys in (None, ["input"]):
            ref = SemanticSimilarityExampleSelector.from_examples(examples, LCEmb(), InMemoryVectorStore, k=k,
                                                                  input_keys=keys)
            ours = rag.SimilarityExampleSelector(examples, fn, k=k, input_keys=keys)
            for new in ({"input": "red fruit"}, {"input": "city by the river"}, {"input": "night sea"}):
                assert ours.select_examples(new) == ref.select_examples(new)
    with pytest.raises(LabkitError):
        rag.SimilarityExampleSelector([], fn)


def test_summary_memory_stays_bounded_where_the_buffer_grows():
    calls = []

    def summarize(summary, lines):
        calls.append(lines)
        return "talked about " + str(len(calls))

    buf, summ = rag.BufferMemory(), rag.SummaryMemory(summarize, keep_last=2)
    for t in range(6):
        for m in (buf, summ):
            m.add_user_message(f"question number {t} about the weather")
            m.add_ai_message(f"answer number {t} it is sunny")
    assert buf.tokens_per_turn == [12 * (t + 1) for t in range(6)]
    assert summ.tokens_per_turn[0] == 12 and max(summ.tokens_per_turn) <= 12 + 3
    assert summ.summary_calls == 5 and len(summ.messages) == 2
    assert calls[0] == "Human: question number 0 about the weather\nAI: answer number 0 it is sunny"
    assert summ.buffer_string().startswith("Summary of the conversation so far: talked about 5\nHuman:")
    with pytest.raises(LabkitError):
        rag.SummaryMemory("not a function")


def test_answer_match_and_refusal():
    assert rag.answer_match("The capital of Veloria is Marden.", "Marden")
    assert rag.answer_match("marden", "Marden") and not rag.answer_match("Mardens", "Marden")
    assert rag.answer_match("It shows code E12.", "E12") and not rag.answer_match("E123", "E12")
    for reply in ("I don't know.", "The context does not say.", "This is not mentioned in the text.",
                  "I cannot answer that from the context.", "Unknown"):
        assert rag.is_refusal(reply), reply
    for reply in ("Marden.", "The pump is made by Halvik.", "It knows no bounds"):
        assert not rag.is_refusal(reply), reply


def test_lab_questions_have_answer_bearing_chunks_and_absent_ones_none():
    docs = rag.lab_corpus(20, 20)
    assert [d["source"] for d in docs].count("real") == 8
    chunks = [c for d in docs for c in rag.recursive_chunks(d["text"], 300, 50)]
    present, absent = rag.qa_set(chunks, 10), rag.qa_set(chunks, 10, present=False)
    assert len(present) == 10 and len(absent) == 10
    for q in present:
        assert q["relevant"] and all(q["answer"].lower() in chunks[i].lower() for i in q["relevant"])
        assert q["entity"] in q["question"] and q["question"].endswith("?")
    assert all(not q["relevant"] for q in absent)
    assert {q["relation"] for q in present} & {"capital", "language", "river", "colour", "job", "born"}
    assert {q["relation"] for q in present} & {"lubricant", "weak_part", "maker", "overheat_code"}
    pairs = rag.training_pairs(chunks, exclude={q["entity"] for q in present})
    assert pairs and not any(q["entity"] in p[0] for q in present for p in pairs)
    with pytest.raises(LabkitError):
        rag.fact_question("x", "height")


def test_hit_at_k():
    assert rag.hit_at_k([[3, 1, 2], [2, 5, 7]], [{1, 9}, {4}], k=2) == 0.5
    assert rag.recall_at_k([[3, 1, 2]], [{1, 9}], k=2) == 0.5 and rag.hit_at_k([[3, 1, 2]], [{1, 9}], k=2) == 1.0


def test_train_bi_encoder_lowers_the_loss():
    class Tok:
        pad_token_id = 0

        def __call__(self, text):
            return {"input_ids": [1 + sum(map(ord, w)) % 40 for w in text.split()]}

    pairs = [(f"who is w{i}", f"w{i} is person {i}") for i in range(16)]
    torch.manual_seed(0)
    enc = rag.BiEncoder(vocab_size=41, dim=16, n_layers=0, max_len=16)
    losses = rag.train_bi_encoder(enc, Tok(), pairs, steps=60, batch_size=8, lr=1e-2)
    assert len(losses) == 60 and sum(losses[-10:]) < sum(losses[:10])
    with pytest.raises(LabkitError):
        rag.train_bi_encoder(enc, Tok(), pairs[:1], steps=1)


def test_cli_rag_table_and_one_line_errors(capsys):
    from labkit.__main__ import main

    assert main(["rag", "--profile", "smoke", "--no-dense", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"BM25", "bi-encoder, untrained", "bi-encoder, trained"} <= set(out["table"])
    assert 0 <= out["table"]["BM25"]["recall@5"] <= 1 and out["questions"] > 0
    for bad in (["--k", "0"], ["--chunk-size", "10", "--overlap", "20"], ["--profile", "huge"], ["--k", "x"]):
        assert main(["rag", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err

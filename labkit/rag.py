"""Retrieval-augmented generation and the LangChain pieces, from scratch.

Built in lab 15 ("Retrieval and LangChain from scratch"). Each piece is small enough to read
in one sitting, and each is checked in ``tests/test_rag.py`` against the library a learner
would otherwise import:

===================================  ==========================================================
labkit                               the library it equals
===================================  ==========================================================
``fixed_size_chunks``                ``langchain_text_splitters.CharacterTextSplitter``
``recursive_chunks``                 ``RecursiveCharacterTextSplitter(...).split_text``
``BM25(...).scores``                 ``rank_bm25.BM25Okapi(...).get_scores`` (bit for bit)
``cosine_top_k``                     ``faiss.IndexFlatIP`` search on L2-normalised float32
``PromptTemplate(t).format``         ``langchain_core.prompts.PromptTemplate.from_template``
``LengthExampleSelector``            ``langchain_core.example_selectors.LengthBasedExampleSelector``
``parse_json_output``                ``langchain_core.output_parsers.JsonOutputParser().parse``
``BufferMemory.buffer_string``       ``langchain_core.messages.get_buffer_string``
===================================  ==========================================================

**Chunking** (section 1). A splitter cuts the text at a separator, then *merges* the pieces
greedily into chunks of at most ``chunk_size`` characters; when a chunk is full the next one
starts with the last pieces of the previous one that fit in ``chunk_overlap`` (so the text
on either side of a boundary is found together in one chunk). The recursive splitter tries ``"\\n\\n"``
(paragraphs) first and re-splits only the pieces still too long with ``"\\n"``, then ``" "``,
then ``""`` (characters); it keeps each separator at the start of the piece after it. A piece
that no separator can cut (a long word when the list has no ``""``) is kept whole: chunks can
be longer than ``chunk_size``.

**Sparse retrieval** (section 2): BM25 (Robertson et al.; Okapi weighting with ``k1``, ``b``)
scores a document by the query words it contains, weighted by their rarity (idf) and damped
by term frequency and document length. rank_bm25's variant floors a negative idf (a word in
more than half the documents) at ``epsilon`` x the mean idf.

**Dense retrieval** (section 3): embed queries and documents as unit vectors (mean of a
model's last hidden states, or a small `BiEncoder` trained with in-batch negatives, the
InfoNCE loss of van den Oord et al. 2018 / DPR, Karpukhin et al. 2020), then rank by cosine
similarity = inner product of unit vectors. **Hybrid search** fuses the two rankings with
reciprocal-rank fusion (Cormack, Clarke & Buettcher 2009): ``score(d) = sum 1 / (k + rank)``.

**The LangChain pieces** (section 4): a prompt template, a few-shot example selector by length,
a JSON output parser, a chat buffer that counts the tokens it carries, and a ReAct loop
(Yao et al. 2023) with a calculator tool that parses arithmetic with `ast` instead of `eval`.

Ties: the top-k searches break exact ties by the lower id first (a stable sort). faiss and
rank_bm25 do not (see `cosine_top_k` and `BM25.top_k`); exact ties come from duplicate documents.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections import Counter
from string import Formatter

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import LabkitError

__all__ = ["BM25", "BiEncoder", "BufferMemory", "LengthExampleSelector", "PromptTemplate", "QUESTIONS",
           "REACT_TEMPLATE", "SimilarityExampleSelector", "SummaryMemory", "answer_bearing", "answer_match",
           "calculator", "contrastive_loss", "cosine_top_k", "embed", "fact_question", "fixed_size_chunks",
           "hit_at_k", "is_refusal", "lab_corpus", "main", "mean_pool", "mrr", "parse_json_output", "qa_set",
           "react", "recall_at_k", "reciprocal_rank_fusion", "recursive_chunks", "retrieval_table", "tokenize",
           "train_bi_encoder", "training_pairs"]


# ---------------------------------------------------------------------------
# checks: one line that says what to pass
# ---------------------------------------------------------------------------
def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LabkitError(f"{name} must be a positive integer, got {value!r}")
    return value


def _number(value, name: str, low: float = -math.inf, positive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < low or (positive and value <= 0):
        need = "a positive number" if positive else f"a number >= {low}"
        raise LabkitError(f"{name} must be {need}, got {value!r}")
    return value


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_text(text, name: str = "text") -> None:
    if not isinstance(text, str):
        raise LabkitError(f"{name} must be a str, got {type(text).__name__}")


# ---------------------------------------------------------------------------
# 1. chunking
# ---------------------------------------------------------------------------
def _check_chunk_sizes(chunk_size, chunk_overlap) -> None:
    _positive_int(chunk_size, "chunk_size")
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or chunk_overlap < 0:
        raise LabkitError(f"chunk_overlap must be an integer >= 0, got {chunk_overlap!r}")
    if chunk_overlap > chunk_size:
        raise LabkitError(f"chunk_overlap ({chunk_overlap}) is larger than chunk_size ({chunk_size}); "
                          "pass an overlap smaller than the chunk")


def _merge(pieces: list[str], separator: str, chunk_size: int, chunk_overlap: int) -> list[str]:
    """Greedily join pieces (with ``separator`` between them) into chunks of <= chunk_size.

    ``window`` is the chunk being built and ``total`` its length. When the next piece does not
    fit, the window is emitted, then its first pieces are dropped until what is left is at most
    ``chunk_overlap`` long *and* leaves room for the next piece: that tail starts the next chunk.
    Each chunk is stripped of surrounding whitespace; empty chunks are dropped.
    """
    sep = len(separator)
    chunks, window, total = [], [], 0
    for piece in pieces:
        n = len(piece)
        if window and total + n + sep > chunk_size:
            chunk = separator.join(window).strip()
            if chunk:
                chunks.append(chunk)
            while total > chunk_overlap or (total > 0 and total + n + (sep if window else 0) > chunk_size):
                total -= len(window[0]) + (sep if len(window) > 1 else 0)
                window.pop(0)
        window.append(piece)
        total += n + (sep if len(window) > 1 else 0)
    chunk = separator.join(window).strip()
    if chunk:
        chunks.append(chunk)
    return chunks


def fixed_size_chunks(text: str, chunk_size: int, chunk_overlap: int, separator: str = "\n\n") -> list[str]:
    """Split ``text`` at ``separator`` and merge the pieces into chunks of at most ``chunk_size``.

    Equals ``CharacterTextSplitter(separator=separator, chunk_size=..., chunk_overlap=...)
    .split_text(text)`` (its defaults: the separator is a literal, not kept in the pieces but put
    back between them; chunks stripped). ``separator=""`` splits into characters. A piece longer
    than ``chunk_size`` becomes a chunk of its own, longer than asked.
    """
    _check_text(text)
    _check_text(separator, "separator")
    _check_chunk_sizes(chunk_size, chunk_overlap)
    pieces = text.split(separator) if separator else list(text)
    return _merge([p for p in pieces if p], separator, chunk_size, chunk_overlap)


def _split_keeping_separator(text: str, separator: str) -> list[str]:
    """``"a b c"`` at ``" "`` -> ``["a", " b", " c"]``: each separator starts the piece after it."""
    if not separator:
        return list(text)
    first, *rest = text.split(separator)
    return [p for p in [first] + [separator + p for p in rest] if p]


def recursive_chunks(text: str, chunk_size: int, chunk_overlap: int, separators: list[str] | None = None) -> list[str]:
    """Split at the first separator that occurs in ``text``; re-split too-long pieces with the rest.

    Equals ``RecursiveCharacterTextSplitter(separators=separators, chunk_size=...,
    chunk_overlap=...).split_text(text)`` with its defaults: separators ``["\\n\\n", "\\n", " ",
    ""]`` taken literally, each kept at the start of the piece that follows it (so pieces are
    merged with nothing between them), chunks stripped. A piece of ``chunk_size`` or more that
    no later separator can cut is emitted as it is -- *not* stripped, as LangChain does.
    """
    _check_text(text)
    _check_chunk_sizes(chunk_size, chunk_overlap)
    if separators is not None and (not isinstance(separators, (list, tuple)) or
                                   not all(isinstance(s, str) for s in separators)):
        raise LabkitError(f"separators must be a list of str (or None for paragraphs, lines, words, "
                          f"characters), got {separators!r}")
    return _recursive(text, list(separators or ["\n\n", "\n", " ", ""]), chunk_size, chunk_overlap)


def _recursive(text: str, separators: list[str], chunk_size: int, chunk_overlap: int) -> list[str]:
    separator, rest = separators[-1], []
    for i, s in enumerate(separators):
        if s == "":                      # characters: always possible, nothing finer to try
            separator = s
            break
        if s in text:
            separator, rest = s, separators[i + 1:]
            break
    chunks, short = [], []
    for piece in _split_keeping_separator(text, separator):
        if len(piece) < chunk_size:
            short.append(piece)
            continue
        if short:                        # flush the short pieces gathered so far
            chunks += _merge(short, "", chunk_size, chunk_overlap)
            short = []
        if rest:
            chunks += _recursive(piece, rest, chunk_size, chunk_overlap)
        else:
            chunks.append(piece)         # nothing left to cut with: kept whole (and unstripped)
    if short:
        chunks += _merge(short, "", chunk_size, chunk_overlap)
    return chunks


# ---------------------------------------------------------------------------
# 2. sparse retrieval: BM25
# ---------------------------------------------------------------------------
def tokenize(text: str) -> list[str]:
    """Lowercase words: runs of letters, digits and ``_`` (``re.findall(r"\\w+", text.lower())``).

    ``"The GPU's 80-GB!"`` -> ``["the", "gpu", "s", "80", "gb"]``. Punctuation is dropped, so
    "GPU." and "gpu" are the same term. Good enough for BM25 on English lab data; a real system
    would also stem ("runs" -> "run") and drop stop words.
    """
    _check_text(text)
    return re.findall(r"\w+", text.lower())


def _stable_top(scores, k: int) -> list[int]:
    """Ids of the k largest scores, ties by the lower id first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])   # sorted() is stable
    return order[:k]


class BM25:
    """Okapi BM25 over a tokenised corpus, the ``rank_bm25.BM25Okapi`` variant.

    ``score(q, d) = sum over query words w of idf(w) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))``
    with ``tf`` the count of ``w`` in ``d`` and ``idf(w) = log(N - df + 0.5) - log(df + 0.5)``
    (``df``: documents containing ``w``; a repeated query word counts each time). A word in more
    than half the documents has a negative idf; it is replaced by ``epsilon`` x the mean idf of
    the vocabulary (mean taken before the replacement). ``k1`` caps how much repeating a word
    helps; ``b`` is how strongly long documents are penalised (0: not at all, 1: fully).
    """

    def __init__(self, corpus_tokens, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        if not isinstance(corpus_tokens, (list, tuple)) or not corpus_tokens or not all(
                isinstance(doc, (list, tuple)) for doc in corpus_tokens):
            raise LabkitError("corpus_tokens must be a non-empty list of token lists, e.g. "
                              "[rag.tokenize(doc) for doc in docs]")
        self.k1 = _number(k1, "k1", low=0)
        self.b = _number(b, "b", low=0)
        self.epsilon = _number(epsilon, "epsilon", low=0)
        self.doc_len = [len(doc) for doc in corpus_tokens]
        if sum(self.doc_len) == 0:
            raise LabkitError("every document in corpus_tokens is empty; BM25 needs some words")
        self.n_docs = len(corpus_tokens)
        self.avgdl = sum(self.doc_len) / self.n_docs
        self.tf = [Counter(doc) for doc in corpus_tokens]        # word -> count, per document
        df = {}                                                  # word -> documents containing it
        for counts in self.tf:
            for word in counts:
                df[word] = df.get(word, 0) + 1
        self.idf = {w: math.log(self.n_docs - n + 0.5) - math.log(n + 0.5) for w, n in df.items()}
        idf_sum = 0.0
        for value in self.idf.values():     # a plain loop: the same additions, in the same order
            idf_sum += value
        self.average_idf = idf_sum / len(self.idf)
        floor = self.epsilon * self.average_idf
        for word, value in self.idf.items():
            if value < 0:
                self.idf[word] = floor

    def scores(self, query_tokens) -> np.ndarray:
        """BM25 score of every document for ``query_tokens``: float64 array of shape (n_docs,)."""
        if isinstance(query_tokens, str) or not isinstance(query_tokens, (list, tuple)):
            raise LabkitError("query_tokens must be a list of tokens, e.g. rag.tokenize(query)")
        score = np.zeros(self.n_docs)
        doc_len = np.array(self.doc_len)
        length_norm = 1 - self.b + self.b * doc_len / self.avgdl
        for word in query_tokens:
            tf = np.array([counts.get(word, 0) for counts in self.tf])
            score += self.idf.get(word, 0) * (tf * (self.k1 + 1) / (tf + self.k1 * length_norm))
        return score

    def top_k(self, query, k: int) -> list[int]:
        """Ids of the ``k`` best documents, best first. ``query``: a string (tokenised with
        `tokenize`) or a token list. Ties: lower id first (rank_bm25's ``get_top_n`` reverses an
        argsort, which puts tied documents in the opposite order)."""
        tokens = tokenize(query) if isinstance(query, str) else query
        _positive_int(k, "k")
        if k > self.n_docs:
            raise LabkitError(f"k={k} but the corpus has {self.n_docs} documents; pass k <= {self.n_docs}")
        return _stable_top(self.scores(tokens).tolist(), k)


# ---------------------------------------------------------------------------
# 3. dense retrieval
# ---------------------------------------------------------------------------
def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the hidden states of the real tokens: (batch, seq, dim) -> (batch, dim).

    Padding (mask 0) is left out of both the sum and the count; an all-padding row gives zeros.
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        raise LabkitError(f"hidden must be a tensor of shape (batch, seq, dim), got {_shape(hidden)}")
    if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise LabkitError(f"attention_mask must be a tensor of shape {tuple(hidden.shape[:2])} (batch, seq), "
                          f"got {_shape(attention_mask)}")
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


@torch.no_grad()
def embed(model, tokenizer, texts, batch_size: int = 32) -> torch.Tensor:
    """Unit-length embeddings of ``texts``: (len(texts), dim) float32.

    A Hugging Face model (``smollm2-135m``, ``lab-tiny``): the mean of its last hidden states
    over the real tokens. A `BiEncoder`: its own output. Batches are padded on the *right*, so
    a causal model's real tokens never see padding and keep their positions: a text's vector
    does not depend on what it is batched with (up to float rounding).
    """
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise LabkitError("texts must be a non-empty list of strings (wrap a single text: [text])")
    for text in texts:
        _check_text(text, "each text")
    _positive_int(batch_size, "batch_size")
    was_training = model.training
    model.eval()
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            rows = [list(tokenizer(t)["input_ids"]) for t in batch]
            empty = [t for t, r in zip(batch, rows) if not r]
            if empty:
                raise LabkitError(f"text {empty[0]!r} encodes to no tokens; drop empty texts before embedding")
            ids, mask = _pad_right(rows, pad_id)
            ids, mask = ids.to(device), mask.to(device)
            if isinstance(model, BiEncoder):
                vectors = model(ids, mask)
            else:
                hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
                vectors = mean_pool(hidden, mask)
            out.append(F.normalize(vectors.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def _as_matrix(x, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError):
        raise LabkitError(f"{name} must be a 2-D array or tensor of vectors, got {type(x).__name__}") from None
    if t.dim() != 2 or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise LabkitError(f"{name} must be a 2-D float array (n, dim), got shape {tuple(t.shape)}")
    return t.detach().float().cpu()


def cosine_top_k(queries, docs, k: int, return_scores: bool = False):
    """Ids (n_queries, k) of the k documents most cosine-similar to each query, best first.

    Both sides are L2-normalised float32, so cosine = inner product: the same search as
    ``faiss.IndexFlatIP`` after ``faiss.normalize_L2``. With ``return_scores=True`` returns
    ``(scores, ids)`` like faiss's ``(D, I)``. Two deliberate differences: exact ties (duplicate
    documents) go lower id first, where faiss's heap lists tied ids highest first and which tied
    ids survive the cut at k depends on the order it met them; and the dot products are summed
    in a different order than faiss's SIMD / BLAS kernels, so scores agree to ~1e-7 and two
    documents closer than that can swap.
    """
    q, d = _as_matrix(queries, "queries"), _as_matrix(docs, "docs")
    if q.shape[1] != d.shape[1]:
        raise LabkitError(f"queries have dimension {q.shape[1]} but docs have {d.shape[1]}; embed both with one model")
    _positive_int(k, "k")
    if k > d.shape[0]:
        raise LabkitError(f"k={k} but there are {d.shape[0]} docs; pass k <= {d.shape[0]}")
    scores = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    top, ids = torch.sort(scores, dim=1, descending=True, stable=True)
    if return_scores:
        return top[:, :k], ids[:, :k]
    return ids[:, :k]


def _id_list(ranking, name: str) -> list:
    if isinstance(ranking, (torch.Tensor, np.ndarray)):
        ranking = ranking.tolist()
    if isinstance(ranking, (str, bytes)) or not isinstance(ranking, (list, tuple)):
        raise LabkitError(f"{name} must be a list of ids, got {type(ranking).__name__}")
    return list(ranking)


def reciprocal_rank_fusion(rankings, k: int = 60) -> list:
    """Fuse several rankings (lists of ids, best first) into one: ``sum 1 / (k + rank)``, rank from 1.

    Cormack et al. 2009's k=60 damps the top ranks so one system's first place cannot outvote
    agreement between systems. A document missing from a ranking gets nothing from it. Ties keep
    the order in which documents were first met (ranking by ranking).
    """
    if isinstance(rankings, (torch.Tensor, np.ndarray)):
        rankings = rankings.tolist()
    if not isinstance(rankings, (list, tuple)) or not rankings:
        raise LabkitError("rankings must be a non-empty list of rankings, e.g. [bm25_ids, dense_ids]")
    _number(k, "k", low=0)
    fused = {}
    for r, ranking in enumerate(rankings):
        ids = _id_list(ranking, f"rankings[{r}]")
        if len(set(ids)) != len(ids):
            raise LabkitError(f"rankings[{r}] lists an id twice; each ranking must list a document once")
        for rank, doc in enumerate(ids, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(fused, key=lambda doc: -fused[doc])


def _per_query(retrieved, relevant) -> list[tuple[list, set]]:
    """Pair each query's ranking with its set of relevant ids; one flat ranking is one query."""
    if isinstance(retrieved, (torch.Tensor, np.ndarray)):
        retrieved = retrieved.tolist()
    if isinstance(relevant, (torch.Tensor, np.ndarray)):
        relevant = relevant.tolist()
    if not isinstance(retrieved, (list, tuple)) or not retrieved:
        raise LabkitError("retrieved must be a ranking (list of ids) or a list of rankings, one per query")
    if not isinstance(retrieved[0], (list, tuple, torch.Tensor, np.ndarray)):    # one query
        retrieved, relevant = [retrieved], [relevant]
    if not isinstance(relevant, (list, tuple)) or len(relevant) != len(retrieved):
        raise LabkitError(f"relevant must give the relevant id(s) of each of the {len(retrieved)} queries")
    pairs = []
    for i, (ranking, gold) in enumerate(zip(retrieved, relevant)):
        gold = set(gold) if isinstance(gold, (list, tuple, set, frozenset)) else {gold}
        if not gold:
            raise LabkitError(f"query {i} has no relevant ids; drop it (its recall is undefined)")
        pairs.append((_id_list(ranking, f"retrieved[{i}]"), gold))
    return pairs


def recall_at_k(retrieved, relevant, k: int) -> float:
    """Share of the relevant documents found in the top k, averaged over queries.

    ``retrieved``: one ranking or a list of them (a 2-D tensor of ids works); ``relevant``: per
    query one id or a collection of ids. With one relevant id per query this is the hit rate.
    ``recall_at_k([3, 1, 2], {1, 9}, k=2) == 0.5``.
    """
    _positive_int(k, "k")
    pairs = _per_query(retrieved, relevant)
    return sum(len(set(ranking[:k]) & gold) / len(gold) for ranking, gold in pairs) / len(pairs)


def hit_at_k(retrieved, relevant, k: int) -> float:
    """Share of queries with at least one relevant id in the top k (DPR's "top-k retrieval
    accuracy"): what a reader needs, one passage that holds the answer. Equals `recall_at_k`
    when every query has one relevant id."""
    _positive_int(k, "k")
    pairs = _per_query(retrieved, relevant)
    return sum(bool(set(ranking[:k]) & gold) for ranking, gold in pairs) / len(pairs)


def mrr(retrieved, relevant, k: int | None = None) -> float:
    """Mean reciprocal rank: the mean over queries of 1 / (rank of the first relevant id), 0 when
    none is in the ranking (or in its first ``k``). ``mrr([[3, 1], [2, 5]], [1, 7]) == 0.25``."""
    if k is not None:
        _positive_int(k, "k")
    pairs = _per_query(retrieved, relevant)
    total = 0.0
    for ranking, gold in pairs:
        for rank, doc in enumerate(ranking[:k] if k else ranking, start=1):
            if doc in gold:
                total += 1.0 / rank
                break
    return total / len(pairs)


class BiEncoder(nn.Module):
    """A small text encoder for retrieval: token + position embeddings, ``n_layers`` bidirectional
    transformer layers, mean pooling over real tokens, a linear projection, unit length.

    One encoder embeds both queries and documents (a "siamese" bi-encoder): documents can be
    embedded once and indexed; a query costs one forward. ``n_layers=0`` is a bag of words.
    """

    def __init__(self, vocab_size: int, dim: int = 64, n_layers: int = 1, n_heads: int = 4, max_len: int = 256):
        super().__init__()
        _positive_int(vocab_size, "vocab_size")
        _positive_int(dim, "dim")
        _positive_int(max_len, "max_len")
        _positive_int(n_heads, "n_heads")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
            raise LabkitError(f"n_layers must be an integer >= 0, got {n_layers!r}")
        if dim % n_heads:
            raise LabkitError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        self.max_len = max_len
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, n_heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False) if n_layers else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, seq) token ids -> (batch, dim) unit vectors."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise LabkitError("input_ids must be an integer tensor of shape (batch, seq)")
        if input_ids.shape[1] > self.max_len:
            raise LabkitError(f"sequence of {input_ids.shape[1]} tokens is longer than max_len={self.max_len}; "
                              "truncate it or build the BiEncoder with a larger max_len")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tokens(input_ids) + self.positions(positions)
        if self.layers is not None:
            x = self.layers(x, src_key_padding_mask=attention_mask == 0)
        return F.normalize(self.proj(mean_pool(x, attention_mask)), dim=-1)


def contrastive_loss(q: torch.Tensor, d: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of ``q`` should match row i of ``d`` and no other.

    ``logits[i, j] = cos(q_i, d_j) / temperature``; the loss is the cross-entropy of each row
    against its diagonal, so every other document in the batch is a negative for free. A low
    temperature sharpens the softmax (SimCSE uses 0.05).
    """
    if not isinstance(q, torch.Tensor) or not isinstance(d, torch.Tensor) or q.dim() != 2 or q.shape != d.shape:
        raise LabkitError("q and d must be float tensors of the same shape (batch, dim), "
                          "row i of d matching row i of q")
    _number(temperature, "temperature", positive=True)
    logits = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


# ---------------------------------------------------------------------------
# 4. the LangChain pieces
# ---------------------------------------------------------------------------
class PromptTemplate:
    """An f-string template: ``PromptTemplate("Q: {question}\\nA:").format(question="...")``.

    Equals ``langchain_core.prompts.PromptTemplate.from_template(template).format(...)``:
    ``{{`` and ``}}`` are literal braces, ``{x!r}`` and ``{x:>8}`` work as in ``str.format``,
    extra keywords are ignored, ``input_variables`` is sorted. Like LangChain it refuses
    attribute access or indexing (``{x.y}``, ``{x[0]}``) and positional fields (``{}``, ``{0}``);
    a missing variable is a one-line LabkitError (LangChain raises a KeyError).
    """

    def __init__(self, template: str):
        _check_text(template, "template")
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in Formatter().parse(template) if name is not None]
        except ValueError as e:
            raise LabkitError(f"template is not a valid f-string template ({e}); "
                              "write a literal brace as {{ or }}") from None
        for name, spec, conversion in fields:
            if name == "" or name.isdigit() or any(c in name for c in ".[]"):
                raise LabkitError(f"invalid variable {{{name}}} in template: use a plain name such as {{question}}")
            if spec and ("{" in spec or "}" in spec):
                raise LabkitError(f"variable {{{name}}} has a nested field in its format spec; "
                                  "nested fields are not allowed")
            if conversion not in (None, "r", "s", "a"):
                raise LabkitError(f"variable {{{name}!{conversion}}}: the conversion must be !r, !s or !a")
        self.template = template
        self.input_variables = sorted({name for name, _, _ in fields})

    def format(self, **variables) -> str:
        missing = [v for v in self.input_variables if v not in variables]
        if missing:
            raise LabkitError(f"PromptTemplate.format is missing {missing}: pass every one of "
                              f"{self.input_variables} as a keyword, e.g. .format({missing[0]}=...)")
        convert = {"r": repr, "s": str, "a": ascii}
        out = []
        for literal, name, spec, conversion in Formatter().parse(self.template):
            out.append(literal)
            if name is not None:
                value = variables[name]
                if conversion:
                    value = convert[conversion](value)
                out.append(format(value, spec))
        return "".join(out)

    def __repr__(self) -> str:
        return f"PromptTemplate({self.template!r})"


def _word_count(text: str) -> int:
    """LangChain's default length: pieces between spaces and newlines (``len(re.split(r"\\n| ", t))``)."""
    return len(re.split(r"\n| ", text))


class LengthExampleSelector:
    """Few-shot examples, in order, while the prompt stays under ``max_length``.

    Equals ``LengthBasedExampleSelector(examples=..., example_prompt=..., max_length=...)``:
    the budget starts at ``max_length - length(" ".join(input values))`` and takes examples
    from the front while each one still fits (stopping at the first that does not, or when the
    budget is exactly spent). ``example_prompt`` formats one example (a `PromptTemplate` or
    anything with ``.format(**example)``); ``get_text_length`` defaults to LangChain's word count.
    """

    def __init__(self, examples, example_prompt, max_length: int = 2048, get_text_length=None):
        if not isinstance(examples, (list, tuple)) or not all(isinstance(e, dict) for e in examples):
            raise LabkitError("examples must be a list of dicts, one per example, e.g. [{'input': ..., 'output': ...}]")
        if not hasattr(example_prompt, "format"):
            raise LabkitError("example_prompt must be a PromptTemplate (something with .format(**example))")
        self.example_prompt = example_prompt
        self.max_length = _number(max_length, "max_length")
        self.get_text_length = get_text_length or _word_count
        self.examples, self.example_text_lengths = [], []
        for example in examples:
            self.add_example(example)

    def add_example(self, example: dict) -> None:
        self.examples.append(example)
        self.example_text_lengths.append(self.get_text_length(self.example_prompt.format(**example)))

    def select_examples(self, input_variables: dict) -> list[dict]:
        if not isinstance(input_variables, dict):
            raise LabkitError("input_variables must be a dict of the new input, e.g. {'input': 'big'}")
        remaining = self.max_length - self.get_text_length(" ".join(input_variables.values()))
        chosen = []
        for example, length in zip(self.examples, self.example_text_lengths):
            if remaining <= 0 or remaining - length < 0:
                break
            chosen.append(example)
            remaining -= length
        return chosen


_FENCE = re.compile(r"```(?:json)?(.*?)(?:```|$)", re.DOTALL)


def parse_json_output(text: str, raise_on_error: bool = True):
    """The JSON value a model wrote: at the start of its reply, or of its first ```` ```json ```` fence.

    Agrees with ``JsonOutputParser().parse`` on valid JSON, surrounded by whitespace, in a fence
    (with prose before or after it), followed by trailing words (ignored), and with raw newlines
    inside strings (``strict=False``, as LangChain). Deliberately stricter on truncated output:
    LangChain *repairs* ``{"a": 1, "b": [2`` into ``{'a': 1, 'b': [2]}`` (closing what the
    model never closed) where this reports a failure, and it *returns* ``None`` for mismatched
    brackets (``{"a": 1]}``) where this reports a failure too. A failure is a one-line
    LabkitError, or ``None`` with ``raise_on_error=False`` (count those for a parse-failure
    rate; the reply ``null`` also parses to None).
    """
    _check_text(text)
    body = text.strip()
    match = _FENCE.search(body)
    candidates = [body] if match is None else [body, match.group(1)]
    for candidate in candidates:
        try:
            value, _ = json.JSONDecoder(strict=False).raw_decode(candidate.strip(" \n\r\t`"))
            return value
        except json.JSONDecodeError:
            continue
    if raise_on_error:
        shown = body if len(body) <= 60 else body[:57] + "..."
        raise LabkitError(f"model output is not valid JSON: {shown!r}; re-ask the model, or pass "
                          "raise_on_error=False to count failures")
    return None


class BufferMemory:
    """Chat history kept verbatim: every message goes back into the next prompt.

    ``tokens_per_turn[t]`` is how many tokens the buffer holds after turn t (a user message and
    the reply): it grows with every turn, which is what a summary memory is for. ``count_tokens``
    counts one message's tokens (``lambda s: len(tokenizer(s)["input_ids"])`` for a model's
    tokens); the default counts `tokenize` words. ``buffer_string()`` equals LangChain's
    ``get_buffer_string`` of the same messages ("Human: ...", "AI: ...", "System: ...").
    """

    _PREFIX = {"system": "System", "user": "Human", "assistant": "AI"}

    def __init__(self, count_tokens=None):
        self.count_tokens = count_tokens or (lambda s: len(tokenize(s)))
        self.messages: list[dict] = []
        self.message_tokens: list[int] = []
        self.tokens_per_turn: list[int] = []

    def _add(self, role: str, content: str) -> None:
        _check_text(content, "content")
        self.messages.append({"role": role, "content": content})
        self.message_tokens.append(self.count_tokens(content))

    def add_system_message(self, content: str) -> None:
        self._add("system", content)

    def add_user_message(self, content: str) -> None:
        self._add("user", content)

    def add_ai_message(self, content: str) -> None:
        """The reply closes a turn: record the buffer's size."""
        self._add("assistant", content)
        self.tokens_per_turn.append(self.tokens())

    def tokens(self) -> int:
        return sum(self.message_tokens)

    def buffer_string(self, human_prefix: str = "Human", ai_prefix: str = "AI") -> str:
        prefix = {**self._PREFIX, "user": human_prefix, "assistant": ai_prefix}
        return "\n".join(f"{prefix[m['role']]}: {m['content']}" for m in self.messages)

    def clear(self) -> None:
        self.messages, self.message_tokens, self.tokens_per_turn = [], [], []


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.UAdd: operator.pos, ast.USub: operator.neg}


def calculator(expression: str):
    """Evaluate arithmetic: numbers, + - * / and parentheses, e.g. "(3 + 4) * 2.5". Nothing else.

    The expression is parsed with `ast` and only number literals and those operators are
    walked; a name, a call, ``**`` or anything else is refused, so a model cannot run code
    through it (``eval`` would run ``__import__('os').system(...)``).
    """
    _check_text(expression, "expression")
    if len(expression) > 200:
        raise LabkitError("expression is longer than 200 characters; the calculator takes short arithmetic")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise LabkitError(f"{expression!r} is not arithmetic; use numbers, + - * / and parentheses") from None

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise LabkitError(f"division by zero in {expression!r}")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise LabkitError(f"the calculator accepts numbers, + - * / and parentheses only, "
                          f"not {ast.unparse(node)!r}")

    return walk(tree)


REACT_TEMPLATE = """Answer the question. You can use these tools:
{tool_descriptions}

Use this format:
Thought: what to do next
Action: the tool to use, one of [{tool_names}]
Action Input: the input for the tool
Observation: the tool's result
... (Thought / Action / Action Input / Observation can repeat)
Thought: I now know the answer
Final Answer: the answer

Question: {question}
Thought:"""

_ACTION = re.compile(r"Action\s*:\s*(.*?)\s*\n\s*Action\s*Input\s*:\s*(.*)")


def react(generate_fn, question: str, tools: dict, max_steps: int = 5) -> dict:
    """A ReAct loop (reason + act): the model thinks, calls a tool, reads the result, repeats.

    ``generate_fn(prompt) -> str`` continues the prompt (a model, or a scripted fake in tests).
    Each step: if the reply has ``Final Answer:`` that is the answer; else its ``Action:`` /
    ``Action Input:`` lines name a tool in ``tools`` (name -> function of one string) and the
    result is appended as ``Observation:``. Whatever the model wrote after its own
    ``Observation:`` is cut off (it must not invent tool results). A bad format, an unknown tool
    or a tool's LabkitError becomes the observation, so the model can correct itself.

    Returns ``{"answer": str or None (no answer in max_steps), "steps": [{"text", "action",
    "input", "observation"}], "prompt": the whole transcript}``.
    """
    if not callable(generate_fn):
        raise LabkitError("generate_fn must be a function prompt -> continuation")
    _check_text(question, "question")
    if not isinstance(tools, dict) or not tools or not all(callable(f) for f in tools.values()):
        raise LabkitError("tools must be a dict of name -> function, e.g. {'calculator': rag.calculator}")
    _positive_int(max_steps, "max_steps")
    descriptions = "\n".join(f"{name}: {(f.__doc__ or name).strip().splitlines()[0]}" for name, f in tools.items())
    prompt = PromptTemplate(REACT_TEMPLATE).format(tool_descriptions=descriptions, tool_names=", ".join(tools),
                                                   question=question)
    steps = []
    for _ in range(max_steps):
        text = generate_fn(prompt)
        if not isinstance(text, str):
            raise LabkitError(f"generate_fn must return a str, got {type(text).__name__}")
        text = text.split("\nObservation:")[0].rstrip()
        if "Final Answer:" in text:
            answer = text.split("Final Answer:", 1)[1].strip()
            steps.append({"text": text, "action": None, "input": None, "observation": None})
            return {"answer": answer, "steps": steps, "prompt": prompt + text}
        match = _ACTION.search(text)
        action = tool_input = None
        if match is None:
            observation = ("Invalid format: write 'Action: <tool>' and 'Action Input: <input>', "
                           "or 'Final Answer: <answer>'")
        else:
            action, tool_input = match.group(1).strip(), match.group(2).strip().strip("\"'`")
            if action not in tools:
                observation = f"unknown tool {action!r}; use one of [{', '.join(tools)}]"
            else:
                try:
                    observation = str(tools[action](tool_input))
                except LabkitError as e:
                    observation = f"error: {e}"
        steps.append({"text": text, "action": action, "input": tool_input, "observation": observation})
        prompt += f"{text}\nObservation: {observation}\nThought:"
    return {"answer": None, "steps": steps, "prompt": prompt}


class SimilarityExampleSelector:
    """The ``k`` examples most similar to the new input, most similar first.

    Equals ``SemanticSimilarityExampleSelector(vectorstore=InMemoryVectorStore(embeddings), k=k)``
    with the same embedding function: each example is embedded as the space-joined values of its
    keys sorted by name (only ``input_keys`` when given), the new input the same way, and the
    examples are ranked by cosine similarity. ``embed_fn(list of texts) -> (n, dim)`` vectors.
    Ties: lower index first (the in-memory store's reversed argsort lists tied examples last first).
    """

    def __init__(self, examples, embed_fn, k: int = 4, input_keys=None):
        if not isinstance(examples, (list, tuple)) or not examples or not all(isinstance(e, dict) for e in examples):
            raise LabkitError("examples must be a non-empty list of dicts, e.g. [{'input': ..., 'output': ...}]")
        if not callable(embed_fn):
            raise LabkitError("embed_fn must be a function: list of texts -> (n, dim) vectors")
        self.examples, self.embed_fn = list(examples), embed_fn
        self.k, self.input_keys = _positive_int(k, "k"), input_keys
        self.vectors = _as_matrix(embed_fn([self.example_text(e) for e in self.examples]), "embed_fn(...)")

    def example_text(self, example: dict) -> str:
        keys = self.input_keys or sorted(example)
        return " ".join(str(example[key]) for key in sorted(keys))

    def select_examples(self, input_variables: dict) -> list[dict]:
        if not isinstance(input_variables, dict):
            raise LabkitError("input_variables must be a dict of the new input, e.g. {'input': 'big'}")
        query = _as_matrix(self.embed_fn([self.example_text(input_variables)]), "embed_fn(...)")
        ids = cosine_top_k(query, self.vectors, min(self.k, len(self.examples)))[0]
        return [self.examples[i] for i in ids.tolist()]


class SummaryMemory(BufferMemory):
    """Chat history kept as a running summary plus the last ``keep_last`` messages.

    After each reply the messages older than the last ``keep_last`` are folded into the summary
    by ``summarize_fn(summary_so_far, lines) -> new summary`` (an LLM call in practice: that is
    the price of a bounded prompt). ``tokens()`` counts the summary plus the kept messages, so
    ``tokens_per_turn`` stays roughly flat where `BufferMemory`'s grows; ``summary_calls``
    counts the extra model calls.
    """

    def __init__(self, summarize_fn, keep_last: int = 2, count_tokens=None):
        super().__init__(count_tokens)
        if not callable(summarize_fn):
            raise LabkitError("summarize_fn must be a function (summary, new lines) -> summary")
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
            raise LabkitError(f"keep_last must be an integer >= 0, got {keep_last!r}")
        self.summarize_fn, self.keep_last = summarize_fn, keep_last
        self.summary, self.summary_calls = "", 0

    def add_ai_message(self, content: str) -> None:
        self._add("assistant", content)
        cut = len(self.messages) - self.keep_last
        if cut > 0:
            old = self.messages[:cut]
            lines = "\n".join(f"{self._PREFIX[m['role']]}: {m['content']}" for m in old)
            summary = self.summarize_fn(self.summary, lines)
            _check_text(summary, "summarize_fn(...)")
            self.summary, self.summary_calls = summary.strip(), self.summary_calls + 1
            self.messages, self.message_tokens = self.messages[cut:], self.message_tokens[cut:]
        self.tokens_per_turn.append(self.tokens())

    def tokens(self) -> int:
        return (self.count_tokens(self.summary) if self.summary else 0) + sum(self.message_tokens)

    def buffer_string(self, human_prefix: str = "Human", ai_prefix: str = "AI") -> str:
        recent = super().buffer_string(human_prefix, ai_prefix)
        return f"Summary of the conversation so far: {self.summary}\n{recent}" if self.summary else recent

    def clear(self) -> None:
        super().clear()
        self.summary, self.summary_calls = "", 0


# ---------------------------------------------------------------------------
# 5. the lab's retrieval task: corpus, questions, relevance, answers
# ---------------------------------------------------------------------------
QUESTIONS = {
    "capital": "What is the capital of {e}?",
    "language": "What language do people speak in {e}?",
    "river": "Which river flows through {e}?",
    "colour": "What colour are the feathers of the {e}?",
    "job": "What does {e} do for a living?",
    "born": "In which town was {e} born?",
    "lubricant": "What is the {e} lubricated with?",
    "weak_part": "Which part of the {e} fails first?",
    "maker": "Which company makes the {e}?",
    "overheat_code": "Which code does the {e} show when it overheats?",
}


def fact_question(entity: str, relation: str) -> str:
    """The question that asks for a fact of `labkit.data`: ``("Veloria", "capital")`` ->
    ``"What is the capital of Veloria?"``."""
    if relation not in QUESTIONS:
        raise LabkitError(f"unknown relation {relation!r}; one of {sorted(QUESTIONS)}")
    return QUESTIONS[relation].format(e=entity)


def lab_corpus(n_general: int, n_domain: int, seed: int = 0, real: bool = True) -> list[dict]:
    """The documents to search: ``n_general`` stories and ``n_domain`` maintenance records of
    `labkit.data` (they state the lab world's facts) and, with ``real``, the eight paragraphs of
    real English of `labkit.perplexity.real_english`. Each: ``{"text", "source"}``."""
    from . import data, perplexity

    docs = [{"text": t, "source": "general"} for t in data.general_corpus(n_general, seed=seed)]
    docs += [{"text": t, "source": "domain"} for t in data.domain_corpus(n_domain, seed=seed)]
    if real:
        docs += [{"text": t, "source": "real"} for t in perplexity.real_english()]
    return docs


def _mentions(text: str, phrase: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)", text.lower()) is not None


def answer_bearing(chunks, entity: str, answer: str) -> list[int]:
    """Ids of the chunks that name both the entity and the answer (whole words, any case): the
    *relevant* chunks of a question, the usual definition when passages are not labelled."""
    return [i for i, c in enumerate(chunks) if _mentions(c, entity) and _mentions(c, answer)]


def qa_set(chunks, n: int, facts=None, present: bool = True) -> list[dict]:
    """Up to ``n`` questions about the lab's facts, alternating world and machine facts.

    ``present=True``: facts stated in some chunk (``relevant`` = the answer-bearing chunk ids);
    ``False``: facts no chunk states (for refusals: the right reply is "I don't know").
    Each: ``{"question", "answer", "entity", "relation", "relevant"}``.
    """
    from . import data

    _positive_int(n, "n")
    pools = [list(data.FACTS), list(data.DOMAIN_FACTS)] if facts is None else [list(facts)]
    picked = [[], []]
    for p, pool in enumerate(pools):
        for entity, relation, answer in pool:
            relevant = answer_bearing(chunks, entity, answer)
            if bool(relevant) == present:
                picked[p].append({"question": fact_question(entity, relation), "answer": answer, "entity": entity,
                                  "relation": relation, "relevant": relevant})
    out = []
    for i in range(max(len(p) for p in picked)):
        out += [p[i] for p in picked if i < len(p)]
    return out[:n]


_REFUSAL = re.compile(r"(do not|don't|does not|doesn't|cannot|can't|not) (know|say|mention|state|provide|"
                      r"contain|answer|find|determine|sure)|no information|not (mentioned|stated|given|provided|"
                      r"specified|found)|unknown|not in the (context|text)", re.IGNORECASE)


def answer_match(reply: str, answer: str) -> bool:
    """The reply contains the gold answer as a whole word (any case): "The capital is Marden." for
    "Marden". (Strict exact match would fail every full-sentence reply of a small chat model.)"""
    _check_text(reply, "reply")
    return _mentions(reply, answer)


def is_refusal(reply: str) -> bool:
    """The reply declines: "I don't know", "the context does not say", "not mentioned", ..."""
    _check_text(reply, "reply")
    return _REFUSAL.search(reply) is not None


def train_bi_encoder(encoder: "BiEncoder", tokenizer, pairs, steps: int, batch_size: int = 32, lr: float = 3e-3,
                     temperature: float = 0.05, seed: int = 0) -> list[float]:
    """Train ``encoder`` on (query, passage) pairs with `contrastive_loss` (in-batch negatives).

    Each step draws ``batch_size`` pairs (a random permutation per pass) and pushes every query
    towards its own passage and away from the other passages in the batch. Returns the loss per step.
    """
    if not isinstance(pairs, (list, tuple)) or len(pairs) < 2:
        raise LabkitError("pairs must be a list of at least 2 (query, passage) tuples")
    _positive_int(steps, "steps")
    _positive_int(batch_size, "batch_size")
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    cache = {}

    def batch(texts):
        rows = []
        for t in texts:
            if t not in cache:
                cache[t] = list(tokenizer(t)["input_ids"])[:encoder.max_len]
            rows.append(cache[t])
        return _pad_right(rows, pad_id)

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(encoder.parameters(), lr=lr, weight_decay=0.0)
    encoder.train()
    order, losses = [], []
    size = min(batch_size, len(pairs))
    for _ in range(steps):
        if len(order) < size:
            order += torch.randperm(len(pairs), generator=gen).tolist()
        picked, order = order[:size], order[size:]
        q_ids, q_mask = batch([pairs[i][0] for i in picked])
        d_ids, d_mask = batch([pairs[i][1] for i in picked])
        loss = contrastive_loss(encoder(q_ids, q_mask), encoder(d_ids, d_mask), temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    encoder.eval()
    return losses


def training_pairs(chunks, exclude=()) -> list[tuple[str, str]]:
    """(question, chunk) for every fact of `labkit.data` a chunk states, leaving out the facts
    whose entity is in ``exclude`` (the evaluation questions' entities: no peeking)."""
    from . import data

    skip = set(exclude)
    pairs = []
    for entity, relation, answer in list(data.FACTS) + list(data.DOMAIN_FACTS):
        if entity in skip:
            continue
        for i in answer_bearing(chunks, entity, answer):
            pairs.append((fact_question(entity, relation), chunks[i]))
    return pairs


# ---------------------------------------------------------------------------
# 6. `python -m labkit rag`: the retrieval table
# ---------------------------------------------------------------------------
def retrieval_table(profile: str, chunk_size: int = 300, chunk_overlap: int = 50, k: int = 5,
                    dense: bool = True) -> dict:
    """Recall@1, recall@k and MRR@10 of BM25, dense (smollm2-135m mean-pooled, if installed), a bi-encoder
    before and after contrastive training, and hybrid (RRF of BM25 and the trained bi-encoder) on the lab corpus."""
    from . import env, models, smollm2, stats

    sizes = env.by_profile(smoke=(40, 30, 16, 60), cpu=(100, 80, 48, 400), full=(200, 160, 96, 1500),
                           profile_name=profile)
    n_general, n_domain, n_q, steps = sizes
    docs = lab_corpus(n_general, n_domain)
    chunks = [c for d in docs for c in recursive_chunks(d["text"], chunk_size, chunk_overlap)]
    qs = qa_set(chunks, n_q)
    if not qs:
        raise LabkitError("no question's answer is in the corpus; use a larger chunk size")
    if k > len(chunks):
        raise LabkitError(f"--k {k} but the corpus has {len(chunks)} chunks; pass a smaller --k")
    depth = min(max(10, k), len(chunks))
    relevant = [q["relevant"] for q in qs]
    bm25 = BM25([tokenize(c) for c in chunks])
    ranked = {"BM25": [bm25.top_k(q["question"], depth) for q in qs]}
    use_smol = dense and smollm2.is_installed()
    if use_smol:
        model, tok = models.load(models.SMOLLM2)
        ranked["dense smollm2-135m"] = cosine_top_k(embed(model, tok, [q["question"] for q in qs]),
                                                    embed(model, tok, chunks), depth).tolist()
    else:
        from .tokenizer import load_tokenizer
        tok = load_tokenizer()
    torch.manual_seed(stats.default_seeds(profile)[0])
    enc = BiEncoder(len(tok), dim=64, n_layers=1, max_len=512)
    q_text = [q["question"] for q in qs]
    ranked["bi-encoder, untrained"] = cosine_top_k(embed(enc, tok, q_text), embed(enc, tok, chunks), depth).tolist()
    train_docs = lab_corpus(n_general, n_domain, seed=1, real=False)
    train_chunks = [c for d in train_docs for c in recursive_chunks(d["text"], chunk_size, chunk_overlap)]
    pairs = training_pairs(train_chunks, exclude={q["entity"] for q in qs})
    train_bi_encoder(enc, tok, pairs, steps, seed=stats.default_seeds(profile)[0])
    ranked["bi-encoder, trained"] = cosine_top_k(embed(enc, tok, q_text), embed(enc, tok, chunks), depth).tolist()
    ranked["hybrid (BM25 + bi-encoder, RRF)"] = [reciprocal_rank_fusion([a, b])[:depth] for a, b in
                                                zip(ranked["BM25"], ranked["bi-encoder, trained"])]
    rows = {}
    for name, r in ranked.items():
        per_query = [recall_at_k(x, g, k) for x, g in zip(r, relevant)]
        lo, hi = stats.bootstrap_ci(per_query) if len(per_query) > 1 else (per_query[0], per_query[0])
        rows[name] = {"recall@1": recall_at_k(r, relevant, 1), f"recall@{k}": recall_at_k(r, relevant, k),
                      f"recall@{k} ci": [float(lo), float(hi)], f"hit@{k}": hit_at_k(r, relevant, k),
                      "mrr@10": mrr(r, relevant, k=10)}
    return {"profile": profile, "chunks": len(chunks), "questions": len(qs), "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap, "k": k, "train_pairs": len(pairs), "train_steps": steps,
            "smollm2": use_smol, "table": rows}


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit rag``: recall@k and MRR of sparse, dense and hybrid retrieval (lab 15)."""
    from . import cli, env

    p = cli.parser("rag", "Recall@k and MRR of BM25, dense (smollm2-135m), a contrastively trained bi-encoder and "
                          "hybrid retrieval on the lab corpus (lab 15).")
    p.add_argument("--chunk-size", type=int, default=300, help="characters per chunk (recursive splitter)")
    p.add_argument("--overlap", type=int, default=50, help="characters shared by neighbouring chunks")
    p.add_argument("--k", type=int, default=5, help="recall@k")
    p.add_argument("--no-dense", action="store_true", help="skip smollm2-135m embeddings (fast)")
    args = p.parse_args(argv)
    _positive_int(args.k, "--k")
    _check_chunk_sizes(args.chunk_size, args.overlap)
    profile = env.check_profile(args.profile) if args.profile else env.profile()
    out = retrieval_table(profile, args.chunk_size, args.overlap, args.k, dense=not args.no_dense)
    print(f"profile {profile}: {out['chunks']} chunks ({args.chunk_size} chars, overlap {args.overlap}), "
          f"{out['questions']} questions; bi-encoder trained {out['train_steps']} steps on {out['train_pairs']} pairs")
    k = args.k
    print(f"  {'retriever':<34} {'recall@1':>9} {f'recall@{k}':>9}  {'95% interval':<16} {f'hit@{k}':>7} {'MRR@10':>7}")
    for name, r in out["table"].items():
        lo, hi = r[f"recall@{k} ci"]
        print(f"  {name:<34} {r['recall@1']:>9.1%} {r[f'recall@{k}']:>9.1%}  [{lo:.0%}, {hi:.0%}]{'':<5} "
              f"{r[f'hit@{k}']:>7.1%} {r['mrr@10']:>7.3f}")
    if args.json:
        cli.emit_json(out)
    return 0

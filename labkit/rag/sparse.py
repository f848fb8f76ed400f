"""Sparse retrieval: BM25 over lowercase word tokens (lab 15 §3, §4, §6).

Why a module: BM25 (Robertson et al.; Okapi weighting with ``k1``, ``b``) is the baseline every
dense retriever of lab 15 is measured against. It scores a document by the query words it
contains, weighted by their rarity (idf) and damped by term frequency and document length;
`BM25(...).scores` equals ``rank_bm25.BM25Okapi(...).get_scores`` bit for bit (checked in §4),
ties broken by the lower id (`BM25.top_k`). Built in lab 15 §3, measured in §6.
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from ..errors import LabkitError
from .checks import _check_text, _number, _positive_int

__all__ = ["tokenize", "BM25"]


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

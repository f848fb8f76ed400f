"""Lab 15: retrieval-augmented generation -- the exercises at the end of the notebook.

Code exercises run the learner's function on fresh random inputs against the library it rebuilds
(rank_bm25, langchain-text-splitters) or labkit's fusion; the numbers come from the formulas.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise, draw_int  # noqa: F401


def _bm25_inputs(gen):
    vocab = [f"w{i}" for i in range(draw_int(gen, 2, 20))]
    n_docs = draw_int(gen, 2, 25)
    corpus = [[vocab[draw_int(gen, 0, len(vocab) - 1)] for _ in range(draw_int(gen, 1, 20))] for _ in range(n_docs)]
    if not any(corpus):
        corpus[0] = [vocab[0]]
    query = [(vocab + ["unseen"])[draw_int(gen, 0, len(vocab))] for _ in range(draw_int(gen, 1, 5))]
    k1 = [0.5, 1.2, 1.5, 2.0][draw_int(gen, 0, 3)]
    b = [0.0, 0.5, 0.75, 1.0][draw_int(gen, 0, 3)]
    return corpus, query, k1, b


def _bm25_reference(corpus, query, k1, b):
    import torch
    from rank_bm25 import BM25Okapi

    return torch.tensor(BM25Okapi(corpus, k1=k1, b=b).get_scores(query), dtype=torch.float64)


def _bm25_run(fn, args):
    import numpy as np
    import torch

    return torch.tensor(np.asarray(fn(*args), dtype=np.float64))


def _chunk_inputs(gen):
    words = []
    for _ in range(draw_int(gen, 0, 60)):
        words.append("".join("abcxyz"[draw_int(gen, 0, 5)] for _ in range([1, 2, 3, 5, 8, 15, 40][draw_int(gen, 0, 6)])))
        words.append([" ", " ", "  ", "\n", "\n\n", " \n ", ". "][draw_int(gen, 0, 6)])
    size = [3, 8, 20, 50, 100, 300][draw_int(gen, 0, 5)]
    return "".join(words), size, [0, 1, size // 4, size // 2][draw_int(gen, 0, 3)]


def _chunk_reference(text, size, overlap):
    import logging

    from langchain_text_splitters import RecursiveCharacterTextSplitter

    logging.getLogger("langchain_text_splitters.base").setLevel(logging.ERROR)
    return RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap).split_text(text)


def _rrf_inputs(gen):
    import torch

    rankings = [torch.randperm(20, generator=gen)[:draw_int(gen, 1, 20)].tolist() for _ in range(draw_int(gen, 1, 4))]
    return rankings, [0, 1, 10, 60][draw_int(gen, 0, 3)]


def _rrf_reference(rankings, k):
    from .. import rag

    return rag.reciprocal_rank_fusion(rankings, k=k)


EXERCISES = {
    "15.bm25_scores": CodeExercise(
        question="write bm25_scores_s(corpus_tokens, query_tokens, k1, b): the Okapi BM25 score of every document, "
                 "as rank_bm25.BM25Okapi(corpus, k1=k1, b=b).get_scores(query)",
        reference=_bm25_reference, inputs=_bm25_inputs, solution="bm25_scores_s", run=_bm25_run, rtol=1e-9, atol=1e-12,
        hint="idf = ln(N - n + 0.5) - ln(n + 0.5); a negative idf becomes 0.25 x the mean idf (mean before the "
             "replacement); each query word adds idf x f(k1+1) / (f + k1(1 - b + b |d| / avgdl))"),
    "15.recursive_chunks": CodeExercise(
        question="write recursive_chunks_s(text, chunk_size, chunk_overlap): the chunks of "
                 "RecursiveCharacterTextSplitter(chunk_size=..., chunk_overlap=...).split_text(text)",
        reference=_chunk_reference, inputs=_chunk_inputs, solution="recursive_chunks_s",
        hint="take the first of '\\n\\n', '\\n', ' ', '' found in the text; keep each separator at the start of the "
             "piece after it; merge short pieces (stripped chunks, overlap from the previous chunk's tail); re-split "
             "pieces of chunk_size or more with the remaining separators"),
    "15.reciprocal_rank_fusion": CodeExercise(
        question="write reciprocal_rank_fusion_s(rankings, k): ids sorted by the sum over rankings of 1 / (k + rank), "
                 "rank from 1; ties in the order first met",
        reference=_rrf_reference, inputs=_rrf_inputs, solution="reciprocal_rank_fusion_s",
        hint="accumulate a dict id -> score ranking by ranking (insertion order keeps first-met order), then a stable "
             "sort by -score"),
    "15.bm25_idf": Exercise(
        "rank_bm25's idf (natural log) of a word found in 2 of 10 documents",
        lambda: math.log(10 - 2 + 0.5) - math.log(2 + 0.5), 0.002, "ln(N - n + 0.5) - ln(n + 0.5)"),
    "15.rrf_score": Exercise(
        "the reciprocal-rank-fusion score (k = 60) of a chunk ranked 1st by one retriever and 3rd by another",
        lambda: 1 / 61 + 1 / 63, 0.002, "1 / (60 + 1) + 1 / (60 + 3)"),
    "15.flat_index_gb": Exercise(
        "GB (1e9 bytes) of a faiss.IndexFlatIP holding 1,000,000 vectors of 768 float32 numbers",
        lambda: 1_000_000 * 768 * 4 / 1e9, 0.002, "a flat index stores every vector as it is: n x dim x 4 bytes"),
}

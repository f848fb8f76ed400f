"""Rankings: fuse them (hybrid search) and score them (recall@k, hit@k, MRR) (lab 15 §3, §6).

Why a module: every retriever of lab 15 returns, per question, a ranked list of chunk ids; one
set of functions turns those lists into the numbers of the retrieval table. **Hybrid search**
fuses two rankings with reciprocal-rank fusion (Cormack, Clarke & Buettcher 2009):
``score(d) = sum 1 / (k + rank)`` (`reciprocal_rank_fusion`). Built in lab 15 §3, measured in §6
and in ``python -m labkit rag`` (`experiment`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import LabkitError
from .checks import _number, _positive_int

__all__ = ["reciprocal_rank_fusion", "recall_at_k", "hit_at_k", "mrr"]


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

"""Dense retrieval: embeddings, cosine top-k and a bi-encoder trained with in-batch negatives (lab 15 §3-6).

Why a module: dense search embeds queries and chunks as unit vectors (`mean_pool` of a model's
last hidden states: `embed`) and ranks by cosine similarity = inner product of unit vectors
(`cosine_top_k`, equal to ``faiss.IndexFlatIP`` on L2-normalised float32, checked in §4, ties by
the lower id). `BiEncoder` is a small encoder trained by `train_bi_encoder` with
`contrastive_loss` (InfoNCE with in-batch negatives, van den Oord et al. 2018 / DPR, Karpukhin et
al. 2020). Built in lab 15 §3, trained and measured in §6.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LabkitError
from .checks import _check_text, _number, _positive_int, _shape

__all__ = ["mean_pool", "embed", "cosine_top_k", "BiEncoder", "contrastive_loss", "train_bi_encoder"]


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

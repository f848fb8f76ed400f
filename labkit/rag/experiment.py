"""The retrieval table and ``python -m labkit rag`` (lab 15 §6).

Why a module: the notebook's measurement and the CLI are the same experiment: chunk the lab
corpus, ask the questions, rank with BM25, dense smollm2-135m (if installed), a bi-encoder before
and after contrastive training, and hybrid RRF, then score recall@1, recall@k (with a bootstrap
interval), hit@k and MRR@10 (`retrieval_table`); `main` prints it (``--json`` for one JSON line).
"""
from __future__ import annotations

import torch

from ..errors import LabkitError
from .checks import _positive_int
from .chunking import _check_chunk_sizes, recursive_chunks
from .dense import BiEncoder, cosine_top_k, embed, train_bi_encoder
from .ranking import hit_at_k, mrr, recall_at_k, reciprocal_rank_fusion
from .sparse import BM25, tokenize
from .task import lab_corpus, qa_set, training_pairs

__all__ = ["retrieval_table", "main"]


def retrieval_table(profile: str, chunk_size: int = 300, chunk_overlap: int = 50, k: int = 5,
                    dense: bool = True) -> dict:
    """Recall@1, recall@k and MRR@10 of BM25, dense (smollm2-135m mean-pooled, if installed), a bi-encoder
    before and after contrastive training, and hybrid (RRF of BM25 and the trained bi-encoder) on the lab corpus."""
    from .. import env, models, smollm2, stats

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
        from ..tokenizer import load_tokenizer
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
    from .. import cli, env

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

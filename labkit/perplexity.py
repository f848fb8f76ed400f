"""Held-out perplexity: how surprised a model is by text it never trained on.

Perplexity is ``exp(mean negative log-likelihood per predicted token)``: a
model that spreads its bet evenly over k tokens at every step has perplexity
k. We score each document on its own (its first token is given, or the
tokenizer's BOS when it has one), average over *tokens*, not documents, and
never mix two tokenizers' numbers: per-token perplexity depends on how finely
the tokenizer cuts the text, so lab-tiny (2,048 tokens) and SmolLM2 (49,152)
are compared on the same text but not on the same scale. Bits per byte
(``nll_sum / ln 2 / utf-8 bytes``) is the tokenizer-free number that can be
compared across them.

``python -m labkit perplexity`` prints the table the README quotes: each
pretrained model on the lab's general test text and on a few paragraphs of
real English (``data/eval/real_english.txt``).

In the labs: lab 05 §7 (what 4-bit weights cost), lab 06 §12 (general ability after domain fine-
tuning) and lab 10 §5-6 (the fluency cost of anti-repetition settings, on `real_english`).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .errors import LabkitError

REAL_ENGLISH = Path(__file__).resolve().parent.parent / "data" / "eval" / "real_english.txt"


def real_english() -> list[str]:
    """Eight paragraphs of ordinary English (water cycle, printing, bicycles, a recipe, a letter, ...)."""
    return [p.strip() for p in REAL_ENGLISH.read_text(encoding="utf-8").split("\n\n") if p.strip()]


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], batch_size: int = 8) -> dict:
    """Token-weighted perplexity of ``model`` on ``texts`` (each text scored on its own).

    Returns ``{"perplexity", "nll", "tokens", "bits_per_byte", "documents", "doc_nll", "doc_tokens"}``:
    ``doc_nll[i]`` is document i's mean NLL per predicted token and ``doc_tokens[i]`` its count,
    so two models scored on the same texts can be compared document by document
    (`labkit.stats.paired_bootstrap`).
    """
    if not texts:
        raise LabkitError("perplexity needs at least one text")
    device = next(model.parameters()).device
    limit = getattr(model.config, "max_position_embeddings", None) or 10**9
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    encoded = [(bos + tokenizer(t, add_special_tokens=False)["input_ids"])[:limit] for t in texts]
    if any(len(ids) < 2 for ids in encoded):
        raise LabkitError("every text needs at least two tokens to score")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll_sum, n_tokens = 0.0, 0
    doc_nll, doc_tokens = [], []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, ids in enumerate(chunk):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        keep = mask[:, 1:].bool()
        nll_sum += nll[keep].sum().item()
        n_tokens += int(keep.sum())
        for row, k in zip(nll, keep):
            doc_tokens.append(int(k.sum()))
            doc_nll.append(row[k].sum().item() / doc_tokens[-1])
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"perplexity": math.exp(nll_sum / n_tokens), "nll": nll_sum / n_tokens, "tokens": n_tokens,
            "bits_per_byte": nll_sum / math.log(2) / n_bytes, "documents": len(texts),
            "doc_nll": doc_nll, "doc_tokens": doc_tokens}


def report(model_names: list[str], n_docs: int = 200) -> dict:
    """Perplexity of each named model on the lab general test text (first ``n_docs``) and on real English."""
    from . import data, models

    texts = {"lab_general_test": data.load("general", "test")[:n_docs], "real_english": real_english()}
    out = {}
    for name in model_names:
        model, tok = models.load(name)
        out[name] = {key: perplexity(model, tok, docs) for key, docs in texts.items()}
    return out


def main(argv: list[str]) -> int:
    from . import cli, models

    p = cli.parser("perplexity", "Held-out perplexity of pretrained models on the lab's general test text and "
                   "on real English.", profile=False)
    p.add_argument("--model", action="append", default=None,
                   help=f"a model to score (repeatable); default: lab-tiny and {models.SMOLLM2}")
    p.add_argument("--docs", type=int, default=200, help="documents of the general test text (default 200)")
    args = p.parse_args(argv)
    if args.docs < 1:
        raise LabkitError("--docs must be at least 1")
    result = report(args.model or ["lab-tiny", models.SMOLLM2], n_docs=args.docs)
    if args.json:
        cli.emit_json(result)
        return 0
    print(f"{'model':<14}{'text':<18}{'perplexity':>11}{'bits/byte':>11}{'tokens':>8}")
    for name, rows in result.items():
        for text, r in rows.items():
            print(f"{name:<14}{text:<18}{r['perplexity']:>11.2f}{r['bits_per_byte']:>11.3f}{r['tokens']:>8}")
    return 0

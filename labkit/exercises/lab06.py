"""Lab 06: catastrophic forgetting -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise

def _mix_general_docs(g: int, d: int) -> float:
    from .. import data

    return float(round(len(data.load("domain", "train")) * g / d))  # general documents per domain document


def _mix_token_share(g: int, d: int) -> float:
    from .. import data
    from ..tokenizer import load_tokenizer

    tok = load_tokenizer()
    domain = data.load("domain", "train")
    general = data.load("general", "train")[: round(len(domain) * g / d)]
    count = lambda docs: sum(len(ids) + 2 for ids in tok(docs, add_special_tokens=False)["input_ids"])  # + bos, eos
    return count(general) / (count(general) + count(domain))


def _ewc_penalty_by_hand() -> float:
    import torch

    f, delta, lam = (torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64),
                      torch.tensor([0.2, -0.1, 3.0], dtype=torch.float64), 100.0)
    return float(lam / 2 * (f * delta**2).sum())


def _fisher_by_hand() -> float:
    import torch

    w = torch.tensor(1.0, requires_grad=True)
    grads = [torch.autograd.grad((w * x - y) ** 2, w)[0] for x, y in ((1.0, 0.0), (2.0, 1.0))]
    return float(sum(g**2 for g in grads) / len(grads))


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "06.mix_general_docs_1_4": Exercise(
        "general documents that mix() adds to the committed domain training corpus at general:domain 1:4",
        lambda: _mix_general_docs(1, 4), 0.0, "round(ratio x number of domain documents); ratio = 1/4"),
    "06.ewc_penalty_by_hand": Exercise(
        "EWC penalty for F = (0.5, 2, 0), theta - theta* = (0.2, -0.1, 3), lambda = 100",
        _ewc_penalty_by_hand, 1e-9, "lambda/2 x sum F_i (theta_i - theta*_i)^2; a weight with F = 0 costs nothing"),
    "06.fisher_by_hand": Exercise(
        "diagonal Fisher of w for (w x - y)^2 at w = 1 over the samples (1, 0) and (2, 1)",
        _fisher_by_hand, 1e-9, "per-sample gradient 2 (w x - y) x; square each, then average"),
    "06.mix_token_share_1_3": Exercise(
        "fraction of tokens that are general in the 1:3 general:domain mix of the committed corpora",
        lambda: _mix_token_share(1, 3), 0.01,
        "tokenize both parts (each document adds <bos> and <eos>); general stories are longer than log entries"),
}

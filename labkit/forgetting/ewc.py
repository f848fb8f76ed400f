"""EWC: a quadratic pull towards the pretrained weights, weighted by the Fisher (lab 06 §4, §8).

Why a module: elastic weight consolidation (Kirkpatrick et al., 2017) is the one mitigation that
changes the loss. `fisher_diagonal` measures how much the general data cares about each weight
(built from scratch and checked against ``torch.func`` in lab 06 §4, per-token vs per-sequence
scale in §8); `ewc_penalty` / `EWC` plug the pull into ``labkit.train.train(extra_loss=...)``;
`uniform_fisher` gives its control, plain L2 with the same total stiffness (lab 06 §8).
"""
from __future__ import annotations

import math

import torch

from ..errors import LabkitError

__all__ = ["fisher_diagonal", "uniform_fisher", "ewc_penalty", "EWC"]


def fisher_diagonal(model, batches, names: list[str] | None = None, per_token: bool = False) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: ``F_i = mean over batches of (dL/dθ_i)²`` (lab 06, section 4).

    Each batch contributes its squared gradient, so pass batches of ONE sequence for
    the per-sequence Fisher (a batch's mean gradient squared is smaller). "Empirical":
    the labels are the data's, not samples from the model. Returns fp32 tensors keyed
    by parameter name (``names``: default every parameter that requires grad).

    Scale: L is the *mean* loss over the sequence's T tokens, so if token gradients were
    uncorrelated, F would be the per-token Fisher divided by T. ``per_token=True`` measures
    the per-token Fisher itself (one backward pass per predicted token of ``input_ids``: slow,
    for a few sequences): the Fisher of the loss EWC's derivation assumes, where λ reads as
    "general tokens' weight relative to domain tokens" (section 8).
    """
    batches = list(batches)
    if not batches:
        raise LabkitError("fisher_diagonal needs at least one batch of general data")
    params = {n: p for n, p in model.named_parameters() if (p.requires_grad if names is None else n in names)}
    if not params:
        raise LabkitError("fisher_diagonal: no parameters selected")
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the deterministic model
    count = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        if not per_token:
            model(**batch).loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float() ** 2
            count += 1
            continue
        ids = batch["input_ids"]
        logits = model(input_ids=ids).logits[:, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                   reduction="none")
        for t in range(losses.numel()):
            grads = torch.autograd.grad(losses[t], list(params.values()), retain_graph=t + 1 < losses.numel(),
                                        allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    fisher[n] += g.detach().float() ** 2
        count += losses.numel()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / count for n, f in fisher.items()}


def uniform_fisher(fisher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every entry replaced by the Fisher's overall mean: the same total stiffness (trace),
    spread evenly. EWC with it is plain L2 towards θ* -- the control that shows what the
    Fisher's *weighting* adds (lab 06, section 8)."""
    total = sum(float(f.double().sum()) for f in fisher.values())
    n = sum(f.numel() for f in fisher.values())
    if n == 0:
        raise LabkitError("uniform_fisher needs a non-empty Fisher")
    return {k: torch.full_like(f, total / n) for k, f in fisher.items()}


def ewc_penalty(model, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """``lam / 2 * sum_i F_i (θ_i - θ*_i)^2`` over the parameters named in ``fisher``."""
    params = dict(model.named_parameters())
    missing = [n for n in fisher if n not in params]
    if missing:
        raise LabkitError(f"the Fisher names parameters this model lacks (e.g. {missing[0]!r}); "
                          "compute it on the same architecture")
    total = torch.zeros((), device=next(model.parameters()).device)
    for n, f in fisher.items():
        total = total + (f * (params[n].float() - anchor[n]) ** 2).sum()
    return 0.5 * lam * total


class EWC:
    """The EWC term for `train(extra_loss=EWC(...))`: anchors θ* = the weights at construction."""

    def __init__(self, model, fisher: dict[str, torch.Tensor], lam: float):
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise LabkitError(f"EWC lambda must be a number >= 0, got {lam!r}")
        params = dict(model.named_parameters())
        self.fisher, self.lam = fisher, float(lam)
        self.anchor = {n: params[n].detach().float().clone() for n in fisher if n in params}

    def __call__(self, model) -> torch.Tensor:
        return ewc_penalty(model, self.fisher, self.anchor, self.lam)

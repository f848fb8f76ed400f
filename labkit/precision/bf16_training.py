"""Pure bf16 training that keeps small updates: `stochastic_round_bf16` and `Bf16AdamW`.

Why a module of its own: a model trained in ``bfloat16`` rounds every weight update to the nearest
bf16 number, so an update smaller than half a bf16 gap rounds away and a long, low-learning-rate run
drifts. The two fixes live here: round stochastically (unbiased: ``E[result] = x``), or keep an fp32
master copy -- `Bf16AdamW`'s ``rounding`` picks one (or neither).

Built in lab 02 §8 (``stochastic_round_to_bf16`` and ``Bf16AdamW``, proven equal to these; with
``rounding="master"`` equal to `torch.optim.AdamW` on an fp32 copy, bit for bit).
"""
from __future__ import annotations

import torch

from ..errors import LabkitError

__all__ = ["stochastic_round_bf16", "Bf16AdamW"]


def stochastic_round_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """fp32 -> bf16, rounding up with probability equal to the discarded fraction: ``E[result] = x``.

    Built in lab 02, section 8 (``stochastic_round_to_bf16``), and proven equal to it there. The
    bit trick is round-to-nearest's (add, then drop the low 16 bits) with the ``0x7FFF + lsb``
    replaced by a uniform random 16-bit number, so a weight update smaller than half a bf16 gap
    survives on average instead of always rounding away. NaN stays NaN."""
    if x.dtype != torch.float32:
        raise LabkitError(f"stochastic_round_bf16 takes an fp32 tensor, got {x.dtype}")
    bits = x.view(torch.int32).to(torch.int64)
    device = x.device if generator is None else generator.device
    noise = torch.randint(0, 1 << 16, x.shape, generator=generator, dtype=torch.int64, device=device).to(x.device)
    h = (bits + noise) >> 16                               # round the magnitude up with probability low16 / 2^16
    h = torch.where(torch.isnan(x), torch.full_like(h, 0x7FC0), h)
    return h.to(torch.int16).view(torch.bfloat16)


class Bf16AdamW(torch.optim.Optimizer):
    """AdamW for bf16 parameters: fp32 moments, and each updated weight stored by ``rounding``.

    Built in lab 02, section 8 (``Bf16AdamW``), and proven equal to it there and, with
    ``rounding="master"``, to `torch.optim.AdamW` on an fp32 copy, bit for bit (the same
    arithmetic as its single-tensor path). ``rounding``: ``"nearest"`` stores ``bf16(w + update)``
    (what training a ``model.to(torch.bfloat16)`` does; small updates round away),
    ``"stochastic"`` stores `stochastic_round_bf16` of it (unbiased), ``"master"`` keeps an fp32
    master copy that takes the update and gives the bf16 parameter its rounding (mixed precision).
    """

    ROUNDINGS = ("nearest", "stochastic", "master")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, rounding: str = "nearest", generator: torch.Generator | None = None):
        if rounding not in self.ROUNDINGS:
            raise LabkitError(f"rounding must be one of {', '.join(self.ROUNDINGS)}, got {rounding!r}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.rounding, self.generator = rounding, generator

    @torch.no_grad()
    def step(self, closure=None):
        """One AdamW step in fp32 (torch.optim.AdamW's arithmetic), then store each weight in bf16."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    if self.rounding == "master":
                        state["master"] = p.detach().float()
                state["step"] += 1
                w = state["master"] if self.rounding == "master" else p.detach().float()
                g = p.grad.float()
                w.mul_(1 - group["lr"] * group["weight_decay"])
                state["exp_avg"].lerp_(g, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (state["exp_avg_sq"].sqrt() / (1 - beta2 ** state["step"]) ** 0.5).add_(group["eps"])
                w.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1 ** state["step"]))
                p.copy_(stochastic_round_bf16(w, self.generator) if self.rounding == "stochastic" else w)
        return loss

"""Lab 14: preference tuning -- the exercises at the end of the notebook.

The code exercises run the learner's function on fresh random rewards and log-probs against
`labkit.preference` (proven equal to TRL's RewardTrainer, DPOTrainer and GRPOTrainer
computations in lab 14, section 7); the numbers come from the formulas, computed with torch.
"""
from __future__ import annotations

from .checker import CodeExercise, Exercise, draw_int


def _pair_inputs(gen):
    import torch

    n = draw_int(gen, 1, 16)
    chosen, rejected = torch.randn(n, generator=gen) * 3, torch.randn(n, generator=gen) * 3
    margin = None if draw_int(gen, 0, 1) else torch.rand(n, generator=gen) * 2
    return chosen, rejected, margin


def _pair_reference(chosen, rejected, margin):
    from .. import preference

    return preference.pairwise_loss(chosen, rejected, margin)


def _dpo_inputs(gen):
    import torch

    n = draw_int(gen, 1, 12)
    logps = [-torch.rand(n, generator=gen) * 40 for _ in range(4)]
    beta = float(torch.empty(1).uniform_(0.01, 2.0, generator=gen))
    loss_type = ("sigmoid", "ipo", "hinge")[draw_int(gen, 0, 2)]
    if loss_type == "ipo" and draw_int(gen, 0, 1):
        tokens = (torch.randint(1, 30, (n,), generator=gen), torch.randint(1, 30, (n,), generator=gen))
    else:
        tokens = (None, None)
    return (*logps, beta, loss_type, *tokens)


def _dpo_reference(pc, pr, rc, rr, beta, loss_type, chosen_tokens, rejected_tokens):
    from .. import preference

    return preference.dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type, chosen_tokens=chosen_tokens,
                               rejected_tokens=rejected_tokens)


def _dpo_run(fn, args):
    pc, pr, rc, rr, beta, loss_type, chosen_tokens, rejected_tokens = args
    if chosen_tokens is None:
        return fn(pc, pr, rc, rr, beta=beta, loss_type=loss_type)
    return fn(pc, pr, rc, rr, beta=beta, loss_type=loss_type, chosen_tokens=chosen_tokens,
              rejected_tokens=rejected_tokens)


def _adv_inputs(gen):
    import torch

    group = draw_int(gen, 2, 8)
    prompts = draw_int(gen, 1, 6)
    rewards = torch.randint(0, 2, (prompts * group,), generator=gen).float() if draw_int(gen, 0, 1) else \
        torch.randn(prompts * group, generator=gen)
    return rewards, group


def _adv_reference(rewards, group):
    from .. import preference

    return preference.group_advantages(rewards, group)


def _dpo_value() -> float:
    import torch
    import torch.nn.functional as F

    return float(-F.logsigmoid(torch.tensor(0.1 * (3.0 - (-2.0)), dtype=torch.float64)))


def _bon_bound() -> float:
    import math

    return math.log(16) - 15 / 16


EXERCISES = {
    "14.pairwise_loss": CodeExercise(
        question="write pairwise_loss_s(chosen_rewards, rejected_rewards, margin=None): the Bradley-Terry loss, mean of "
                 "-log sigmoid(r_c - r_r - margin)",
        reference=_pair_reference, inputs=_pair_inputs, solution="pairwise_loss_s",
        hint="F.logsigmoid of the gap (minus the margin when given), negated, averaged over pairs"),
    "14.dpo_loss": CodeExercise(
        question="write dpo_loss_s(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, loss_type, "
                 "chosen_tokens=None, rejected_tokens=None) -> (losses, chosen_rewards, rejected_rewards)",
        reference=_dpo_reference, inputs=_dpo_inputs, run=_dpo_run, solution="dpo_loss_s", rtol=1e-5, atol=1e-5,
        hint="log-ratios rho = policy - ref; delta = rho_c - rho_r; sigmoid -logsigmoid(beta delta), hinge "
             "relu(1 - beta delta), ipo (delta - 1/(2 beta))^2 with each rho divided by its token count when given; "
             "rewards beta * rho, detached"),
    "14.group_advantages": CodeExercise(
        question="write group_advantages_s(rewards, group_size, eps=1e-4): GRPO's (r - group mean) / (group std + eps)",
        reference=_adv_reference, inputs=_adv_inputs, solution="group_advantages_s", rtol=1e-5, atol=1e-5,
        hint="view(-1, group_size); the std with Bessel's correction (torch's default); flatten back"),

    "14.dpo_loss_value": Exercise(
        "DPO (sigmoid) loss of one pair, beta 0.1, policy log-ratio +3 nats on chosen and -2 on rejected",
        _dpo_value, 0.002, "delta = 3 - (-2) = 5; the loss is -log sigmoid(0.1 x 5) = log(1 + e^-0.5)"),
    "14.best_of_16_kl_bound": Exercise(
        "KL bound log n - (n-1)/n of best-of-16 against the model it samples from, in nats",
        _bon_bound, 0.002, "log 16 = 2.7726; subtract 15/16"),
}

"""The on-policy step's pieces: a verifiable reward and GRPO's group advantage (built in lab 14 §6, run in §13).

`addition_reward` checks an answer to one of the lab's sums exactly (1.0 or 0.0: nothing to hack);
`group_advantages` normalises rewards within each prompt's group of completions, as TRL's
``GRPOTrainer`` does with ``scale_rewards="group"``.
"""
from __future__ import annotations

import re

import torch

from ..errors import LabkitError
from .checks import _float_tensor

__all__ = ["addition_reward", "group_advantages"]

def addition_reward(prompt: str, completion: str) -> float:
    """A verifiable reward: 1.0 when ``completion`` is exactly the lab's sentence for the prompt's sum.

    The prompt is one of `labkit.data`'s addition questions ("What is 17 plus 25?", "Add 3 and 4.");
    the answer must be ``"17 plus 25 is 42."`` (the first two numbers of the prompt, in order)."""
    nums = [int(x) for x in re.findall(r"\d+", prompt)]
    if len(nums) < 2:
        raise LabkitError(f"not an addition question (needs two numbers): {prompt!r}")
    x, y = nums[:2]
    return float(completion.strip() == f"{x} plus {y} is {x + y}.")


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage (Shao et al. 2024): each reward minus its group's mean, over the group's std + eps.

    ``rewards`` is flat, ``group_size`` completions of one prompt after another; the std is the
    unbiased one (Bessel), as TRL's ``GRPOTrainer`` (``scale_rewards="group"``) computes it. A
    group whose rewards are all equal gets advantage 0: nothing to learn from it."""
    rewards = _float_tensor(rewards, "rewards")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise LabkitError(f"group_size must be an integer >= 2, got {group_size!r}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise LabkitError(f"rewards must be flat with a multiple of group_size={group_size} values, "
                          f"got shape {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)

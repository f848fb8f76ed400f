"""RLHF's first half: a reward model and its Bradley-Terry loss (built in lab 14 §4, used in §9-10).

`RewardModel` puts a scalar head on a causal LM's decoder, named and read as transformers'
``*ForSequenceClassification`` (the two exchange state dicts); `pairwise_loss` is
``RewardTrainer.compute_loss``, margin and reward centring included.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LabkitError
from .checks import _float_tensor, _id_tensor, _same_shape

__all__ = ["RewardModel", "pairwise_loss"]

class RewardModel(nn.Module):
    """A causal LM's decoder with a scalar head: one reward per sequence.

    ``forward(input_ids, attention_mask=None)`` returns rewards of shape ``(batch,)``: the head
    (``score``, a bias-free ``Linear(hidden, 1)``) applied to the last hidden state of the
    rightmost token that is not ``pad_token_id`` (default: the LM's ``config.pad_token_id``).
    Submodules are named ``model`` and ``score`` as in transformers' ``*ForSequenceClassification``,
    so the two exchange state dicts."""

    def __init__(self, causal_lm, pad_token_id: int | None = None):
        super().__init__()
        if not hasattr(causal_lm, "get_decoder") or not hasattr(causal_lm, "config"):
            raise LabkitError(f"causal_lm must be a transformers causal LM (e.g. LlamaForCausalLM), "
                              f"got {type(causal_lm).__name__}")
        self.config = causal_lm.config.get_text_config()
        self.model = causal_lm.get_decoder()      # shared with causal_lm, not copied
        like = self.model.get_input_embeddings().weight
        self.score = nn.Linear(self.config.hidden_size, 1, bias=False, device=like.device, dtype=like.dtype)
        nn.init.normal_(self.score.weight, std=self.config.initializer_range)   # transformers' init of the head
        self.pad_token_id = self.config.pad_token_id if pad_token_id is None else pad_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        input_ids = _id_tensor(input_ids, "input_ids")
        batch, length = input_ids.shape
        if self.pad_token_id is None and batch != 1:
            raise LabkitError("a batch of more than one sequence needs pad_token_id, to find where each one ends")
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        scores = self.score(hidden).squeeze(-1)   # every position, then pick: the same bits as transformers
        if self.pad_token_id is None:
            last = torch.full((batch,), length - 1, device=input_ids.device)
        else:
            positions = torch.arange(length, device=input_ids.device, dtype=torch.int32)
            last = (positions * (input_ids != self.pad_token_id).to(torch.int32)).argmax(-1)
        return scores[torch.arange(batch, device=input_ids.device), last]


def pairwise_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin=None, *,
                  center_rewards_coefficient: float | None = None) -> torch.Tensor:
    """Bradley-Terry: mean of ``-log σ(r_chosen - r_rejected - margin)`` over the pairs.

    ``margin`` (a number or one per pair; Llama 2's reward model uses how much better the chosen
    one was rated) asks for a gap of at least that much. ``center_rewards_coefficient`` adds
    ``c · mean((r_chosen + r_rejected)²)`` to keep rewards near zero (Eisenstein et al. 2023), as
    ``RewardConfig.center_rewards_coefficient`` does."""
    chosen_rewards = _float_tensor(chosen_rewards, "chosen_rewards")
    rejected_rewards = _float_tensor(rejected_rewards, "rejected_rewards")
    _same_shape({"chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards})
    gap = chosen_rewards - rejected_rewards
    if margin is not None:
        gap = gap - margin
    loss = -F.logsigmoid(gap).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((chosen_rewards + rejected_rewards) ** 2)
    return loss

"""Preference tuning from scratch: preference pairs, a reward model, the DPO loss (lab 14).

SFT shows the model *one* good answer per prompt. Preference tuning shows it two -- a chosen and
a rejected one -- and teaches it which is better. Two routes, both built here:

* **RLHF's first half, the reward model** (lab 14 §4). A scalar head on the base model scores a
  whole sequence; it is trained on pairs with the Bradley-Terry loss
  ``-log σ(r_chosen - r_rejected)`` (optionally minus a margin), so that the chosen answer
  scores higher. PPO then maximises that score (lab 14 §3 shows the data it needs).
* **DPO** (lab 14 §5; Rafailov et al. 2023) skips the reward model: the policy's own
  log-probability ratio to a frozen reference *is* the reward, ``β·log π(y|x)/π_ref(y|x)``, and
  the same pairwise loss on those implicit rewards trains the policy directly. IPO (Azar et al.
  2023) replaces the log-sigmoid with a squared distance to ``1/(2β)``; hinge (SLiC) with
  ``max(0, 1 - β·Δ)``.

Each piece does what TRL 1.16 does, so a learner can swap one for the other (tests/test_preference.py
builds real trainers on a tiny Llama and compares loss and gradients on one collated batch):

===============================  ==========================================================
labkit                           TRL / transformers
===============================  ==========================================================
``preference_pairs(n)``          rows of a preference dataset (``{prompt, chosen, rejected}``)
``formats(pair)``                the SFT, RM/DPO and PPO records TRL's trainers take (§3)
``RewardModel(causal_lm)``       ``AutoModelForSequenceClassification(num_labels=1)``
``pairwise_loss(c, r)``          ``RewardTrainer.compute_loss`` (``margin``, ``center_rewards_coefficient``)
``sequence_logps(m, ids, lab)``  the token-summed log-probs in ``DPOTrainer._compute_loss``
``dpo_loss(...)``                the ``sigmoid`` / ``ipo`` / ``hinge`` losses there (per pair)
``implicit_rewards(p, r)``       the ``rewards/chosen`` and ``rewards/rejected`` it logs
===============================  ==========================================================

The lab's experiments share four small helpers: ``pair_batch`` (chosen rows then rejected rows,
one padded batch, TRL's order), ``addition_reward`` (a verifiable 0/1 reward for the lab's sums:
the on-policy step of §13), ``unknown_pairs`` (honesty pairs: a fact question about a made-up name,
chosen ``IDK`` = "I don't know.", rejected an invented fact; §14) and ``group_advantages`` (GRPO's
group-normalised advantage, as TRL's ``GRPOTrainer`` computes it with ``scale_rewards="group"``).

**The pairs (§3)** come from the lab's own data (`labkit.data`), so the base and SFT models of
the earlier labs have seen these prompts' kind and every answer can be checked. Chosen is always
the right answer; rejected is one of three typical failures:

* ``"wrong_fact"``: a fact question answered with another entity's attribute of the same
  relation ("The capital of Veloria is Oburn.");
* ``"off_by_one"``: an addition answered one too high or too low ("17 plus 25 is 43.");
* ``"no_stop"``: the right answer that does not stop -- it repeats until a length limit cuts it
  mid-sentence, the degenerate loop of lab 10. (The chat template still closes the turn with
  ``<|end|>``, so what the pair teaches is *stop after the answer*.)

Prompts belong to the split `labkit.data.split_of` gives them, as in `labkit.data.instructions`
(the same question wordings), so ``split="test"`` prompts were never trained on.

**Formats.** `formats` returns TRL's *conversational* records (lists of ``{"role", "content"}``
messages; the tokenizer's chat template renders them): SFT = prompt-completion
(``{"prompt": [user], "completion": [assistant]}``, loss on the completion only), RM and DPO =
preference with an explicit prompt (``{"prompt", "chosen", "rejected"}``), PPO = prompt-only
(``{"prompt": [user]}``: the policy writes the completion and the reward model scores it; TRL 1.x's
online trainers -- GRPO, RLOO -- take the same record, PPOTrainer having left TRL's core).

**Decisions, and why:**

* ``sequence_logps`` *sums* the answer tokens' log-probs: DPO's ratio is of whole-sequence
  probabilities. Tokens whose label is ``-100`` (prompt, padding) count zero. The logits are
  upcast to float32 before the log-softmax, as TRL's chunked kernel accumulates in float32.
* ``dpo_loss`` returns per-pair losses (TRL's loss is their mean) and the rewards detached: they
  are for logging, not for the gradient.
* IPO. TRL 1.x divides each sequence's *token-summed* log-ratio by its number of completion
  tokens before the squared loss (length-normalised IPO; the IPO authors confirmed it is what
  their paper's results used). Pass ``chosen_tokens`` / ``rejected_tokens`` (completion tokens per
  sequence, e.g. ``(labels != -100).sum(-1)``) to get exactly that; without them IPO is applied to
  the log-probs as given, as in the IPO paper's equation 17 and TRL 0.x's ``dpo_loss``.
* ``RewardModel`` shares the causal LM's decoder (training it changes that model: copy it first
  to keep the LM) and reads the score at the *rightmost token that is not padding*, found from
  ``input_ids`` exactly as transformers does it -- so it works for left and right padding, and
  its ``state_dict`` loads into ``LlamaForSequenceClassification`` (same keys, same scores).

One module per role, every name re-exported here, so ``from labkit import preference;
preference.dpo_loss(...)`` reads the same as before the split:

* `checks` -- the argument checks the losses share (lab 14 §4-6);
* `pairs` -- `preference_pairs`, `formats`, `KINDS` (lab 14 §3);
* `reward` -- `RewardModel` and `pairwise_loss` (lab 14 §4);
* `dpo` -- `sequence_logps`, `dpo_loss`, `implicit_rewards`, `pair_batch`, `LOSS_TYPES` (lab 14 §5);
* `onpolicy` -- `addition_reward` and `group_advantages` (lab 14 §6, §13);
* `honesty` -- `unknown_pairs` and `IDK` (lab 14 §14).
"""
from .. import data  # noqa: F401 -- a name of the module before the split
from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from .checks import _float_tensor, _id_tensor, _positive_number, _same_shape
from .pairs import (_ADD_ANSWER, _MAKERS, KINDS, _fact_qa, _no_stop, _off_by_one, _sum_qa, _wrong_fact, formats,
                    preference_pairs)
from .reward import RewardModel, pairwise_loss
from .dpo import IGNORE, LOSS_TYPES, _tokens, dpo_loss, implicit_rewards, pair_batch, sequence_logps
from .onpolicy import addition_reward, group_advantages
from .honesty import _SYLLABLES, IDK, _made_up_name, unknown_pairs

__all__ = ["IDK", "KINDS", "LOSS_TYPES", "RewardModel", "addition_reward", "dpo_loss", "formats", "group_advantages",
           "implicit_rewards", "pair_batch", "pairwise_loss", "preference_pairs", "sequence_logps", "unknown_pairs"]

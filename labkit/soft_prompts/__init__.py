"""Soft prompts, prefixes, (IA)^3 and Freeze from scratch: fine-tuning by training almost nothing.

Built in lab 13 ("The PEFT family": section 3 writes each method, section 4 checks it against
peft). LoRA (lab 04) adds a low-rank update to chosen weights. The methods here train even
fewer numbers, and each touches the model at a different place:

=====================  ====================================================  ===========================
labkit                 what trains                                           peft 0.21
=====================  ====================================================  ===========================
`PromptTuning`         ``n`` virtual-token embeddings put before the input   ``PromptTuningConfig``
`PromptEncoder`        the same, but produced by an MLP / LSTM from ``n``    ``PromptEncoderConfig``
                       embeddings (P-tuning; the encoder is dropped after     (P-tuning)
                       training, only its ``n`` outputs are needed)
`PrefixTuning`         a key and a value per virtual token *in every layer*  ``PrefixTuningConfig``
                       (through the KV cache), optionally produced by an
                       MLP (the "reparametrisation", P-tuning v2 without it)
`inject_ia3`           one vector per chosen linear layer that rescales its  ``IA3Config``
                       output (keys, values) or its input (the MLP's down
                       projection)
`freeze`               nothing new: the last ``k`` decoder layers (or some   (LLaMA-Factory's "freeze";
                       of their modules) train, everything else is frozen    peft has none)
=====================  ====================================================  ===========================

Why prompts work at all: a frozen decoder already computes "what comes next given this context";
prompt tuning (Lester et al. 2021) searches the *continuous* space of contexts for one that makes
the task's answers likely. Prefix tuning (Li & Liang 2021) gives that context a say in every
layer, not only through the first: each layer's attention reads ``[prefix keys; keys]`` and
``[prefix values; values]``, which is exactly what a KV cache holding ``n`` earlier tokens looks
like -- so the prefix is handed to the model as ``past_key_values``. (IA)^3 (Liu et al. 2022)
learns ``l_k, l_v, l_ff`` with ``k' = l_k * k``, ``v' = l_v * v``, ``ff' = W_down (l_ff * h)``,
all ones at the start, so step 0 is the pretrained model.

Each wrapper's ``forward(input_ids, attention_mask=None, labels=None)`` runs the frozen model
exactly as peft's ``PeftModelForCausalLM.forward`` does: same concatenations, same casts, same
order of operations, so the logits and loss are bit-for-bit peft's given the same weights
(`load_from_peft` / `copy_to_peft` copy them either way). How the virtual tokens are treated:

* prompt tuning and P-tuning *prepend* ``n`` embeddings: the output has ``n + length``
  positions, like peft's; ``logits[:, n:]`` are the real tokens'. The mask gets ``n`` ones in
  front, the labels ``n`` times -100 (no loss is asked of a virtual token -- but the *last*
  virtual position predicts ``labels[:, 0]``, which a plain model never does);
* prefix tuning adds nothing to the sequence: ``length`` positions come out, the prefix sits in
  the cache, and (as in peft) the real tokens' positions start at ``n`` (rotary positions
  ``n .. n + length - 1``), because the model counts the cached prefix as earlier tokens.

`count_parameters` answers "how many numbers train?" for any config or labkit model name (on the
``meta`` device, so Llama-2-7B costs nothing) -- equal to peft's ``get_nb_trainable_parameters``.

One module per role, every name re-exported here, so ``from labkit import soft_prompts as sp;
sp.PromptTuning(model)`` reads the same as before the split:

* `checks` -- the argument checks, `trainable_parameters` and `_dims` every method shares (lab 13 §3);
* `prompts` -- `PromptTuning` and `PromptEncoder` (`PTuning`): virtual tokens before the input (lab 13 §3);
* `prefix` -- `PrefixTuning`: a key/value prefix in every layer's cache (lab 13 §3);
* `ia3` -- `IA3Linear`, `inject_ia3`, `ia3_layers` and peft's default targets (lab 13 §3);
* `freezing` -- `freeze`: train only the last ``k`` layers or chosen modules of them (lab 13 §3);
* `peft_copy` -- `load_from_peft` and `copy_to_peft` (lab 13 §4);
* `count` -- `count_parameters` on the ``meta`` device, `METHODS` (lab 13 §3, §6, §8).
"""
from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from .checks import _check_model, _dims, _freeze_all, _positive_int, trainable_parameters
from .prompts import PromptEncoder, PromptTuning, PTuning, _VirtualTokens
from .prefix import PrefixTuning
from .ia3 import (IA3_FEEDFORWARD, IA3_TARGETS, IA3Linear, _as_names, _features, _ia3_targets, _is_feedforward,
                  _is_target, ia3_layers, inject_ia3)
from .freezing import _decoder_layers, freeze
from .peft_copy import _own_state, _pairs, copy_to_peft, load_from_peft
from .count import LORA_TARGETS, METHODS, count_parameters

__all__ = ["IA3Linear", "METHODS", "PTuning", "PrefixTuning", "PromptEncoder", "PromptTuning", "copy_to_peft",
           "count_parameters", "freeze", "ia3_layers", "inject_ia3", "load_from_peft", "trainable_parameters"]

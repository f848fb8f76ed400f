"""How many numbers train? `count_parameters` for any method on any config (built in lab 13 §3, used in §6 and §8).

It builds the model on the ``meta`` device and applies labkit's own method, so a 7B model costs
nothing and the count is peft's ``get_nb_trainable_parameters()[0]`` by construction, not by a
formula that could drift from the code.
"""
from __future__ import annotations

from ..errors import LabkitError
from .checks import trainable_parameters
from .freezing import freeze
from .ia3 import inject_ia3
from .prefix import PrefixTuning
from .prompts import PromptEncoder, PromptTuning

__all__ = ["count_parameters", "METHODS", "LORA_TARGETS"]

# what count_parameters can count
METHODS = ("prompt_tuning", "p_tuning", "prefix_tuning", "ia3", "lora", "freeze")

# peft's default LoRA targets when target_modules is not given (peft.utils.constants)
LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"],
                "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"]}


def count_parameters(config, method: str, *, num_virtual_tokens: int = 20, encoder_hidden_size: int | None = None,
                     prefix_projection: bool = False, target_modules=None, feedforward_modules=None,
                     encoder_reparameterization_type: str = "MLP", encoder_num_layers: int = 2,
                     freeze_last_k: int | None = None, r: int | None = None) -> int:
    """Trainable parameters of ``method`` on a model (a transformers config or a labkit model
    name), equal to peft's ``get_nb_trainable_parameters()[0]``. Built in lab 13, section 3.

    It builds the model on ``meta`` (no memory) and applies labkit's own method. By formula, with
    ``n`` virtual tokens, hidden ``d``, ``L`` layers, ``kv = kv_heads * head_dim``:

    * ``"prompt_tuning"``: ``n * d``;
    * ``"p_tuning"`` (``h = encoder_hidden_size or d``): MLP ``n*d + (d*h + h) + (h*h + h) + (h*d + d)``;
      LSTM ``n*d`` + the bidirectional LSTM + ``(2h*2h + 2h) + (2h*d + d)``;
    * ``"prefix_tuning"``: ``n * L * 2 * kv``; with ``prefix_projection`` (``h = encoder_hidden_size
      or kv``): ``n*kv + (kv*h + h) + (h*L*2*kv + L*2*kv)``;
    * ``"ia3"``: the output size of each target, the input size of each feedforward target
      (``target_modules`` / ``feedforward_modules`` as `inject_ia3`);
    * ``"lora"`` (needs ``r``): ``r * (d_in + d_out)`` per target (default: peft's, ``q_proj, v_proj``);
    * ``"freeze"`` (needs ``freeze_last_k`` and/or ``target_modules``, the modules of `freeze`): the
      parameters of the last ``freeze_last_k`` layers (or of those modules in them).
    """
    from .. import models

    if method not in METHODS:
        raise LabkitError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    model = models.build(models.resolve_config(config), device="meta")
    if method == "prompt_tuning":
        model = PromptTuning(model, num_virtual_tokens)
    elif method == "p_tuning":
        model = PromptEncoder(model, num_virtual_tokens, encoder_hidden_size, encoder_reparameterization_type,
                              encoder_num_layers)
    elif method == "prefix_tuning":
        model = PrefixTuning(model, num_virtual_tokens, prefix_projection, encoder_hidden_size)
    elif method == "ia3":
        inject_ia3(model, target_modules, feedforward_modules)
    elif method == "lora":
        from ..lora import inject_lora

        if r is None:
            raise LabkitError("method='lora' needs r=<rank>")
        if target_modules is None:
            if model.config.model_type not in LORA_TARGETS:
                raise LabkitError(f"no default LoRA targets for model type {model.config.model_type!r}; "
                                  "pass target_modules=[...]")
            target_modules = LORA_TARGETS[model.config.model_type]
        inject_lora(model, r=r, alpha=r, target_modules=target_modules)
    else:
        if freeze_last_k is None and target_modules is None:
            raise LabkitError("method='freeze' needs freeze_last_k=<layers to train> (and/or target_modules=[...])")
        freeze(model, last_k=freeze_last_k, modules=target_modules)
    return trainable_parameters(model)

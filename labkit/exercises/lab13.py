"""Lab 13: the PEFT family -- the exercises at the end of the notebook.

The code exercises run the learner's function on fresh random Llama-shaped configurations and
prefixes against `labkit.soft_prompts` (which lab 13, section 4 proves equal to peft); the
numbers are computed from labkit's model configs on the ``meta`` device.
"""
from __future__ import annotations

from .checker import CodeExercise, Exercise, draw_int

_FREEZE_MODULES = [None, ["mlp"], ["self_attn"], ["self_attn.v_proj"], ["mlp.down_proj", "input_layernorm"]]
_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _config(gen):
    from transformers import LlamaConfig

    heads = draw_int(gen, 1, 8)
    divisors = [h for h in range(1, heads + 1) if heads % h == 0]
    kv = divisors[draw_int(gen, 0, len(divisors) - 1)]
    head_dim = 4 * draw_int(gen, 1, 8)
    return LlamaConfig(vocab_size=draw_int(gen, 10, 500), hidden_size=head_dim * heads,
                       intermediate_size=draw_int(gen, 4, 300), num_hidden_layers=draw_int(gen, 1, 6),
                       num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim)


def _count_inputs(gen):
    config = _config(gen)
    method = ["prompt_tuning", "p_tuning", "prefix_tuning", "prefix_tuning", "ia3", "lora", "freeze"][draw_int(gen, 0, 6)]
    kw = {"num_virtual_tokens": draw_int(gen, 1, 40)}
    if method in ("p_tuning", "prefix_tuning") and draw_int(gen, 0, 1):
        kw["encoder_hidden_size"] = draw_int(gen, 1, 64)
    if method == "prefix_tuning":
        kw["prefix_projection"] = bool(draw_int(gen, 0, 1))
    if method in ("ia3", "lora") and draw_int(gen, 0, 1):
        kw["target_modules"] = [m for m in _LINEARS if draw_int(gen, 0, 1)] or ["v_proj"]
    if method == "lora":
        kw["r"] = draw_int(gen, 1, 16)
    if method == "freeze":
        kw["last_k"] = draw_int(gen, 1, config.num_hidden_layers)
        kw["target_modules"] = _FREEZE_MODULES[draw_int(gen, 0, len(_FREEZE_MODULES) - 1)]
    return config, method, kw


def _count_run(fn, args):
    config, method, kw = args
    return fn(config, method, **kw)


def _count_reference(config, method, kw):
    from .. import soft_prompts

    kw = {("freeze_last_k" if k == "last_k" else k): v for k, v in kw.items()}
    return soft_prompts.count_parameters(config, method, **kw)


def _prefix_inputs(gen):
    import torch

    batch, n, layers = draw_int(gen, 1, 3), draw_int(gen, 1, 6), draw_int(gen, 1, 4)
    kv_heads, head_dim = draw_int(gen, 1, 4), 2 * draw_int(gen, 1, 4)
    row = torch.randn(1, n, layers * 2 * kv_heads * head_dim, generator=gen)
    return row.expand(batch, -1, -1).contiguous(), layers, kv_heads, head_dim   # one prefix, copied per row


def _prefix_reference(flat, num_layers, kv_heads, head_dim):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .. import soft_prompts

    config = LlamaConfig(vocab_size=8, hidden_size=kv_heads * head_dim, intermediate_size=4,
                         num_hidden_layers=num_layers, num_attention_heads=kv_heads, num_key_value_heads=kv_heads,
                         head_dim=head_dim)
    prefix = soft_prompts.PrefixTuning(LlamaForCausalLM(config), flat.shape[1])
    with torch.no_grad():
        prefix.embedding.weight.copy_(flat[0])
    return [tuple(kv) for kv in prefix.prefix(flat.shape[0])]


def _prefix_7b_n30() -> float:
    from .. import soft_prompts

    return soft_prompts.count_parameters("llama-2-7b", "prefix_tuning", num_virtual_tokens=30)


def _ia3_smollm2() -> float:
    from .. import soft_prompts

    return soft_prompts.count_parameters("smollm2-135m", "ia3")


def _lora_smollm2() -> float:
    from .. import soft_prompts

    return soft_prompts.count_parameters("smollm2-135m", "lora", r=4, target_modules=["q_proj", "v_proj"])


EXERCISES = {
    "13.count_parameters": CodeExercise(
        question="write count_parameters_s(config, method, *, num_virtual_tokens=20, encoder_hidden_size=None, "
                 "prefix_projection=False, target_modules=None, r=None, last_k=None): trainable parameters of "
                 "prompt_tuning, p_tuning (MLP), prefix_tuning, ia3, lora and freeze on a Llama config",
        reference=_count_reference, inputs=_count_inputs, run=_count_run, solution="count_parameters_s",
        rtol=0, atol=0,
        hint="kv_dim = kv_heads x head_dim; prefix: n x layers x 2 x kv_dim (with the MLP: n x kv + kv x h + h + "
             "h x layers x 2 x kv + layers x 2 x kv, h defaulting to kv_dim); P-tuning's h defaults to hidden; "
             "(IA)3 counts each module's output size, the input size for down_proj"),
    "13.prefix_cache": CodeExercise(
        question="write prefix_cache_s(flat, num_layers, kv_heads, head_dim): a (batch, n, layers x 2 x kv_dim) "
                 "prefix as one (keys, values) pair per layer, each (batch, kv_heads, n, head_dim)",
        reference=_prefix_reference, inputs=_prefix_inputs, solution="prefix_cache_s", rtol=0, atol=0,
        hint="view as (batch, n, 2 x layers, kv_heads, head_dim), permute to (2 x layers, batch, kv_heads, n, head_dim); "
             "layer i's keys are chunk 2i, its values chunk 2i + 1"),

    "13.prefix_params_llama2_7b_n30": Exercise(
        "trainable parameters of prefix tuning (no reparametrisation), 30 virtual tokens, Llama-2-7B",
        _prefix_7b_n30, 1e-9, "n x layers x 2 (keys and values) x kv_heads x head_dim"),
    "13.ia3_params_smollm2": Exercise(
        "trainable parameters of (IA)3 on smollm2-135m with peft's defaults (k_proj, v_proj, down_proj)",
        _ia3_smollm2, 1e-9, "per layer: k's and v's output size (kv_heads x head_dim each) + down_proj's input "
                            "size (the MLP width)"),
    "13.lora_params_smollm2_r4_qv": Exercise(
        "trainable parameters of LoRA r=4 on q_proj and v_proj of smollm2-135m (the larger model of section 7)",
        _lora_smollm2, 1e-9, "per layer and module: r x (in + out); q is 576 -> 576, v is 576 -> 3 x 64"),
}

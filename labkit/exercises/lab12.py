"""Lab 12: GPU utilisation -- the exercises at the end of the notebook.

The code exercises run the learner's function on fresh random Llama-shaped configurations
against `labkit.flops` (proven equal to torch's FlopCounterMode in lab 12, section 4); the
numbers are computed from labkit's model configs.
"""
from __future__ import annotations

from .checker import CodeExercise, Exercise, draw_int


def _config(gen):
    from transformers import LlamaConfig

    heads = draw_int(gen, 1, 8)
    kv = [h for h in range(1, heads + 1) if heads % h == 0][draw_int(gen, 0, sum(1 for h in range(1, heads + 1)
                                                                         if heads % h == 0) - 1)]
    head_dim = 8 * draw_int(gen, 1, 8)
    return LlamaConfig(vocab_size=draw_int(gen, 10, 5000), hidden_size=head_dim * heads, intermediate_size=draw_int(gen, 8, 900),
                       num_hidden_layers=draw_int(gen, 1, 12), num_attention_heads=heads, num_key_value_heads=kv,
                       head_dim=head_dim)


def _fpt_inputs(gen):
    return (_config(gen), draw_int(gen, 1, 4096), bool(draw_int(gen, 0, 1)), ["eager", "sdpa"][draw_int(gen, 0, 1)])


def _fpt_reference(config, seq_len, training, attn):
    from .. import flops

    return float(flops.flops_per_token(config, seq_len, training=training, attn_implementation=attn))


def _mfu_inputs(gen):
    import torch

    return (float(torch.empty(1).uniform_(10, 1e5, generator=gen)), _config(gen), draw_int(gen, 1, 4096),
            float(torch.empty(1).uniform_(1e12, 2e15, generator=gen)))


def _mfu_reference(tokens_per_s, config, seq_len, peak):
    from .. import flops

    return flops.mfu(tokens_per_s, config, seq_len, peak)


def _gflops_7b_4096() -> float:
    from .. import flops, models

    return flops.flops_per_token(models.config("llama-2-7b"), 4096, attn_implementation="eager") / 1e9


def _mfu_7b_3000() -> float:
    from .. import flops, models

    return flops.mfu(3000, models.config("llama-2-7b"), 2048, 989.4e12)


EXERCISES = {
    "12.flops_per_token": CodeExercise(
        question="write flops_per_token_s(config, seq_len, training=True, attn_implementation='eager'): 6N (2N forward "
                 "only) for the matmul weights plus attention's two matmuls (all s keys for eager, (s+1)/2 causal)",
        reference=_fpt_reference, inputs=_fpt_inputs, solution="flops_per_token_s", rtol=1e-9, atol=0,
        hint="N = q, k, v, o (k and v have kv_heads x head_dim outputs) + gate/up/down of every layer + the LM head "
             "(no embedding); attention: 4 x layers x heads x head_dim x keys per token forward; training x3"),
    "12.mfu": CodeExercise(
        question="write mfu_s(tokens_per_s, config, seq_len, peak_flops): model-FLOPs utilisation with PaLM's "
                 "6N + 12·L·d·s per token",
        reference=_mfu_reference, inputs=_mfu_inputs, solution="mfu_s", rtol=1e-9, atol=0,
        hint="tokens/s x training FLOPs per token with eager (full s x s) attention, divided by the peak"),

    "12.llama2_7b_gflops_per_token_4096": Exercise(
        "GFLOP per token of a Llama-2-7B training step at 4,096 tokens, eager attention", _gflops_7b_4096, 0.001,
        "6 x (matmul weights) + 12 x layers x hidden x seq_len; the embedding is not a matmul"),
    "12.mfu_llama2_7b_3000_h100": Exercise(
        "MFU of Llama-2-7B at 2,048 tokens and 3,000 tokens/s on one H100 SXM (989.4 TFLOP/s bf16), as a fraction",
        _mfu_7b_3000, 0.002, "tokens/s x (6N + 12 L d s) / 989.4e12"),
}

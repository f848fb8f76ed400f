"""The named model configurations: each architecture written out from its published ``config.json``.

A table, not logic: `labkit.models` reads it (`names`, `config`, `build`, `published_params`) and
re-exports it. Labs 00 §4 and 01 §2 build these configurations through `labkit.models` (on ``meta``
to count parameters, on the CPU to run).
"""
from __future__ import annotations

from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

LAB_VOCAB_SIZE = 2048  # size of the lab BPE tokenizer (labkit.tokenizer)


def _llama(**kw) -> LlamaConfig:
    base = dict(hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=False,
                attention_bias=False, mlp_bias=False, rope_theta=10000.0)
    base.update(kw)
    rope_theta = base.pop("rope_theta")
    rope_scaling = base.pop("rope_scaling", None)
    cfg = LlamaConfig(**base)
    # transformers 5 keeps rope settings in `rope_parameters`; older ones in rope_theta/rope_scaling
    if hasattr(cfg, "rope_parameters") and cfg.rope_parameters is not None:
        params = {"rope_type": "default", "rope_theta": rope_theta}
        if rope_scaling:
            params.update(rope_scaling)
        cfg.rope_parameters = params
    else:
        cfg.rope_theta = rope_theta
        cfg.rope_scaling = rope_scaling
    return cfg


def _qwen2(**kw) -> Qwen2Config:
    base = dict(hidden_act="silu", rms_norm_eps=1e-6, rope_theta=1_000_000.0, use_sliding_window=False)
    base.update(kw)
    rope_theta = base.pop("rope_theta")
    cfg = Qwen2Config(**base)
    if hasattr(cfg, "rope_parameters") and cfg.rope_parameters is not None:
        cfg.rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}
    else:
        cfg.rope_theta = rope_theta
    return cfg


# name -> (factory, published parameter count or None, one-line description)
# Counts are the ones the model cards / papers report, checked by tests on `meta`.
_REGISTRY = {
    "lab-tiny": (lambda: _llama(vocab_size=LAB_VOCAB_SIZE, hidden_size=256, intermediate_size=768,
                                num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                                pad_token_id=0),
                 None, "lab model, Llama architecture, ~4.5M params, pretrained on the lab corpus"),
    "lab-small": (lambda: _llama(vocab_size=LAB_VOCAB_SIZE, hidden_size=512, intermediate_size=1536,
                                 num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                                 max_position_embeddings=1024, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=0),
                  None, "lab model, Llama architecture, ~29M params (precision/checkpointing labs)"),
    "smollm2-135m": (lambda: _llama(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                    max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=2),
                     134_515_008, "SmolLM2-135M-Instruct (Hugging Face 2025), the real pretrained model "
                                  "(`make model` installs it)"),
    "gpt2": (lambda: GPT2Config(), 124_439_808, "GPT-2 small (OpenAI 2019), tied embeddings"),
    "llama-2-7b": (lambda: _llama(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                  max_position_embeddings=4096),
                   6_738_415_616, "Llama-2-7B (Meta 2023)"),
    "llama-2-13b": (lambda: _llama(vocab_size=32000, hidden_size=5120, intermediate_size=13824,
                                   num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                                   max_position_embeddings=4096),
                    13_015_864_320, "Llama-2-13B (Meta 2023)"),
    "llama-3-8b": (lambda: _llama(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                  max_position_embeddings=8192, rope_theta=500000.0),
                   8_030_261_248, "Llama-3-8B (Meta 2024), grouped-query attention (8 KV heads)"),
    "llama-3.2-1b": (lambda: _llama(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                    num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                    max_position_embeddings=131072, rope_theta=500000.0,
                                    tie_word_embeddings=True,
                                    rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                  "original_max_position_embeddings": 8192}),
                     1_235_814_400, "Llama-3.2-1B (Meta 2024), tied embeddings"),
    "qwen2.5-0.5b": (lambda: _qwen2(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                    num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                    max_position_embeddings=32768, tie_word_embeddings=True),
                     494_032_768, "Qwen2.5-0.5B (Alibaba 2024), tied embeddings, q/k/v bias"),
    "qwen2.5-1.5b": (lambda: _qwen2(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                    num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                                    max_position_embeddings=32768, tie_word_embeddings=True),
                     1_543_714_304, "Qwen2.5-1.5B (Alibaba 2024), tied embeddings"),
    "qwen2.5-7b": (lambda: _qwen2(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                  num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                  max_position_embeddings=32768, tie_word_embeddings=False),
                   7_615_616_512, "Qwen2.5-7B (Alibaba 2024)"),
    # ChatGLM-6B (GLM architecture) has no class in transformers; GPT-NeoX has the
    # same parts (fused qkv with bias, LayerNorm, 4h GELU MLP, rotary on part of
    # each head, tied output), so this stand-in has ChatGLM-6B's exact size.
    "chatglm-6b": (lambda: GPTNeoXConfig(vocab_size=130528, hidden_size=4096, intermediate_size=16384,
                                         num_hidden_layers=28, num_attention_heads=32,
                                         max_position_embeddings=2048, rotary_pct=0.5,
                                         tie_word_embeddings=True),
                   6_173_286_400, "ChatGLM-6B-sized stand-in (GPT-NeoX layers), 6.2B"),
}

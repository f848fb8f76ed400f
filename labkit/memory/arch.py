"""Reading an architecture: the sizes of a decoder-only model that its memory depends on.

`architecture(config)` turns a `labkit.models` name or a transformers config into an
`Architecture` (hidden size, heads, KV heads, layers, biases, ...), and
`Architecture.param_tensors` lists every parameter tensor by role. The estimator
(`labkit.memory.estimate`), the replay (`labkit.memory.ops`) and `labkit.flops` all read a
model through it, so memory and FLOPs agree on one reading of a config. Lab 00 §4 builds the
parameter count (``llama_params``); lab 01 §2 uses it for the bill.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from ..errors import LabkitError

__all__ = ["Architecture", "architecture", "FAMILIES", "supported_models"]


@dataclass(frozen=True)
class Architecture:
    """The sizes of a decoder-only transformer that memory depends on."""

    kind: str                 # "llama": Llama, Qwen2, Mistral (the only family modelled)
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    attn_dropout: float
    name: str = ""
    context: int = 0          # max_position_embeddings: the sequence length the model was trained for (0: unknown)

    def linears(self) -> dict[str, tuple[int, int, bool]]:
        """Linear layers of one decoder layer: name -> (in_features, out_features, has_bias)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q, self.qkv_bias), "k_proj": (h, kv, self.qkv_bias), "v_proj": (h, kv, self.qkv_bias),
                "o_proj": (q, h, self.o_bias), "gate_proj": (h, i, self.mlp_bias),
                "up_proj": (h, i, self.mlp_bias), "down_proj": (i, h, self.mlp_bias)}

    def param_tensors(self) -> list[tuple[str, int, str]]:
        """Every parameter tensor as (name, numel, role); role is 'linear', 'bias', 'norm', 'embed' or 'head'.

        Only 'linear' weights of the decoder layers are quantized by bitsandbytes
        (the embedding and the output head stay in 16/32-bit)."""
        per_layer = []
        for name, (n_in, n_out, bias) in self.linears().items():
            per_layer.append((name, n_in * n_out, "linear"))
            if bias:
                per_layer.append((name + ".bias", n_out, "bias"))
        per_layer += [("input_layernorm", self.hidden, "norm"), ("post_attention_layernorm", self.hidden, "norm")]
        tensors = [("embed_tokens", self.vocab * self.hidden, "embed")]
        for layer in range(self.layers):
            tensors += [(f"layers.{layer}.{name}", n, role) for name, n, role in per_layer]
        tensors.append(("norm", self.hidden, "norm"))
        if not self.tied:
            tensors.append(("lm_head", self.vocab * self.hidden, "head"))
        return tensors

    @property
    def n_params(self) -> int:
        """Parameter count from the shapes (built in lab 00, section 4, as ``llama_params``)."""
        return sum(n for _, n, _ in self.param_tensors())


FAMILIES = ("llama", "qwen2", "mistral")   # the model types the replay of `llama_layer_ops` models


def architecture(config) -> Architecture:
    """The `Architecture` of a `labkit.models` name or a Llama-family transformers config."""
    from .. import models

    if isinstance(config, str) and config not in models.names():
        # models' own message lists every architecture it knows, gpt2 included; list what works here
        raise LabkitError(f"unknown model {config!r}; memory estimates know {', '.join(supported_models())} "
                          "(or pass a Llama-family transformers config)")
    cfg = models.resolve_config(config)
    model_type = getattr(cfg, "model_type", "")
    if model_type in FAMILIES:
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        qwen = model_type == "qwen2"
        if getattr(cfg, "use_sliding_window", False) and qwen:
            raise LabkitError("sliding-window attention is not modelled; set use_sliding_window=False")
        return Architecture(kind="llama", vocab=cfg.vocab_size, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                     heads=heads, kv_heads=getattr(cfg, "num_key_value_heads", None) or heads, head_dim=head_dim,
                     intermediate=cfg.intermediate_size, tied=bool(cfg.tie_word_embeddings),
                     qkv_bias=True if qwen else bool(getattr(cfg, "attention_bias", False)),
                     o_bias=False if qwen else bool(getattr(cfg, "attention_bias", False)),
                     mlp_bias=bool(getattr(cfg, "mlp_bias", False)),
                     attn_dropout=float(getattr(cfg, "attention_dropout", 0.0) or 0.0),
                     name=config if isinstance(config, str) else model_type,
                     context=int(getattr(cfg, "max_position_embeddings", 0) or 0))
    what = f"{config!r} ({model_type})" if isinstance(config, str) and config != model_type else repr(model_type)
    raise LabkitError(f"memory estimates support Llama-family models ({', '.join(FAMILIES)}), not {what}; "
                      f"use one of {', '.join(supported_models())} or a Llama-family transformers config")


@functools.lru_cache(maxsize=1)
def _supported_names() -> tuple[str, ...]:
    from .. import models

    return tuple(n for n in models.names() if getattr(models.config(n), "model_type", "") in FAMILIES)


def supported_models() -> list[str]:
    """The `labkit.models` names `estimate` accepts: the Llama-family ones (not gpt2, not the GPT-NeoX stand-in)."""
    return list(_supported_names())


_Arch, _arch = Architecture, architecture   # the names before the package split (issue 24)

"""Prefix tuning / P-tuning v2: a key and a value per virtual token in every layer (built in lab 13 §3).

Kept apart from the prompt methods because it touches the model elsewhere: not the input
embeddings but each layer's attention, handed over as a ``DynamicCache`` of ``n`` "earlier
tokens" -- the sequence keeps its length and the real tokens' positions start at ``n``, as in peft.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from ..errors import LabkitError
from .checks import _check_model, _dims, _freeze_all, _positive_int

__all__ = ["PrefixTuning"]

class PrefixTuning(nn.Module):
    """Prefix tuning (Li & Liang 2021) / P-tuning v2 (Liu et al. 2022): every layer gets
    ``num_virtual_tokens`` trainable keys and values in front of its own. Built in lab 13, section 3.

    The prefix has ``layers * 2 * kv_dim`` numbers per virtual token (``kv_dim = kv_heads *
    head_dim``: with grouped-query attention only the key/value heads get a prefix, as in peft):

    * ``prefix_projection=False`` (P-tuning v2): an ``nn.Embedding(n, layers * 2 * kv_dim)`` *is*
      the prefix;
    * ``prefix_projection=True`` (the original's reparametrisation, steadier training):
      ``Embedding(n, kv_dim) -> Linear(kv_dim, h) -> tanh -> Linear(h, layers * 2 * kv_dim)``,
      ``h = encoder_hidden_size`` (default ``kv_dim``, peft's default).

    The prefix is handed to the model as a ``DynamicCache`` holding ``n`` "earlier tokens", and the
    attention mask gets ``n`` ones in front -- so the output has ``length`` positions and the real
    tokens' positions start at ``n``, as in peft.
    """

    def __init__(self, model: nn.Module, num_virtual_tokens: int = 20, prefix_projection: bool = False,
                 encoder_hidden_size: int | None = None):
        super().__init__()
        _check_model(model)
        if getattr(model, "is_gradient_checkpointing", False):
            raise LabkitError("prefix tuning lives in the KV cache, which gradient checkpointing does not support "
                              "(peft refuses it too); call model.gradient_checkpointing_disable() first")
        self.model = model
        _freeze_all(model)
        dims = _dims(model.config)
        self.num_virtual_tokens = n = _positive_int(num_virtual_tokens, "num_virtual_tokens")
        self.num_layers, self.kv_heads, self.head_dim = dims["layers"], dims["kv_heads"], dims["head_dim"]
        kv_dim = self.kv_heads * self.head_dim
        prefix_size = self.num_layers * 2 * kv_dim
        self.prefix_projection = bool(prefix_projection)
        h = kv_dim if encoder_hidden_size is None else _positive_int(encoder_hidden_size, "encoder_hidden_size")
        if self.prefix_projection:                  # (without the projection h is unused, as in peft)
            self.embedding = nn.Embedding(n, kv_dim)
            self.transform = nn.Sequential(nn.Linear(kv_dim, h), nn.Tanh(), nn.Linear(h, prefix_size))
        else:
            self.embedding = nn.Embedding(n, prefix_size)
        self.to(model.get_input_embeddings().weight.device)

    def prefix(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One ``(keys, values)`` pair per layer, each ``(batch, kv_heads, n, head_dim)`` -- the
        layout of a KV cache."""
        n = self.num_virtual_tokens
        tokens = torch.arange(n, device=self.embedding.weight.device).unsqueeze(0).expand(batch_size, -1)
        flat = self.embedding(tokens)                                   # (batch, n, L * 2 * kv_dim) ...
        if self.prefix_projection:
            flat = self.transform(flat)                                 # ... or made from (batch, n, kv_dim)
        flat = flat.to(self.model.dtype)
        kv = flat.view(batch_size, n, 2 * self.num_layers, self.kv_heads, self.head_dim)
        kv = kv.permute(2, 0, 3, 1, 4)                                  # (2L, batch, kv_heads, n, head_dim)
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(self.num_layers)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None):
        """The model's output on ``input_ids`` with the prefix in every layer's cache: ``.logits``
        has ``length`` positions."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise LabkitError("input_ids must be a (batch, length) tensor of token ids")
        batch = input_ids.shape[0]
        cache = DynamicCache(self.prefix(batch))     # fresh every call: the forward appends to it
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(batch, self.num_virtual_tokens), attention_mask],
                                       dim=1)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, labels=labels)

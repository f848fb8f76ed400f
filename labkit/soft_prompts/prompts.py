"""Virtual tokens in front of the input: prompt tuning and P-tuning (built in lab 13 §3, checked in §4).

Both put ``n`` trained embeddings before the input embeddings of a frozen model; they differ only
in where those embeddings come from -- free parameters (`PromptTuning`), or the output of a small
MLP/LSTM run on them (`PromptEncoder`, alias `PTuning`). `_VirtualTokens` holds what they share,
so the mask and label handling is written once and matches peft's ``forward`` bit for bit.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import LabkitError
from .checks import _check_model, _freeze_all, _positive_int

__all__ = ["PromptTuning", "PromptEncoder", "PTuning", "_VirtualTokens"]

class _VirtualTokens(nn.Module):
    """What prompt tuning and P-tuning share: freeze the model, put ``prompts(batch)`` in front of
    the input embeddings, extend the mask with ones and the labels with -100, run the model."""

    def __init__(self, model: nn.Module, num_virtual_tokens: int):
        super().__init__()
        _check_model(model)
        self.num_virtual_tokens = _positive_int(num_virtual_tokens, "num_virtual_tokens")
        self.model = model
        _freeze_all(model)

    def prompts(self, batch_size: int) -> torch.Tensor:
        """``(batch_size, num_virtual_tokens, hidden)`` virtual-token embeddings."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None):
        """The model's output on ``[virtual tokens; input_ids]``: ``.logits`` has
        ``num_virtual_tokens + length`` positions (the real ones are ``logits[:, n:]``), ``.loss``
        is over the real labels only."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise LabkitError("input_ids must be a (batch, length) tensor of token ids")
        batch, n = input_ids.shape[0], self.num_virtual_tokens
        embeds = self.model.get_input_embeddings()(input_ids)
        prompts = self.prompts(batch).to(embeds.dtype)
        inputs_embeds = torch.cat([prompts, embeds], dim=1)
        if attention_mask is not None:         # the virtual tokens are always attended to
            attention_mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)
        if labels is not None:                 # and never asked to be predicted
            labels = torch.cat([labels.new_full((batch, n), -100), labels], dim=1)
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels)

    def _tokens(self) -> torch.Tensor:
        return torch.arange(self.num_virtual_tokens, device=self.embedding.weight.device).unsqueeze(0)


class PromptTuning(_VirtualTokens):
    """Prompt tuning (Lester et al. 2021): ``num_virtual_tokens`` trainable embeddings in front of
    every input; the model is frozen. Built in lab 13, section 3.

    ``init`` (peft's ``prompt_tuning_init``): ``"random"`` -- N(0, 1), like any ``nn.Embedding``
    (often far from real token embeddings); ``"sample_vocab"`` -- the embeddings of random
    vocabulary tokens; ``"text"`` -- the embeddings of ``tokenizer(init_text)``, cut or repeated
    to length. The embeddings stay fp32 whatever the model's dtype (cast when used), as in peft.
    """

    def __init__(self, model: nn.Module, num_virtual_tokens: int = 20, init: str = "random",
                 init_text: str | None = None, tokenizer=None):
        super().__init__(model, num_virtual_tokens)
        word_embeddings = model.get_input_embeddings()
        n = self.num_virtual_tokens
        init = str(getattr(init, "value", init)).lower()
        if init not in ("random", "sample_vocab", "text"):
            raise LabkitError(f"init must be 'random', 'sample_vocab' or 'text', got {init!r}")
        self.embedding = nn.Embedding(n, word_embeddings.embedding_dim)
        ids = None
        if init == "sample_vocab":
            ids = torch.randint(0, word_embeddings.num_embeddings, (n,), dtype=torch.long)
        elif init == "text":
            if tokenizer is None or not init_text:
                raise LabkitError("init='text' needs init_text='...' and tokenizer=<the model's tokenizer>")
            text_ids = list(tokenizer(init_text)["input_ids"])
            ids = torch.tensor((text_ids * -(-n // len(text_ids)))[:n], dtype=torch.long)  # cut or repeat to n
        if ids is not None:
            with torch.no_grad():
                start = word_embeddings(ids.to(word_embeddings.weight.device)).detach().clone().float()
            self.embedding.weight = nn.Parameter(start)
        self.embedding.to(word_embeddings.weight.device)

    def prompts(self, batch_size: int) -> torch.Tensor:
        return self.embedding(self._tokens()).repeat(batch_size, 1, 1)


class PromptEncoder(_VirtualTokens):
    """P-tuning (Liu et al. 2021, "GPT understands, too"): the virtual tokens are the output of a
    small network run on ``num_virtual_tokens`` trainable embeddings, which makes them easier to
    optimise than free embeddings. Built in lab 13, section 3.

    ``encoder_reparameterization_type`` (peft's ``PromptEncoderReparameterizationType``):

    * ``"MLP"``: ``Linear(d, h) -> ReLU -> Linear(h, h) -> ReLU -> Linear(h, d)`` per token;
    * ``"LSTM"``: a bidirectional LSTM (``encoder_num_layers`` layers, hidden ``h``) over the ``n``
      tokens, then ``Linear(2h, 2h) -> ReLU -> Linear(2h, d)`` -- each virtual token sees the others.

    ``h = encoder_hidden_size`` (default: the model's hidden size ``d``). After training only the
    ``n`` outputs matter (`prompts`); the encoder can be thrown away.
    """

    def __init__(self, model: nn.Module, num_virtual_tokens: int = 20, encoder_hidden_size: int | None = None,
                 encoder_reparameterization_type: str = "MLP", encoder_num_layers: int = 2,
                 encoder_dropout: float = 0.0):
        super().__init__(model, num_virtual_tokens)
        kind = str(getattr(encoder_reparameterization_type, "value", encoder_reparameterization_type)).upper()
        if kind not in ("MLP", "LSTM"):
            raise LabkitError(f"encoder_reparameterization_type must be 'MLP' or 'LSTM', "
                              f"got {encoder_reparameterization_type!r}")
        d = model.config.hidden_size
        h = d if encoder_hidden_size is None else _positive_int(encoder_hidden_size, "encoder_hidden_size")
        self.encoder_reparameterization_type = kind
        self.embedding = nn.Embedding(self.num_virtual_tokens, d)
        if kind == "LSTM":
            self.lstm_head = nn.LSTM(input_size=d, hidden_size=h, num_layers=_positive_int(encoder_num_layers,
                                     "encoder_num_layers"), dropout=encoder_dropout, bidirectional=True,
                                     batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.ReLU(), nn.Linear(2 * h, d))
        else:                                  # peft ignores encoder_num_layers for the MLP: always 3 layers
            self.mlp_head = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))
        self.to(model.get_input_embeddings().weight.device)

    def encode(self, indices: torch.Tensor) -> torch.Tensor:
        """peft's ``PromptEncoder.forward``: virtual-token ids ``(batch, n)`` -> embeddings ``(batch, n, d)``."""
        x = self.embedding(indices)
        if self.encoder_reparameterization_type == "LSTM":
            x = self.lstm_head(x)[0]
        return self.mlp_head(x)

    def prompts(self, batch_size: int) -> torch.Tensor:
        return self.encode(self._tokens()).repeat(batch_size, 1, 1)  # encode once, copy per row (as peft)


PTuning = PromptEncoder

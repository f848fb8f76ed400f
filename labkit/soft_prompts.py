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
"""
from __future__ import annotations

import re

import torch
from torch import nn
from transformers import DynamicCache
from transformers.pytorch_utils import Conv1D

from .errors import LabkitError

__all__ = ["IA3Linear", "METHODS", "PTuning", "PrefixTuning", "PromptEncoder", "PromptTuning", "copy_to_peft",
           "count_parameters", "freeze", "ia3_layers", "inject_ia3", "load_from_peft", "trainable_parameters"]

METHODS = ("prompt_tuning", "p_tuning", "prefix_tuning", "ia3", "lora", "freeze")

# peft's defaults when target_modules / feedforward_modules are not given (peft.utils.constants)
IA3_TARGETS = {"llama": ["k_proj", "v_proj", "down_proj"], "qwen2": ["q_proj", "v_proj", "down_proj"],
               "mistral": ["k_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "mlp.c_proj"],
               "gpt_neox": ["query_key_value", "dense_4h_to_h"]}
IA3_FEEDFORWARD = {"llama": ["down_proj"], "qwen2": ["down_proj"], "mistral": ["down_proj"],
                   "gpt2": ["mlp.c_proj"], "gpt_neox": ["dense_4h_to_h"]}
LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"],
                "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"]}


# ---------------------------------------------------------------------------
# checks and small helpers
# ---------------------------------------------------------------------------
def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LabkitError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_model(model) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "get_input_embeddings") or \
            getattr(model, "config", None) is None:
        raise LabkitError(f"expected a transformers causal LM (e.g. labkit.models.load(...)[0]), "
                          f"got {type(model).__name__}")


def _freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def trainable_parameters(model: nn.Module) -> int:
    """Parameters with ``requires_grad`` (a tensor shared by two modules counted once), i.e. peft's
    ``get_nb_trainable_parameters()[0]``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _dims(config) -> dict:
    """The sizes the methods need, read the way peft reads them (``_prepare_prompt_learning_config``)."""
    hidden, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None)
    if kv_heads is None:                       # no grouped-query attention (GPT-2, GPT-NeoX): all heads
        kv_heads, head_dim = heads, hidden // heads
    else:
        head_dim = getattr(config, "head_dim", None) or hidden // heads
    return {"hidden": hidden, "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim}


# ---------------------------------------------------------------------------
# virtual tokens in front of the input: prompt tuning and P-tuning
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# a key/value prefix in every layer: prefix tuning / P-tuning v2
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# (IA)^3: learned rescaling of chosen activations
# ---------------------------------------------------------------------------
def _features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):             # GPT-2's "linear": weight stored (in, out)
        return tuple(module.weight.shape)
    raise LabkitError(f"(IA)^3 rescales nn.Linear or Conv1D layers, not {type(module).__name__}")


class IA3Linear(nn.Module):
    """A frozen linear layer with a learned vector ``ia3_l`` (all ones at the start). Built in
    lab 13, section 3.

    ``is_feedforward=False`` (keys, values): ``y = base(x) * l`` -- one scale per output feature;
    ``is_feedforward=True`` (the MLP's down projection): ``y = base(x * l)`` -- one scale per
    input feature, i.e. per MLP hidden unit. peft stores ``l`` as ``(out, 1)`` / ``(1, in)``;
    here it is a plain vector (the same numbers).
    """

    def __init__(self, base: nn.Module, is_feedforward: bool = False):
        super().__init__()
        d_in, d_out = _features(base)
        self.base = base
        self.is_feedforward = bool(is_feedforward)
        self.ia3_l = nn.Parameter(torch.ones(d_in if self.is_feedforward else d_out, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_feedforward:                # scale in the vector's dtype (fp32), run the layer in x's
            return self.base((x.to(self.ia3_l.dtype) * self.ia3_l).to(x.dtype))
        y = self.base(x)
        return (y * self.ia3_l).to(y.dtype)


def ia3_layers(model: nn.Module) -> dict[str, IA3Linear]:
    """Every `IA3Linear` in ``model``, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, IA3Linear)}


def _as_names(value, what: str):
    if value is None or isinstance(value, str):
        return value
    names = list(value) if isinstance(value, (list, tuple, set, frozenset)) else None
    if names is None or not all(isinstance(t, str) and t for t in names):
        raise LabkitError(f"{what} must be a regex string or module names like ['k_proj', 'v_proj'], got {value!r}")
    return names


def _is_target(name: str, targets) -> bool:
    """peft's rule: a string is a regex that must match the full name; a list matches a full name
    or a ``"." + entry`` suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return name in targets or any(name.endswith("." + t) for t in targets)


def _is_feedforward(name: str, feedforward) -> bool:
    """peft's rule for feedforward_modules: a full-match regex, or a plain suffix (no dot needed)."""
    if isinstance(feedforward, str):
        return re.fullmatch(feedforward, name) is not None
    return any(name.endswith(t) for t in feedforward)


def _ia3_targets(model: nn.Module, target_modules, feedforward_modules) -> dict[str, bool]:
    """``{module name: is_feedforward}`` for the layers `inject_ia3` would wrap."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = _as_names(target_modules, "target_modules")
    feedforward = _as_names(feedforward_modules, "feedforward_modules")
    if targets is None:
        if model_type not in IA3_TARGETS:
            raise LabkitError(f"no default (IA)^3 targets for model type {model_type!r}; pass target_modules=[...]")
        targets = IA3_TARGETS[model_type]
    if feedforward is None:
        if model_type not in IA3_FEEDFORWARD:
            raise LabkitError(f"no default feedforward modules for model type {model_type!r}; pass "
                              "feedforward_modules=[...] (or [] for none)")
        feedforward = IA3_FEEDFORWARD[model_type]
    elif not isinstance(targets, str) and not isinstance(feedforward, str) and not set(feedforward) <= set(targets):
        raise LabkitError(f"feedforward_modules {sorted(feedforward)} must be a subset of target_modules "
                          f"{sorted(targets)}")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    modules = [(n, m) for n, m in model.named_modules() if n and not isinstance(m, IA3Linear)
               and not any(n.startswith(w + ".") for w in ia3_layers(model))]
    if isinstance(targets, str) and targets.lower() == "all-linear":
        chosen = [n for n, m in modules if isinstance(m, (nn.Linear, Conv1D)) and m is not head]
    else:
        chosen = [n for n, _ in modules if _is_target(n, targets)]
    if not chosen:
        linear = sorted({n.rpartition(".")[2] for n, m in modules if isinstance(m, (nn.Linear, Conv1D))})
        raise LabkitError(f"target_modules {targets!r} match no module of this model; its linear layers are: "
                          f"{', '.join(linear) or 'none'}")
    for n in chosen:
        _features(model.get_submodule(n))   # a one-line error for a norm or an embedding
    return {n: _is_feedforward(n, feedforward) for n in chosen}


def inject_ia3(model: nn.Module, target_modules=None, feedforward_modules=None) -> nn.Module:
    """Wrap the chosen linear layers of ``model`` in `IA3Linear` (in place), freeze everything
    else, return ``model``. Built in lab 13, section 3.

    Options and matching are peft's ``IA3Config``'s: ``target_modules`` names (a full name or a
    ``"." + name`` suffix), a full-match regex, or ``"all-linear"``; ``feedforward_modules`` (a
    subset) are scaled on their input, the others on their output. Left out, both default to
    peft's choice for the model type (Llama: ``k_proj, v_proj, down_proj``, with ``down_proj``
    feedforward).
    """
    chosen = _ia3_targets(model, target_modules, feedforward_modules)
    _freeze_all(model)
    for name, is_ff in chosen.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, IA3Linear(getattr(parent, child), is_feedforward=is_ff))
    return model


# ---------------------------------------------------------------------------
# Freeze: train only the last k layers (or chosen modules of them)
# ---------------------------------------------------------------------------
def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers: the ``nn.ModuleList`` as long as ``num_hidden_layers``."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise LabkitError(f"found no list of {count} decoder layers in this {type(model).__name__}; "
                      "freeze() needs a transformers decoder (model.model.layers, transformer.h, ...)")


def freeze(model: nn.Module, last_k: int | None = None, modules=None) -> nn.Module:
    """Freeze tuning: everything frozen except the last ``last_k`` decoder layers -- or, with
    ``modules`` (e.g. ``["mlp"]``, ``["self_attn.v_proj"]``), only those modules of them. Returns
    ``model``. Built in lab 13, section 3.

    ``last_k=None`` means every layer (then ``modules`` picks what trains), like LLaMA-Factory's
    ``freeze_trainable_layers`` / ``freeze_trainable_modules``. Embeddings, the final norm and the
    LM head stay frozen. The idea: the top layers are the most task-specific, the bottom ones the
    most general; no new parameters, but also no memory saved on the weights themselves.
    """
    layers = _decoder_layers(model)
    if last_k is None and modules is None:
        raise LabkitError("freeze() needs last_k=<number of top layers to train> and/or modules=['mlp', ...]")
    if last_k is not None:
        _positive_int(last_k, "last_k")
        if last_k > len(layers):
            raise LabkitError(f"last_k={last_k} but the model has {len(layers)} layers")
    names = None if modules is None else ([modules] if isinstance(modules, str) else _as_names(modules, "modules"))
    if names is not None and not names:
        raise LabkitError("modules must name at least one module, e.g. ['mlp']")
    chosen = list(layers)[len(layers) - (last_k or len(layers)):]
    _freeze_all(model)
    matched = set()
    for layer in chosen:
        for pname, p in layer.named_parameters():
            hits = [m for m in (names or [""]) if not m or f".{m}." in f".{pname}"]
            if hits:
                p.requires_grad_(True)
                matched.update(hits)
    missing = [m for m in (names or []) if m not in matched]
    if missing:
        inside = sorted({pname.split(".")[0] for pname, _ in chosen[0].named_parameters()})
        raise LabkitError(f"module {missing[0]!r} is in none of the chosen layers; a layer holds: {', '.join(inside)}")
    return model


# ---------------------------------------------------------------------------
# copying weights to and from peft
# ---------------------------------------------------------------------------
def _own_state(ours: nn.Module) -> dict[str, torch.Tensor]:
    """A soft-prompt module's trainable tensors, named as in peft's prompt encoder (``embedding.weight``,
    ``mlp_head.0.weight``, ``lstm_head.weight_ih_l0``, ``transform.2.bias`` ...)."""
    return {k: v for k, v in ours.state_dict(keep_vars=True).items() if not k.startswith("model.")}


def _pairs(ours: nn.Module, peft_model):
    """(our tensor, peft's tensor, name) for every trained tensor, checked to correspond."""
    adapter = getattr(peft_model, "active_adapter", "default")
    if isinstance(ours, (_VirtualTokens, PrefixTuning)):
        encoders = getattr(peft_model, "prompt_encoder", None)
        if encoders is None or adapter not in encoders:
            raise LabkitError(f"{type(ours).__name__} copies a peft prompt-learning model "
                              f"(PromptTuning/PromptEncoder/PrefixTuningConfig), got {type(peft_model).__name__}")
        theirs = encoders[adapter].state_dict(keep_vars=True)
        mine = _own_state(ours)
        if set(mine) != set(theirs) or any(mine[k].shape != theirs[k].shape for k in mine):
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in theirs.items())
            raise LabkitError(f"the peft model's prompt encoder ({shapes}) does not match this "
                              f"{type(ours).__name__} (num_virtual_tokens, encoder type/size and "
                              "prefix_projection must be the same)")
        return [(mine[k], theirs[k], k) for k in mine]
    layers = ia3_layers(ours)
    if not layers:
        raise LabkitError("nothing to copy: pass a PromptTuning, PromptEncoder, PrefixTuning, "
                          "or a model after inject_ia3")
    inner = peft_model.get_base_model()
    pairs = []
    for name, layer in layers.items():
        try:
            theirs = inner.get_submodule(name).ia3_l[adapter]
        except (AttributeError, KeyError):
            raise LabkitError(f"the peft model has no (IA)^3 vector at {name!r}; use the same target_modules") from None
        if theirs.numel() != layer.ia3_l.numel():
            raise LabkitError(f"{name}: peft's (IA)^3 vector has {theirs.numel()} entries, ours {layer.ia3_l.numel()}")
        pairs.append((layer.ia3_l, theirs, name))
    return pairs


@torch.no_grad()
def load_from_peft(ours: nn.Module, peft_model) -> nn.Module:
    """Copy a peft model's trained weights into ours (a `PromptTuning`, `PromptEncoder`,
    `PrefixTuning`, or a model after `inject_ia3`); returns ``ours``. The configurations must
    match (same virtual tokens, encoder, targets), or a `LabkitError` says what differs."""
    for mine, theirs, _ in _pairs(ours, peft_model):
        mine.copy_(theirs.reshape(mine.shape))
    return ours


@torch.no_grad()
def copy_to_peft(ours: nn.Module, peft_model):
    """The reverse of `load_from_peft`: our weights into the peft model; returns ``peft_model``."""
    for mine, theirs, _ in _pairs(ours, peft_model):
        theirs.copy_(mine.reshape(theirs.shape))
    return peft_model


# ---------------------------------------------------------------------------
# how many numbers train?
# ---------------------------------------------------------------------------
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
    from . import models

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
        from .lora import inject_lora

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

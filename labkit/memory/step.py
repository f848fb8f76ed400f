"""The whole training step, replayed: record ``model(ids, labels=ids).loss`` on a tape, then walk it.

`_record_step` writes out a Llama-family model's forward -- embedding, rotary tables, every
decoder layer (`labkit.memory.ops.llama_layer_ops`, checkpointed or not), the final norm, the
head and transformers' loss -- and `_simulate` reads the tape three ways: the saved bytes
(activations), the forward peak and the backward peak, plus what one middle layer saves.
`labkit.memory.estimate` turns these into the bill; lab 01 §4 checks the activations against
`saved_activation_bytes`, §5 the peaks against a GPU, §9 the phase each OOM fix shrinks.
"""
from __future__ import annotations

from dataclasses import dataclass

from .arch import Architecture
from .ops import LayerContext, _layer_weights, _matmul, _rmsnorm, llama_layer_ops
from .replay import _T, _Backward, _forward_peak, _saved_storages, _Tape
from .states import _Setup

__all__: list[str] = []   # internals of `labkit.memory.estimate`; re-exported by the package under their old names


def _record_step(arch: Architecture, setup: _Setup, batch: int, seq: int, attn: str,
                 checkpointing: bool, device: str | None) -> tuple[_Tape, _T]:
    """Record ``model(input_ids, labels=input_ids).loss`` on a tape; returns (tape, loss)."""
    tape = _Tape(setup.autocast)
    full = not setup.lora_rank
    pdt = setup.param_dtype
    tokens = batch * seq
    embed = tape.param(arch.vocab * arch.hidden, pdt, full)
    x = tape.op("embedding", [embed], tokens * arch.hidden, pdt)     # keeps only the token ids
    # rotary cos/sin: (1, seq, head_dim) each, in the embedding's dtype, shared by all layers
    positions = tape.op("position_ids", [], seq, "int64")
    cos = tape.op("rope_cos", [positions], seq * arch.head_dim, pdt)
    sin = tape.op("rope_sin", [positions], seq * arch.head_dim, pdt)
    mask = tape.op("causal_mask", [], batch * seq * seq, pdt) if attn == "eager" else None
    if checkpointing:                  # each checkpoint holds its layer's keyword arguments
        tape.held += [t for t in (positions, cos, sin, mask) if t is not None]
    # transformers turns the KV cache off with checkpointing
    ctx = LayerContext(tape, arch, setup, batch, seq, attn, device, cos, sin, cache=not checkpointing, mask=mask)
    for _ in range(arch.layers):
        w = _layer_weights(tape, arch, setup)
        if checkpointing:
            with tape.checkpoint(x):
                out = llama_layer_ops(ctx, x, w)
            x = out
        else:
            x = llama_layer_ops(ctx, x, w)
    h = _rmsnorm(tape, x, tape.param(arch.hidden, pdt, full), arch.hidden)
    head = embed if arch.tied else tape.param(arch.vocab * arch.hidden, pdt, full)
    logits = _matmul(tape, h, head, arch.hidden, arch.vocab)
    tape.keep += [h, logits]                          # the model's outputs hold both until it returns
    # transformers' loss: logits.float() -> cross_entropy = log_softmax + nll_loss
    log_probs = tape.op("log_softmax", [tape.cast(logits, "fp32")], tokens * arch.vocab, "fp32")
    tape.ops[-1].saved = [log_probs] if log_probs.grad else []      # log_softmax keeps its output
    padded = tape.op("pad_labels", [], batch * (seq + 1), "int64")  # labels padded by one...
    labels = tape.op("shift_labels", [padded], tokens, "int64")     # ...shifted: a contiguous copy
    loss = tape.op("nll_loss", [log_probs], 1, "fp32", saved=[labels, _T(1, "fp32", False)])
    tape.keep += [padded, loss]
    return tape, loss


@dataclass
class _StepMemory:
    activations: int     # bytes saved for backward (each storage once)
    forward_peak: int    # most bytes alive during the forward, above weights/optimizer states
    backward_peak: int   # most bytes alive during the backward (gradients of parameters included)
    gradients: int       # parameter gradients at the end of backward
    per_layer: int       # bytes one (middle) layer saves without checkpointing


def _simulate(arch, setup, batch, seq, attn, checkpointing, device) -> _StepMemory:
    tape, loss = _record_step(arch, setup, batch, seq, attn, checkpointing, device)
    activations = sum(_saved_storages(tape.ops).values())
    forward_peak, _ = _forward_peak(tape.ops, keep=tape.keep + tape.held)
    bwd = _Backward(alive=activations + sum(t.nbytes for t in tape.held))
    bwd.run(tape.ops, seed=loss)
    # one layer in the middle of the model: its input needs a gradient
    probe = _Tape(setup.autocast)
    x = _T(batch * seq * arch.hidden, setup.param_dtype, True)
    cos, sin = _T(seq * arch.head_dim, setup.param_dtype, False), _T(seq * arch.head_dim, setup.param_dtype, False)
    llama_layer_ops(LayerContext(probe, arch, setup, batch, seq, attn, device, cos, sin, cache=False),
                    x, _layer_weights(probe, arch, setup))
    per_layer = sum(n for st, n in _saved_storages(probe.ops).items() if st not in (cos, sin))
    return _StepMemory(activations, forward_peak, bwd.peak, bwd.param_grad_bytes, per_layer)

"""Lab 01: memory estimation -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference: a real torch / bitsandbytes optimizer step, a real
forward pass watched by ``saved_tensors_hooks``, or labkit's op-by-op replay (which lab 01
proves equal to those measurements).
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise


def _lab_small_bytes_per_token_layer() -> float:
    """Measured, not from a formula: saved bytes of a 2-layer minus a 1-layer lab-small, per token."""
    import torch

    from .. import memory, models

    def saved(layers):
        cfg = models.config("lab-small", num_hidden_layers=layers)
        model = models.build(cfg, device="cpu", seed=0).train()
        return memory.saved_activation_bytes(model, torch.zeros(2, 16, dtype=torch.long))

    return (saved(2) - saved(1)) / (2 * 16)


def _llama2_13b_states_gb() -> float:
    from .. import memory

    e = memory.estimate("llama-2-13b", batch_size=1, seq_len=1, precision="bf16-mixed")
    return (e.weights + e.gradients + e.optimizer) / 1e9


def _llama3_8b_kv_bytes() -> float:
    from .. import memory, models

    return float(memory.kv_cache_bytes(models.config("llama-3-8b"), batch_size=8, seq_len=8192, dtype="bf16"))


# ----------------------------------------------------------------------------- code exercises
def _randint(gen, low: int, high: int) -> int:
    """One integer in [low, high], drawn from ``gen``."""
    import torch

    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _llama_config(hidden, intermediate, heads, kv_heads, head_dim, layers=1, vocab=32):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, head_dim=head_dim, num_hidden_layers=layers,
                       vocab_size=vocab, max_position_embeddings=4096)


def _layer_inputs(gen) -> tuple:
    """Sizes of one decoder layer: GQA or not, head_dim not always hidden / heads, seq from 1."""
    kv = _randint(gen, 1, 4)
    heads = kv * _randint(gen, 1, 4)
    head_dim = 8 * _randint(gen, 1, 16)
    hidden = heads * 8 * _randint(gen, 1, 16)
    intermediate = 8 * _randint(gen, 1, 256)
    batch, seq = _randint(gen, 1, 8), (1, _randint(gen, 2, 1024))[_randint(gen, 0, 3) > 0]
    return (hidden, intermediate, heads, kv, head_dim, batch, seq, (2, 4)[_randint(gen, 0, 1)],
            ("sdpa", "eager")[_randint(gen, 0, 1)])


def _layer_reference(hidden, intermediate, heads, kv_heads, head_dim, batch, seq, dtype_bytes, attn) -> int:
    """labkit's op-by-op replay of one layer (equal to saved_tensors_hooks on real models, lab 01 section 3)."""
    from .. import memory

    cfg = _llama_config(hidden, intermediate, heads, kv_heads, head_dim)
    precision = {4: "fp32", 2: "bf16"}[dtype_bytes]
    return memory.estimate(cfg, batch_size=batch, seq_len=seq, precision=precision, attn_implementation=attn,
                           device="cpu").activations_per_layer


def _state_inputs(gen) -> tuple:
    """Parameter-tensor sizes around bitsandbytes' 4096-value threshold, a precision and an optimizer."""
    from .. import memory

    sizes = []
    for _ in range(_randint(gen, 1, 5)):
        kind = _randint(gen, 0, 3)
        sizes.append((_randint(gen, 1, 4095), 4096, _randint(gen, 4097, 40_000), 256 * _randint(gen, 16, 64))[kind])
    precision = ("fp32", "bf16-mixed", "fp16-mixed", "bf16")[_randint(gen, 0, 3)]
    optimizer = memory.OPTIMIZERS[_randint(gen, 0, len(memory.OPTIMIZERS) - 1)]
    return (sizes, precision, optimizer)


def _measured_state(sizes, precision, optimizer) -> dict:
    """One real optimizer step on parameters of these sizes: bytes of the parameters, their .grad and
    the per-parameter optimizer state (the `step` counters and bitsandbytes' shared lookup tables are
    not per-parameter and are left out)."""
    import torch

    from .. import memory

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    params = [torch.nn.Parameter(torch.randn(k).to(dtype)) for k in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    try:
        opt = memory.make_optimizer(params, optimizer)
    except Exception:                          # no bitsandbytes here: its layout as labkit models it
        opt = None
    if opt is None:
        states = memory._optimizer_bytes(list(sizes), "bf16" if precision == "bf16" else "fp32", optimizer)
    else:
        opt.step()
        states = sum(t.untyped_storage().nbytes() for p in params for key, t in opt.state[p].items()
                     if torch.is_tensor(t) and key != "step" and not key.startswith("qmap"))

    def nbytes(tensors):
        return sum(t.untyped_storage().nbytes() for t in tensors)

    return {"weights": nbytes(params), "gradients": nbytes(p.grad for p in params), "optimizer": states}


def _saved_inputs(gen) -> tuple:
    """A small random Llama (fp32 or bf16, sdpa or eager, GQA or not) in train mode, and token ids."""
    import torch

    from .. import models

    kv = _randint(gen, 1, 2)
    heads = kv * _randint(gen, 1, 2)
    cfg = _llama_config(hidden=heads * 8 * _randint(gen, 1, 4), intermediate=8 * _randint(gen, 2, 16), heads=heads,
                        kv_heads=kv, head_dim=8 * _randint(gen, 1, 4), layers=_randint(gen, 1, 2),
                        vocab=_randint(gen, 16, 96))
    model = models.build(cfg, device="cpu", dtype=(torch.float32, torch.bfloat16)[_randint(gen, 0, 1)],
                         attn_implementation=("sdpa", "eager")[_randint(gen, 0, 1)], seed=_randint(gen, 0, 999))
    ids = torch.randint(0, cfg.vocab_size, (_randint(gen, 1, 3), _randint(gen, 1, 40)), generator=gen)
    return (model.train(), ids)


def _saved_reference(model, input_ids) -> int:
    from .. import memory

    return memory.saved_activation_bytes(model, input_ids)


def _kv_inputs(gen) -> tuple:
    return (_randint(gen, 1, 80), _randint(gen, 1, 16), 16 * _randint(gen, 1, 16), _randint(gen, 1, 64),
            _randint(gen, 1, 32_768), (1, 2, 4)[_randint(gen, 0, 2)])


def _kv_reference(layers, kv_heads, head_dim, batch, seq, dtype_bytes) -> int:
    from .. import memory

    cfg = _llama_config(hidden=kv_heads * 2 * 8, intermediate=8, heads=kv_heads * 2, kv_heads=kv_heads,
                        head_dim=head_dim, layers=layers)
    return memory.kv_cache_bytes(cfg, batch_size=batch, seq_len=seq, dtype={1: "int8", 2: "bf16", 4: "fp32"}[dtype_bytes])


def _scratch_inputs(gen) -> tuple:
    """Trainable-tensor sizes (one to six, in parameter order), bytes per value, foreach or not."""
    sizes = [_randint(gen, 1, 20_000) for _ in range(_randint(gen, 1, 6))]
    return (sizes, (2, 4)[_randint(gen, 0, 1)], bool(_randint(gen, 0, 1)))


def _measured_scratch(sizes, dtype_bytes, foreach) -> int:
    """Peak bytes created inside a real torch.optim.AdamW step (its states already exist)."""
    import torch

    from .. import memory

    dtype = {2: torch.bfloat16, 4: torch.float32}[dtype_bytes]
    params = [torch.nn.Parameter(torch.randn(k).to(dtype)) for k in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-3, foreach=foreach)
    opt.step()                                   # creates m and v
    return memory.live_peak_bytes(opt.step)


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "01.lab_small_bytes_per_token_layer": Exercise(
        "bytes of activations saved per token per decoder layer of lab-small (fp32, sdpa)",
        _lab_small_bytes_per_token_layer, 0.0,
        "your layer_activation_bytes for a single token (batch 1, seq 1), with the sizes of "
        "models.config('lab-small'); or measure it: a 2-layer minus a 1-layer model, divided by the tokens"),
    "01.llama2_13b_states_gb": Exercise(
        "weights + gradients + AdamW states of Llama-2-13B in bf16-mixed, in GB (1e9 bytes)",
        _llama2_13b_states_gb, 0.001,
        "your training_state_bytes on the parameter sizes of models.build('llama-2-13b') (built on meta: free)"),
    "01.llama3_8b_kv_bytes": Exercise(
        "KV cache of Llama-3-8B, batch 8 x 8192 tokens, bf16, in bytes",
        _llama3_8b_kv_bytes, 0.0,
        "your kv_cache_bytes with the layers, KV heads and head size of models.config('llama-3-8b')"),
    "01.layer_activation_bytes": CodeExercise(
        question="layer_activation_bytes(hidden, intermediate, heads, kv_heads, head_dim, batch, seq, dtype_bytes, "
                 "attn): the bytes one Llama decoder layer saves for backward (fp32 or pure 16-bit, sdpa or eager)",
        reference=_layer_reference, inputs=_layer_inputs, solution="layer_activation_bytes", rtol=0.0, atol=0.0,
        hint="go through section 3's printout: each RMSNorm works in fp32 whatever the model's dtype; q and the "
             "attention output have heads x head_dim values per token, k and v kv_heads x head_dim; sdpa adds a "
             "fp32 log-sum-exp per token and head, eager the batch x heads x seq x seq probabilities"),
    "01.training_state_bytes": CodeExercise(
        question="training_state_bytes(sizes, precision, optimizer): bytes of weights, gradients and optimizer "
                 "states, as a dict, when every parameter tensor (of these sizes) trains",
        reference=_measured_state, inputs=_state_inputs, solution="training_state_bytes", rtol=0.0, atol=0.0,
        hint="autocast keeps fp32 master weights (and fp32 gradients); torch's optimizers create their states in "
             "the parameter's dtype; bitsandbytes' 8-bit states are one byte per value plus a 4-byte absmax per "
             "block of 256 values, but a tensor under 4096 values keeps 32-bit states"),
    "01.saved_bytes": CodeExercise(
        question="saved_bytes(model, input_ids): bytes autograd saves for backward in "
                 "model(input_ids, labels=input_ids)",
        reference=_saved_reference, inputs=_saved_inputs, solution="saved_bytes", trials=6, rtol=0.0, atol=0.0,
        hint="torch.autograd.graph.saved_tensors_hooks(pack, unpack): count each storage once "
             "(t.untyped_storage().data_ptr()), and leave out parameters, buffers and the token ids"),
    "01.adamw_step_scratch": CodeExercise(
        question="adamw_step_scratch(sizes, dtype_bytes, foreach): bytes torch.optim.AdamW allocates briefly "
                 "inside step(), beyond its states",
        reference=_measured_scratch, inputs=_scratch_inputs, solution="adamw_step_scratch", rtol=0.0, atol=0.0,
        hint="foreach takes sqrt(v) of every tensor at once; the for-loop makes two temporaries per tensor while "
             "the previous tensor's result is still referenced -- take the worst moment of the loop"),
    "01.kv_cache_bytes": CodeExercise(
        question="kv_cache_bytes(layers, kv_heads, head_dim, batch, seq, dtype_bytes): bytes of the inference "
                 "KV cache",
        reference=_kv_reference, inputs=_kv_inputs, solution="kv_cache_bytes", rtol=0.0, atol=0.0,
        hint="a key and a value for every layer, token and KV head (not query head), head_dim values each"),
}

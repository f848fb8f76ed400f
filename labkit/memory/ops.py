"""The op models: what each piece of a Llama decoder layer does on the tape, op by op.

Each function records, on a `labkit.memory.replay._Tape`, the ops transformers runs for one
module -- ``nn.Linear`` (and bitsandbytes' 4/8-bit layers, peft's LoRA around either), RMSNorm,
RoPE, attention (sdpa's fused kernels, eager / math) -- with the tensors each op saves for its
backward. `llama_layer_ops` chains them into one decoder layer; the shapes in its comments use
nanoGPT's letters: B batch, T sequence, C hidden, nh / nkv query / KV heads of size hs, I the MLP
width. Lab 01 §4 shows `llama_layer_ops` and holds the replay against `saved_activation_bytes`
over a grid of models and settings; §3 derives the one-dtype closed form it generalises.

`cache_values_follow_keys` asks the installed transformers how its KV cache stores values (one
rule changed between versions); ``labkit.memory.CACHE_VALUES_FOLLOW_KEYS`` overrides the answer.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .arch import Architecture
from .constants import BYTES
from .replay import _T, _promote, _Tape
from .states import _Setup

__all__ = ["LayerContext", "llama_layer_ops", "sdpa_kernel", "cache_values_follow_keys"]


@dataclass(frozen=True)
class _Linear:
    n_in: int
    n_out: int
    weight: _T             # the parameter (resident; trainable in full fine-tuning)
    quantized: str | None  # "nf4" or "int8": a frozen bitsandbytes layer
    lora_a: _T | None      # LoRA adapter matrices (trainable), or None
    lora_b: _T | None


def _matmul(tape: _Tape, x: _T, w: _T, n_in: int, n_out: int) -> _T:
    """``y = x @ W.T``: backward needs x for dW and W for dx.

    A parameter itself never counts (it is a weight, not an activation), but
    under autocast the bf16 *copy* of W is a new tensor, saved when dx is needed."""
    xc, wc = tape.for_matmul(x), tape.for_matmul(w)
    saved = ([xc] if w.grad else []) + ([wc] if x.grad else [])
    return tape.op("mm", [xc, wc], x.numel // n_in * n_out, xc.dtype, saved)


def _linear(tape: _Tape, x: _T, lin: _Linear, setup: _Setup) -> _T:
    """nn.Linear, a bitsandbytes 4/8-bit Linear, and peft's LoRA around either."""
    rows = x.numel // lin.n_in
    if lin.quantized == "nf4":
        # bnb Linear4bit: x.to(bf16) -> an autograd Function that keeps nothing
        # in saved_tensors (backward dequantizes W to bf16 again) -> back to x's dtype.
        y = tape.op("matmul_4bit", [tape.cast(x, "bf16")], rows * lin.n_out, "bf16",
                    scratch=lin.n_in * lin.n_out * BYTES["bf16"])
        y = tape.cast(y, x.dtype)
    elif lin.quantized == "int8":
        # bnb Linear8bitLt (LLM.int8): its Function keeps x on its context -- real
        # memory, though outside saved_tensors -- and dequantizes W in backward.
        y = tape.op("matmul_8bit", [x], rows * lin.n_out, x.dtype, saved=[x],
                    scratch=lin.n_in * lin.n_out * BYTES[x.dtype])
    else:
        y = _matmul(tape, x, lin.weight, lin.n_in, lin.n_out)
    if lin.lora_a is None:
        return y
    # LoRA: y + B(A(x)) * scaling, with A, B in fp32 (peft). peft's plain Linear
    # casts x to A's dtype first; its bitsandbytes Linears only without autocast
    # (and the 4-bit one clones the base output first).
    rank = lin.lora_a.numel // lin.n_in
    if lin.quantized == "nf4":
        y = tape.op("clone", [y], y.numel, y.dtype)
    xa = x if (lin.quantized and tape.autocast) else tape.cast(x, setup.lora_dtype)
    a = _matmul(tape, xa, lin.lora_a, lin.n_in, rank)        # saves x (or its bf16 copy): for dA
    b = _matmul(tape, a, lin.lora_b, rank, lin.n_out)        # saves a: r values per token, for dB
    b = tape.op("mul", [b], b.numel, b.dtype)                # * scaling (a Python float: saves nothing)
    if lin.quantized and tape.autocast:
        return tape.op("add", [y, b], y.numel, _promote(y.dtype, b.dtype), shares_grad=True)
    if lin.quantized:
        b = tape.cast(b, y.dtype)
    out = tape.op("add", [y, b], y.numel, _promote(y.dtype, b.dtype), shares_grad=True)
    return tape.cast(out, y.dtype)                           # peft casts back to the base layer's dtype


def _rmsnorm(tape: _Tape, x: _T, weight: _T, hidden: int) -> _T:
    """LlamaRMSNorm: ``weight * (x32 * rsqrt(mean(x32**2) + eps)).to(x.dtype)``, in fp32."""
    tokens = x.numel // hidden
    x32 = tape.cast(x, "fp32")
    sq = tape.op("pow", [x32], x.numel, "fp32", saved=[x32])
    var = tape.op("mean", [sq], tokens, "fp32")
    var = tape.op("add", [var], tokens, "fp32", shares_grad=True)
    inv_rms = tape.op("rsqrt", [var], tokens, "fp32")        # one value per token...
    tape.ops[-1].saved = [inv_rms] if inv_rms.grad else []  # ...which rsqrt keeps (its own output)
    normed = tape.op("mul", [x32, inv_rms], x.numel, "fp32", saved=[x32, inv_rms])
    normed = tape.cast(normed, x.dtype)
    saved = ([normed] if weight.grad else []) + ([weight] if normed.grad else [])
    return tape.op("mul", [weight, normed], x.numel, _promote(weight.dtype, x.dtype), saved=saved)


def _rope(tape: _Tape, q: _T, cos: _T, sin: _T) -> _T:
    """``q * cos + rotate_half(q) * sin``: the muls keep cos and sin (shared by every layer)."""
    dtype = _promote(q.dtype, cos.dtype)
    qc = tape.op("mul", [q, cos], q.numel, dtype, saved=[cos])
    half = q.numel // 2
    x1 = tape.op("slice", [q], half, q.dtype, view=True)
    x2 = tape.op("slice", [q], half, q.dtype, view=True)
    rot = tape.op("cat", [tape.op("neg", [x2], half, q.dtype), x1], q.numel, q.dtype, shares_grad=True)
    rs = tape.op("mul", [rot, sin], q.numel, dtype, saved=[sin])
    return tape.op("add", [qc, rs], q.numel, dtype, shares_grad=True)


def sdpa_kernel(device: str | None, dtype: str, gqa: bool) -> str:
    """Which kind of scaled_dot_product_attention kernel a training forward uses.

    ``"flash"`` stands for the fused kernels that keep q, k, v, the output and
    a per-row logsumexp: CPU's flash kernel (every dtype, GQA included) and, on
    CUDA for fp16/bf16, FlashAttention or cuDNN attention (an H100 with torch
    2.11 picks cuDNN; both save the same). For fp32, CUDA uses the memory-
    efficient kernel -- which has no GQA support, so fp32 with GQA falls back
    to the math kernel, which keeps the seq x seq attention matrix like eager."""
    if device == "cuda" and dtype == "fp32":
        return "math" if gqa else "efficient"
    return "flash"


def _sdpa_backward_scratch(kernel: str, device: str | None, arch: Architecture, batch: int, seq: int,
                           dtype: str) -> int:
    """Work buffers a CUDA attention backward allocates besides dq, dk, dv.

    FlashAttention-2 accumulates dq in fp32 (seq rounded up to 128, head_dim
    to 32) and keeps one fp32 value per query row; with GQA it computes dk, dv
    for every query head before summing them per KV head. (cuDNN's buffers
    measured about the same; CPU kernels' internal buffers are invisible to
    `live_peak_bytes`, so they are left out for CPU.)"""
    if device != "cuda" or kernel != "flash":
        return 0
    seq_r = 128 * math.ceil(seq / 128)
    dim_r = 32 * math.ceil(arch.head_dim / 32)
    scratch = batch * seq_r * arch.heads * dim_r * 4 + batch * arch.heads * seq_r * 4
    if arch.kv_heads != arch.heads:
        scratch += 2 * batch * seq * arch.heads * arch.head_dim * BYTES[dtype]
    return scratch


def _attention(ctx: "LayerContext", q: _T, k: _T, v: _T) -> _T:
    """Attention core of q (B, T, nh * hs) and k, v (B, T, nkv * hs); returns the (B, T, nh * hs)
    output fed to o_proj."""
    tape, arch, batch, seq, device, mask = ctx.tape, ctx.arch, ctx.batch, ctx.seq, ctx.device, ctx.mask
    bhsd = batch * arch.heads * seq * arch.head_dim    # (B, nh, T, hs)
    bhss = batch * arch.heads * seq * seq              # (B, nh, T, T): the attention matrix
    kernel = "eager" if ctx.attn == "eager" else sdpa_kernel(device, tape.autocast or q.dtype,
                                                              arch.kv_heads != arch.heads)
    if kernel == "flash" and arch.attn_dropout > 0 and device != "cuda":
        kernel = "math"                    # CPU's flash kernel has no dropout
    if kernel in ("flash", "efficient"):
        # One autograd node keeps q, k, v (k and v with their own KV heads: GQA
        # is native), the output, and a per-head logsumexp (fp32) of the softmax.
        qc, kc, vc = tape.for_matmul(q), tape.for_matmul(k), tape.for_matmul(v)
        rows = seq if kernel == "flash" else 32 * math.ceil(seq / 32)     # efficient pads to 32
        lse = _T(batch * arch.heads * rows, "fp32", False)
        out = tape.op("sdpa", [qc, kc, vc], bhsd, qc.dtype, scratch=_sdpa_backward_scratch(
            kernel, device, arch, batch, seq, qc.dtype))
        if out.grad:
            tape.ops[-1].saved = [qc, kc, vc, out, lse]
        return out                        # laid out (batch, seq, heads, dim): o_proj uses it as is
    # Eager (and the math kernel): p = softmax(q k^T / sqrt(d)); out = p v.
    # k, v are repeated to all heads (GQA); the batched matmuls work on
    # contiguous copies of q, k, v in the compute dtype (fp32 in the math kernel).
    cdt = "fp32" if kernel == "math" else (tape.autocast or q.dtype)
    q2, k2, v2 = (tape.op("copy", [t], bhsd, cdt) for t in (q, k, v))
    scores = tape.op("bmm", [q2, k2], bhss, cdt, saved=([q2] if k2.grad else []) + ([k2] if q2.grad else []))
    scores = tape.op("mul", [scores], bhss, cdt)                     # * 1/sqrt(d)
    scores = tape.op("add", [scores] + ([mask] if mask else []), bhss, cdt, shares_grad=True)  # + causal mask
    p32 = tape.op("softmax", [tape.cast(scores, "fp32")], bhss, "fp32")
    tape.ops[-1].saved = [p32] if p32.grad else []                   # softmax keeps its output
    p = tape.cast(p32, q.dtype if kernel == "eager" else "fp32")
    if arch.attn_dropout > 0:
        # which probabilities survive: CUDA's fused dropout keeps a bool mask,
        # CPU multiplies by a float noise tensor and keeps that
        keep = _T(bhss, "bool" if device == "cuda" else p.dtype, False)
        p = tape.op("dropout", [p], bhss, p.dtype, saved=[keep])
    p2 = tape.for_matmul(p) if kernel == "eager" else p
    out = tape.op("bmm", [p2, v2], bhsd, cdt, saved=([p2] if v2.grad else []) + ([v2] if p2.grad else []))
    out = tape.cast(out, tape.autocast or q.dtype)  # the math kernel returns the input dtype
    return tape.op("copy", [out], bhsd, out.dtype)  # transpose(1, 2).contiguous()


@dataclass
class LayerContext:
    """What every decoder layer of one replayed step shares (`_record_step` builds it once)."""

    tape: _Tape              # the tape the ops are recorded on
    arch: Architecture       # the model's sizes
    setup: _Setup            # precision, LoRA, quantization
    batch: int               # B
    seq: int                 # T
    attn: str                # "sdpa" or "eager"
    device: str | None       # whose kernel rules: None, "cuda" or "cpu"
    cos: _T                  # rotary tables, (1, T, hs) each, shared by every layer
    sin: _T
    cache: bool = True       # use_cache: the KV cache copies k, v (transformers turns it off with checkpointing)
    mask: _T | None = None   # eager attention's causal mask, (B, 1, T, T)


def llama_layer_ops(ctx: LayerContext, x: _T, w: dict) -> _T:
    """One decoder layer (Llama, Qwen2), op by op as transformers runs it.

    ``x`` is the layer's input (B, T, C); ``w`` its parameters by name (`_layer_weights`)."""
    tape, setup = ctx.tape, ctx.setup
    residual = x                                                            # (B, T, C)
    h = _rmsnorm(tape, x, w["input_layernorm"], ctx.arch.hidden)            # (B, T, C)
    q = _rope(tape, _linear(tape, h, w["q_proj"], setup), ctx.cos, ctx.sin)  # (B, T, nh * hs)
    k = _rope(tape, _linear(tape, h, w["k_proj"], setup), ctx.cos, ctx.sin)  # (B, T, nkv * hs)
    v = _linear(tape, h, w["v_proj"], setup)                                # (B, T, nkv * hs)
    if ctx.cache:
        # use_cache=True (the default, even in training): DynamicCache.update
        # concatenates k, v onto empty tensors -- copies -- and attention uses
        # the copies. The cache keeps them until the model's output is dropped.
        k = tape.op("cat", [k], k.numel, k.dtype, shares_grad=True)
        v = tape.op("cat", [v], v.numel, k.dtype if cache_values_follow_keys() else v.dtype, shares_grad=True)
        tape.keep += [k, v]
    o = _linear(tape, _attention(ctx, q, k, v), w["o_proj"], setup)        # (B, T, nh * hs) -> (B, T, C)
    x = tape.op("add", [residual, o], x.numel, _promote(residual.dtype, o.dtype), shares_grad=True)
    residual = x                                                            # (B, T, C)
    h = _rmsnorm(tape, x, w["post_attention_layernorm"], ctx.arch.hidden)   # (B, T, C)
    gate, up = _linear(tape, h, w["gate_proj"], setup), _linear(tape, h, w["up_proj"], setup)  # (B, T, I) each
    act = tape.op("silu", [gate], gate.numel, gate.dtype, saved=[gate])                        # (B, T, I)
    m = tape.op("mul", [act, up], gate.numel, _promote(act.dtype, up.dtype),
                saved=([up] if act.grad else []) + ([act] if up.grad else []))                # (B, T, I)
    y = _linear(tape, m, w["down_proj"], setup)                                                # (B, T, C)
    return tape.op("add", [residual, y], x.numel, _promote(residual.dtype, y.dtype), shares_grad=True)


def _llama_layer(tape: _Tape, x: _T, w: dict, arch: Architecture, setup: _Setup, batch: int, seq: int,
                 attn: str, device: str | None, cos: _T, sin: _T, cache: bool, mask: _T | None = None) -> _T:
    """The 13-argument form of `llama_layer_ops` from before issue 24 (its arguments, as a `LayerContext`)."""
    return llama_layer_ops(LayerContext(tape, arch, setup, batch, seq, attn, device, cos, sin, cache, mask), x, w)


def cache_values_follow_keys() -> bool:
    """Does this transformers' DynamicCache store values in the *keys'* dtype?

    Some versions (5.17) create both empty cache tensors with the keys' dtype,
    so under autocast (fp32 keys after RoPE, bf16 values) the cached values
    become an fp32 copy. Asked of the library itself on two 1-element tensors,
    unless ``labkit.memory.CACHE_VALUES_FOLLOW_KEYS`` forces the answer."""
    from .. import memory    # the switch is set on the package: labkit.memory.CACHE_VALUES_FOLLOW_KEYS = True

    if memory.CACHE_VALUES_FOLLOW_KEYS is not None:
        return memory.CACHE_VALUES_FOLLOW_KEYS
    return _ask_transformers_cache()


_cache_values_follow_keys = cache_values_follow_keys   # its name before the package split (issue 24)


@functools.lru_cache(maxsize=None)
def _ask_transformers_cache() -> bool:
    try:
        from transformers.cache_utils import DynamicLayer

        layer = DynamicLayer()
        layer.lazy_initialization(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16))
        return layer.values.dtype == torch.float32
    except Exception:  # noqa: BLE001 -- an unknown cache layout: assume values keep their dtype
        return False


def _layer_weights(tape: _Tape, arch: Architecture, setup: _Setup) -> dict:
    full = not setup.lora_rank
    pdt = setup.param_dtype
    w = {}
    for name, (n_in, n_out, _) in arch.linears().items():
        lora = setup.lora_rank if name in setup.lora_targets else None
        w[name] = _Linear(n_in, n_out, tape.param(n_in * n_out, pdt, full), setup.quantization,
                          tape.param(lora * n_in, setup.lora_dtype, True) if lora else None,
                          tape.param(n_out * lora, setup.lora_dtype, True) if lora else None)
    for name in ("input_layernorm", "post_attention_layernorm"):
        w[name] = tape.param(arch.hidden, pdt, full)
    return w

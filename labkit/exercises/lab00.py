"""Lab 00: setup and hardware -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference: PyTorch's own casts and bit views for the float
decoder and encoder, a transformers model built on `meta` for the parameter count.
"""
from __future__ import annotations

import math

from .checker import CodeExercise, Exercise


def _fp16_max() -> float:
    import torch

    return float(torch.finfo(torch.float16).max)


def _tf32_eps() -> float:
    return 2.0 ** -10  # 10 mantissa bits, like fp16, with fp32's 8 exponent bits


def _llama2_13b_params() -> float:
    from .. import models

    return float(models.count_params(models.build("llama-2-13b", device="meta")))


def _llama3_8b_bf16_gb() -> float:
    from .. import models

    return 2 * models.count_params(models.build("llama-3-8b", device="meta")) / 1e9


# ----------------------------------------------------------------------------- float formats
# (exponent bits, mantissa bits, finite_only) of every format torch can store
_FORMATS = ((8, 23, False), (8, 7, False), (5, 10, False), (5, 2, False), (4, 3, True))


def _torch_types(exp_bits: int, man_bits: int, finite_only: bool):
    """The torch dtype of a format and the integer dtype of the same width (for ``.view``)."""
    import torch

    dtype = {(8, 23): torch.float32, (8, 7): torch.bfloat16, (5, 10): torch.float16,
             (5, 2): torch.float8_e5m2, (4, 3): torch.float8_e4m3fn}[(exp_bits, man_bits)]
    ints = {32: torch.int32, 16: torch.int16, 8: torch.uint8}[1 + exp_bits + man_bits]
    return dtype, ints


def _draw_format(gen):
    import torch

    return _FORMATS[int(torch.randint(0, len(_FORMATS), (1,), generator=gen))]


def _special_codes(exp_bits: int, man_bits: int) -> list[int]:
    """Zeros, the smallest subnormal and normal, the top of the range, inf/NaN patterns, both signs."""
    top = (2 ** exp_bits - 1) << man_bits
    pos = [0, 1, 2 ** man_bits - 1, 1 << man_bits, top - 1, top, top + 1, top + 2 ** man_bits - 1,
           top + 2 ** (man_bits - 1), top + 2 ** man_bits - 2]
    sign = 1 << (exp_bits + man_bits)
    return pos + [c | sign for c in pos]


def _torch_decode(bits, exp_bits, man_bits, finite_only=False):
    """PyTorch's reading of each bit pattern: reinterpret the integers as the float dtype."""
    import torch

    dtype, ints = _torch_types(exp_bits, man_bits, finite_only)
    return torch.as_tensor(bits).to(ints).view(dtype).double()


def _decode_inputs(gen):
    import torch

    exp_bits, man_bits, finite_only = _draw_format(gen)
    n = int(torch.randint(1, 3000, (1,), generator=gen))
    codes = torch.randint(0, 2 ** (1 + exp_bits + man_bits), (n,), generator=gen)
    specials = torch.tensor(_special_codes(exp_bits, man_bits))
    codes = torch.cat([specials, codes])[torch.randperm(n + len(specials), generator=gen)]
    return codes, exp_bits, man_bits, finite_only


def _nan_codes(codes, exp_bits: int, man_bits: int, finite_only: bool):
    """Which patterns are NaN in this format."""
    field = (codes >> man_bits) & (2 ** exp_bits - 1)
    mantissa = codes & (2 ** man_bits - 1)
    top = field == 2 ** exp_bits - 1
    return top & (mantissa == 2 ** man_bits - 1) if finite_only else top & (mantissa != 0)


def _canonical(codes, exp_bits: int, man_bits: int, finite_only: bool):
    """Patterns as unsigned ints of the format's width, every NaN as the quiet NaN (payloads vary)."""
    import torch

    nbits = 1 + exp_bits + man_bits
    codes = torch.as_tensor(codes).to(torch.int64) & (2 ** nbits - 1)
    top = (2 ** exp_bits - 1) << man_bits
    quiet = top + (2 ** man_bits - 1 if finite_only else 2 ** (man_bits - 1))
    return torch.where(_nan_codes(codes, exp_bits, man_bits, finite_only), torch.full_like(codes, quiet), codes)


def _torch_encode(x, exp_bits, man_bits, finite_only=False):
    """PyTorch's cast of ``x`` to the format, as bit patterns (NaN as the quiet NaN).

    "fn" formats saturate at their largest finite number, as PyTorch 2.13's cast does (older
    versions gave NaN there; that NaN is replaced by the saturated pattern)."""
    import torch

    dtype, ints = _torch_types(exp_bits, man_bits, finite_only)
    y = x.to(dtype)
    codes = y.view(ints).to(torch.int64) & (2 ** (1 + exp_bits + man_bits) - 1)
    if finite_only:
        largest = ((2 ** exp_bits - 1) << man_bits) + 2 ** man_bits - 2
        sat = largest | (torch.signbit(x).to(torch.int64) << (exp_bits + man_bits))
        codes = torch.where(torch.isnan(y.double()) & ~torch.isnan(x), sat, codes)
    return _canonical(codes, exp_bits, man_bits, finite_only)


def _encode_inputs(gen):
    """Values around the format's whole range, exact ties between neighbours, and the edges
    (zeros, inf, NaN, the overflow threshold, half the smallest subnormal). float32 inputs
    (fp32 itself: float64), so PyTorch's cast rounds the exact value once."""
    import torch

    exp_bits, man_bits, finite_only = _draw_format(gen)
    bias = 2 ** (exp_bits - 1) - 1
    n = int(torch.randint(1, 2000, (1,), generator=gen))
    wide = torch.float64 if man_bits == 23 else torch.float32
    scale = torch.randint(-bias - man_bits - 3, bias + 4, (n,), generator=gen).double()
    x = torch.randn(n, generator=gen, dtype=torch.float64) * torch.exp2(scale)
    codes = torch.randint(0, 2 ** (exp_bits + man_bits) - 1, (n // 2 + 1,), generator=gen)
    lo, hi = _torch_decode(codes, exp_bits, man_bits), _torch_decode(codes + 1, exp_bits, man_bits)
    ok = torch.isfinite(lo) & torch.isfinite(hi)
    ties = (lo[ok] + hi[ok]) / 2
    top_field = (2 ** exp_bits - 1) << man_bits
    largest = top_field + 2 ** man_bits - 2 if finite_only else top_field - 1   # the largest finite pattern
    top = _torch_decode(torch.tensor([largest]), exp_bits, man_bits)
    big = float(top) * (1 + 2.0 ** -(man_bits + 1))          # the overflow tie
    tiny = 2.0 ** (1 - bias - man_bits)
    edges = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, float(top), -float(top), big, -big,
                          big * 1.01, tiny / 2, tiny * 1.5, -tiny * 2.5, 1.0], dtype=torch.float64)
    x = torch.cat([x, ties, -ties, edges])
    x = x[torch.randperm(x.numel(), generator=gen)].to(wide)
    return x, exp_bits, man_bits, finite_only


def _pattern(code: int, exp_bits: int, man_bits: int) -> str:
    """'s eeeee mmmmmmmmmm' (an unsigned pattern of the format's width)."""
    b = format(int(code) & (2 ** (1 + exp_bits + man_bits) - 1), f"0{1 + exp_bits + man_bits}b")
    return f"{b[0]} {b[1:1 + exp_bits]} {b[1 + exp_bits:]}"


def _shape_problem(got, want) -> str | None:
    import torch

    if not isinstance(got, torch.Tensor):
        return f"returned {type(got).__name__}, expected a tensor of shape {tuple(want.shape)}"
    if tuple(got.shape) != tuple(want.shape):
        return f"shape {tuple(got.shape)} instead of {tuple(want.shape)} (one result per input)"
    return None


def _compare_decode(got, want) -> str | None:
    """First pattern whose value differs (NaN matches NaN; the sign of zero counts), shown as bits."""
    import torch

    (g, args), (w, _) = got, want
    bits, exp_bits, man_bits, _ = args
    problem = _shape_problem(g, w)
    if problem:
        return problem
    g = g.detach().double()
    same = ((g == w) & (g.signbit() == w.signbit())) | (torch.isnan(g) & torch.isnan(w))
    if bool(same.all()):
        return None
    i = int((~same).nonzero()[0])
    return (f"{int((~same).sum())} of {same.numel()} patterns differ; first {_pattern(bits[i], exp_bits, man_bits)}: "
            f"got {g[i].item()!r}, expected {w[i].item()!r}")


def _compare_encode(got, want) -> str | None:
    """First value whose pattern differs, shown with both patterns as bits."""
    (g, args), (w, _) = got, want
    x, exp_bits, man_bits, _ = args
    problem = _shape_problem(g, w)
    if problem:
        return problem
    bad = g != w
    if not bool(bad.any()):
        return None
    i = int(bad.nonzero()[0])
    return (f"{int(bad.sum())} of {bad.numel()} values differ; first x = {x[i].item()!r}: "
            f"got {_pattern(g[i], exp_bits, man_bits)}, expected {_pattern(w[i], exp_bits, man_bits)}")


def _run_decode(answer, args):
    import torch

    out = answer(*args)
    return (torch.as_tensor(out) if not isinstance(out, torch.Tensor) else out), args


def _run_encode(answer, args):
    """The learner's patterns, read as unsigned ints of the format's width with any NaN as the quiet NaN."""
    _, exp_bits, man_bits, finite_only = args
    return _canonical(answer(*args), exp_bits, man_bits, finite_only), args


def _gap_inputs(gen):
    """Numbers of fp32, bf16 or fp16 (those torch.nextafter knows), both signs, zeros, subnormals
    and the normal range, as float64; the largest finite number is left out (it has no next)."""
    import torch

    exp_bits, man_bits, _ = _FORMATS[int(torch.randint(0, 3, (1,), generator=gen))]
    nbits = 1 + exp_bits + man_bits
    n = int(torch.randint(1, 2000, (1,), generator=gen))
    largest = ((2 ** exp_bits - 1) << man_bits) - 1
    codes = torch.cat([torch.tensor([0, 1, 2 ** man_bits - 1, 1 << man_bits, largest - 1]),
                       torch.randint(0, largest, (n,), generator=gen)])
    values = _torch_decode(codes, exp_bits, man_bits)
    signs = torch.where(torch.rand(values.shape, generator=gen) < 0.5, -1.0, 1.0).double()
    return values * signs, exp_bits, man_bits


def _torch_gap(x, exp_bits, man_bits):
    """PyTorch's next larger number after |x|, minus |x| (float64)."""
    import torch

    dtype, _ = _torch_types(exp_bits, man_bits, False)
    a = x.abs().to(dtype)
    return (torch.nextafter(a, torch.tensor(math.inf, dtype=dtype)) - a).double()


# ----------------------------------------------------------------------------- parameter count
def _llama_inputs(gen):
    import torch

    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    heads = (1, 2, 3, 4, 8)[draw(0, 4)]
    divisors = [d for d in range(1, heads + 1) if heads % d == 0]
    kv_heads = divisors[draw(0, len(divisors) - 1)]               # 1: multi-query, heads: multi-head
    hidden = heads * 8 * draw(1, 8)
    return (draw(2, 3000), hidden, draw(1, 700), draw(1, 4), heads, kv_heads, bool(draw(0, 1)), bool(draw(0, 1)))


def _llama_reference(vocab, hidden, intermediate, layers, heads, kv_heads, tied=False, qkv_bias=False):
    """transformers' own model of that shape, built on `meta`, counted (tied tensors once)."""
    from transformers import LlamaConfig, Qwen2Config

    from .. import models

    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
              num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=tied)
    cfg = Qwen2Config(use_sliding_window=False, **kw) if qkv_bias else LlamaConfig(**kw)
    return models.count_params(models.build(cfg, device="meta"))


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "00.fp16_max": Exercise("largest finite fp16 value", _fp16_max, 0.0,
                            "the all-ones exponent field is reserved for inf/NaN: take the field below it "
                            "with every mantissa bit set, then apply the normal-number formula of section 2"),
    "00.tf32_eps": Exercise("machine epsilon of tf32", _tf32_eps, 0.0,
                            "epsilon is the gap between 1.0 and the next number; count the mantissa bits tf32 keeps"),
    "00.llama2_13b_params": Exercise("parameters of Llama-2-13B", _llama2_13b_params, 0.0,
                                     "per layer: 4 h^2 (attention) + 3 h i (MLP) + 2 h (norms); plus 2 V h + h"),
    "00.llama3_8b_bf16_gb": Exercise("size in GB (1e9 bytes) of Llama-3-8B's weights in bf16",
                                     _llama3_8b_bf16_gb, 0.01, "2 bytes per parameter; count on `meta`"),
    "00.decode_float": CodeExercise(
        question="decode_float(bits, exp_bits, man_bits, finite_only): the float64 value of every bit pattern "
                 "in an int64 tensor (normals, subnormals, +-0, inf, NaN; finite_only = the fp8 e4m3fn convention)",
        reference=lambda *args: (_torch_decode(*args), args), inputs=_decode_inputs, solution="decode_float",
        run=_run_decode, compare=_compare_decode, trials=20,
        hint="split sign | exponent field | mantissa field with >> and &; field 0 is subnormal (0.m x 2^(1-bias)); "
             "the all-ones field is inf/NaN, except in finite_only formats where only the all-ones pattern is NaN"),
    "00.encode_float": CodeExercise(
        question="encode_float(x, exp_bits, man_bits, finite_only): the int64 bit pattern of the representable "
                 "number nearest each x (ties to even; overflow -> inf, or the largest finite in finite_only "
                 "formats; subnormals; any NaN pattern is accepted for NaN)",
        reference=lambda *args: (_torch_encode(*args), args), inputs=_encode_inputs, solution="encode_float",
        run=_run_encode, compare=_compare_encode, trials=20,
        hint="find the exponent of x's leading bit (never below the subnormals' 1 - bias), divide by the gap "
             "between neighbours there, round half to even; then check a round-up into the next exponent, "
             "overflow past the largest finite pattern, the sign bit and NaN"),
    "00.gap_after": CodeExercise(
        question="gap_after(x, exp_bits, man_bits): the gap from each |x| (a number of the format, float64 tensor) "
                 "to the next larger number of the format",
        reference=_torch_gap, inputs=_gap_inputs, solution="gap_after", rtol=0.0, atol=0.0, trials=15,
        hint="the gap is constant within one binade and doubles from one binade to the next; "
             "what is it below the smallest normal number, and at zero?"),
    "00.llama_params": CodeExercise(
        question="llama_params(vocab, hidden, intermediate, layers, heads, kv_heads, tied, qkv_bias): the parameter "
                 "count of a Llama-family decoder (grouped-query attention; qkv_bias = Qwen2's q/k/v biases)",
        reference=_llama_reference, inputs=_llama_inputs, solution="llama_params", rtol=0.0, atol=0.0,
        hint="per layer: q and o are hidden x hidden, k and v are hidden x (kv_heads x head_dim); three MLP matrices; "
             "two norms; then embeddings, the final norm, and a head unless it is tied"),
}

"""FLOPs per token of a decoder, model-FLOPs utilisation (MFU), and what a step should take.

Built in lab 12 ("GPU utilisation"). Counting rules (Kaplan et al. 2020, §2.1; the PaLM paper,
Chowdhery et al. 2022, appendix B):

* every matmul with a weight matrix of ``N`` parameters costs ``2N`` FLOPs per token forward
  (a multiply and an add per weight), and ``4N`` backward (the gradient of its input and of its
  weight): **6N per token** for a training step. ``N`` counts the *matmul* weights -- q, k, v, o,
  the MLP and the LM head; the embedding is a table lookup (0 FLOPs), norms and biases are
  elementwise (ignored, as `torch.utils.flop_counter.FlopCounterMode` ignores them);
* attention's two matmuls (scores ``Q K^T`` and ``scores @ V``) do not touch weights: for a
  query at position t they cost ``2 * 2 * d_attn * keys`` forward, where ``d_attn`` =
  heads x head_dim. Eager attention computes the full ``s x s`` score matrix and masks it
  (``keys = s`` for every query): **12 * L * d_attn * s per token** for training, the PaLM term.
  Causal kernels (sdpa's flash / memory-efficient ones, FlashAttention) skip the masked half:
  on average ``(s + 1) / 2`` keys per query;
* gradient checkpointing (transformers checkpoints each decoder layer, non-reentrant) runs
  every layer's forward a second time during backward: the *hardware* FLOPs grow, the *model*
  FLOPs do not. Not quite one whole forward: torch's non-reentrant checkpoint stops recomputing
  as soon as it has every tensor backward saved ("early stop"), and nothing saved comes out of
  a layer's last matmul (``down_proj``: the residual add needs no saved input), so that one is
  not rerun; nor is the LM head, which is outside the layers. FlopCounterMode shows exactly this.

MFU = achieved model FLOPs per second / peak FLOPs per second, with model FLOPs = 6N + the
PaLM attention term, whatever the implementation actually ran; hardware-FLOPs utilisation (HFU)
counts what ran, recomputation included.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

from .errors import LabkitError

__all__ = ["ATTN_IMPLEMENTATIONS", "CATEGORIES", "STEP_MARK", "bus_bandwidth", "comm_split", "flops_breakdown",
           "flops_per_token", "hfu", "matmul_params", "mfu", "op_category", "profile_steps", "step_seconds"]

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


def _arch(config):
    from .memory import architecture as memory_arch      # one reading of a config for memory and FLOPs

    return memory_arch(config)


def matmul_params(config) -> dict[str, int]:
    """Weights that take part in matmuls, by role: ``{"attention", "mlp", "lm_head", "total"}``.

    Embedding rows are looked up, not multiplied, so they are not here -- but with tied embeddings
    the LM head *is* that matrix used in a matmul, and it counts."""
    a = _arch(config)
    attention = a.layers * (a.hidden * a.heads * a.head_dim * 2 + 2 * a.hidden * a.kv_heads * a.head_dim)
    mlp = a.layers * 3 * a.hidden * a.intermediate
    lm_head = a.hidden * a.vocab
    return {"attention": attention, "mlp": mlp, "lm_head": lm_head, "total": attention + mlp + lm_head}


def _check_seq_len(seq_len) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise LabkitError(f"seq_len must be a positive integer, got {seq_len!r}")
    return seq_len


def flops_breakdown(config, seq_len: int, *, training: bool = True, attn_implementation: str = "sdpa",
                    gradient_checkpointing: bool = False) -> dict[str, float]:
    """FLOPs per token by part: ``weights`` (6N or 2N), ``attention``, ``recompute`` and ``total``.

    ``attn_implementation="eager"``: the full s x s scores -- exactly what ``FlopCounterMode``
    counts on a forward + backward of a transformers model with eager attention. ``"sdpa"`` /
    ``"flash_attention_2"``: the causal half that those kernels compute ((s + 1) / 2 keys per
    query on average). ``training=False``: the forward pass only. ``gradient_checkpointing``:
    adds one more forward of the decoder layers but their last matmul (training only)."""
    seq_len = _check_seq_len(seq_len)
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise LabkitError(f"unknown attn_implementation {attn_implementation!r}; use one of "
                          f"{', '.join(ATTN_IMPLEMENTATIONS)}")
    if gradient_checkpointing and not training:
        raise LabkitError("gradient_checkpointing only changes training FLOPs; pass training=True")
    a, n = _arch(config), matmul_params(config)
    keys = seq_len if attn_implementation == "eager" else (seq_len + 1) / 2
    attention_forward = 4 * a.layers * a.heads * a.head_dim * keys          # QK^T and AV, 2 FLOPs each
    passes = 3 if training else 1                                          # forward + backward (2x)
    out = {"weights": 2 * passes * n["total"], "attention": passes * attention_forward,
           "recompute": 0}
    if gradient_checkpointing:     # each layer again, up to the input of down_proj (its last matmul)
        gate_up = a.layers * 2 * a.hidden * a.intermediate
        out["recompute"] = 2 * (n["attention"] + gate_up) + attention_forward
    out["total"] = out["weights"] + out["attention"] + out["recompute"]
    return out


def flops_per_token(config, seq_len: int, *, training: bool = True, attn_implementation: str = "sdpa",
                    gradient_checkpointing: bool = False) -> float:
    """FLOPs one token costs in a step over sequences of ``seq_len`` tokens (see `flops_breakdown`):
    6N + 12 L d s with eager attention in training -- the "6N rule" plus attention."""
    return flops_breakdown(config, seq_len, training=training, attn_implementation=attn_implementation,
                           gradient_checkpointing=gradient_checkpointing)["total"]


def _check_rate(tokens_per_s, peak_flops) -> None:
    for name, value in (("tokens_per_s", tokens_per_s), ("peak_flops", peak_flops)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise LabkitError(f"{name} must be a positive number, got {value!r}"
                              + (" (FLOP/s, e.g. 989.4e12 for an H100's bf16)" if name == "peak_flops" else ""))


def mfu(tokens_per_s: float, config, seq_len: int, peak_flops: float) -> float:
    """Model-FLOPs utilisation of a training run (PaLM's definition): ``tokens/s x (6N + 12 L d s) / peak``.

    The same numerator whichever attention kernel ran and whether layers were recomputed, so MFU
    compares runs and hardware fairly; ``peak_flops`` in FLOP/s (`labkit.env.gpu_spec(...).bf16 * 1e12`)."""
    _check_rate(tokens_per_s, peak_flops)
    return tokens_per_s * flops_per_token(config, seq_len, training=True, attn_implementation="eager") / peak_flops


def hfu(tokens_per_s: float, config, seq_len: int, peak_flops: float, *, attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False) -> float:
    """Hardware-FLOPs utilisation: what the chip actually computed (the causal half of attention
    for sdpa, recomputed layers counted) per second, over its peak."""
    _check_rate(tokens_per_s, peak_flops)
    return tokens_per_s * flops_per_token(config, seq_len, training=True, attn_implementation=attn_implementation,
                                          gradient_checkpointing=gradient_checkpointing) / peak_flops


def step_seconds(config, batch_size: int, seq_len: int, peak_flops: float, utilisation: float) -> float:
    """Seconds one training step of ``batch_size`` x ``seq_len`` tokens takes at a given MFU."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise LabkitError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(utilisation, bool) or not isinstance(utilisation, (int, float)) or not 0 < utilisation <= 1:
        raise LabkitError(f"utilisation (MFU) must be in (0, 1], e.g. 0.4, got {utilisation!r}")
    _check_rate(1.0, peak_flops)
    tokens = batch_size * _check_seq_len(seq_len)
    return tokens * flops_per_token(config, seq_len, training=True, attn_implementation="eager") / (
        utilisation * peak_flops)


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit mfu``: FLOPs per token and the time of one step at a given MFU on a named GPU."""
    from . import cli, env, memory

    p = cli.parser("mfu", "FLOPs per token of a model and the time of one training step at a given MFU "
                          "on a named GPU (peaks from the vendor sheets in labkit.env).", profile=False)
    p.add_argument("--model", required=True, help="a Llama-family labkit model: " + ", ".join(memory.supported_models()))
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--gpu", default="H100-SXM", help="one of " + ", ".join(env.GPU_SPECS))
    p.add_argument("--dtype", default="bf16", help="the peak to use: bf16, fp16, tf32 or fp32")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model-FLOPs utilisation (default 0.4)")
    p.add_argument("--attn", default="sdpa", help=", ".join(ATTN_IMPLEMENTATIONS))
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args(argv)
    spec = env.GPU_SPECS.get(args.gpu)
    if spec is None:
        raise LabkitError(f"unknown GPU {args.gpu!r}; use one of {', '.join(env.GPU_SPECS)}")
    if args.dtype not in ("bf16", "fp16", "tf32", "fp32") or spec.peak(args.dtype) is None:
        raise LabkitError(f"{spec.name} has no {args.dtype!r} peak; use one of "
                          f"{', '.join(d for d in ('bf16', 'fp16', 'tf32', 'fp32') if spec.peak(d))}")
    peak = spec.peak(args.dtype) * 1e12
    model_flops = flops_per_token(args.model, args.seq_len, attn_implementation="eager")
    parts = flops_breakdown(args.model, args.seq_len, attn_implementation=args.attn,
                            gradient_checkpointing=args.gradient_checkpointing)
    seconds = step_seconds(args.model, args.batch_size, args.seq_len, peak, args.mfu)
    tokens = args.batch_size * args.seq_len
    out = {"model": args.model, "gpu": spec.name, "dtype": args.dtype, "peak_tflops": spec.peak(args.dtype),
           "batch_size": args.batch_size, "seq_len": args.seq_len, "matmul_params": matmul_params(args.model)["total"],
           "model_flops_per_token": model_flops, "hardware_flops_per_token": parts["total"],
           "mfu": args.mfu, "step_seconds": seconds, "tokens_per_s": tokens / seconds,
           "hfu": hfu(tokens / seconds, args.model, args.seq_len, peak, attn_implementation=args.attn,
                      gradient_checkpointing=args.gradient_checkpointing)}
    print(f"{args.model}: {out['matmul_params']:,} matmul parameters; {model_flops / 1e9:.3f} GFLOP per token "
          f"(6N + 12·L·d·s at s = {args.seq_len}); with {args.attn} attention"
          f"{' and gradient checkpointing' if args.gradient_checkpointing else ''} the chip computes "
          f"{parts['total'] / 1e9:.3f} GFLOP per token")
    print(f"{spec.name}, {args.dtype} peak {spec.peak(args.dtype):g} TFLOP/s, at MFU {args.mfu:.0%}: "
          f"{seconds * 1e3:.1f} ms per step of {args.batch_size} x {args.seq_len} tokens, "
          f"{out['tokens_per_s']:,.0f} tokens/s (hardware-FLOPs utilisation {out['hfu']:.0%})")
    if args.json:
        cli.emit_json(out)
    return 0


# ---------------------------------------------------------------------------
# torch.profiler: a few steps, FLOPs and time by operator category (lab 12, section 6)
# ---------------------------------------------------------------------------
STEP_MARK = "labkit::step"     # the record_function span `profile_steps` puts around each step
CATEGORIES = ("matmul", "attention", "elementwise", "optimizer", "communication", "other")


def op_category(name: str) -> str:
    """The category of an aten / profiler operator name, for a time-by-category table."""
    n = name.lower()
    if any(k in n for k in ("all_gather", "allgather", "reduce_scatter", "post_backward_reduce", "all_reduce",
                            "allreduce", "broadcast", "nccl", "gloo", "c10d", "record_param_comms")):
        return "communication"
    if any(k in n for k in ("attention", "softmax")):
        return "attention"
    if any(k in n for k in ("adam", "optimizer", "_foreach")):
        return "optimizer"
    if any(k in n for k in ("::mm", "matmul", "linear", "addmm", "bmm", "baddbmm")):
        return "matmul"
    if any(k in n for k in ("add", "mul", "div", "silu", "pow", "rsqrt", "mean", "neg", "cat", "exp", "sub", "copy",
                            "where", "sum", "sigmoid", "gelu", "tanh", "clamp", "fill", "zero")):
        return "elementwise"
    return "other"


@contextlib.contextmanager
def _quiet_native_stderr():
    # kineto prints "profiler_start/stop" lines from C++ straight to file descriptor 2
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def profile_steps(step, steps: int, *, trace_path=None, cuda: bool = False) -> dict:
    """Run ``step()`` ``steps`` times under `torch.profiler` (FLOPs recorded) and summarise it.

    Returns ``{"flops_per_step", "seconds_per_step": {category: self time}, "events", "trace"}``:
    the FLOPs the profiler attributes to operators (matmuls), the self CPU (and, with ``cuda``,
    CUDA) time per step by `op_category`, and the Chrome-trace JSON path when ``trace_path`` is
    given (open it in chrome://tracing or Perfetto). Each step is one ``STEP_MARK`` span in the
    trace, which `comm_split` reads."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise LabkitError(f"steps must be a positive integer, got {steps!r}")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with _quiet_native_stderr():
        with profile(activities=activities, with_flops=True) as prof:
            for _ in range(steps):
                with record_function(STEP_MARK):      # one marked span per step, for `comm_split`
                    step()
            if cuda:
                torch.cuda.synchronize()
        events = prof.key_averages()
        if trace_path is not None:
            prof.export_chrome_trace(str(trace_path))
    by_cat = dict.fromkeys(CATEGORIES, 0.0)
    for e in events:
        if e.key.startswith(("aten::", "Optimizer", "c10d::", "nccl", "gloo")):
            t = e.self_cpu_time_total + (getattr(e, "self_device_time_total", 0) if cuda else 0)
            by_cat[op_category(e.key)] += t / 1e6 / steps
    return {"flops_per_step": sum(e.flops for e in events) / steps, "seconds_per_step": by_cat,
            "events": events, "trace": trace_path}


# ---------------------------------------------------------------------------
# Communication vs compute in a distributed step, and a collective's bandwidth (lab 12, section 7)
# ---------------------------------------------------------------------------
def _trace_events(trace) -> list[dict]:
    import json
    from pathlib import Path

    if isinstance(trace, (str, Path)):
        path = Path(trace)
        if not path.exists():
            raise LabkitError(f"no trace file {path}; export one with profile_steps(..., trace_path=...)")
        trace = json.loads(path.read_text())
    if isinstance(trace, dict):
        trace = trace.get("traceEvents", [])
    if not isinstance(trace, list):
        raise LabkitError(f"a trace is a Chrome-trace path, its JSON dict or its list of events, got {type(trace).__name__}")
    return [e for e in trace if isinstance(e, dict) and e.get("ph") == "X" and "dur" in e and "ts" in e]


def _union_length(spans: list[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` spans (nested or overlapping spans counted once)."""
    total, end = 0.0, -math.inf
    for lo, hi in sorted(spans):
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total


def comm_split(trace, step_name: str = STEP_MARK) -> list[dict]:
    """Per step of a `torch.profiler` Chrome trace: how much of it the training thread spent communicating.

    A step is one ``step_name`` span (`profile_steps` marks each step so). Within it:

    * ``comm_s``: the time covered by communication spans (`op_category` == "communication": FSDP's
      ``FSDP::all_gather`` / ``post_backward_reduce`` regions -- packing, the collective call and the
      wait for it --, ``c10d::*``) on the step's own thread, nested spans counted once: the
      communication the step could *not* hide behind compute;
    * ``compute_s`` = ``step_s - comm_s``; ``comm_share`` = ``comm_s / step_s``;
    * ``in_flight_s``: the time covered by communication spans on the process's other threads
      (gloo's ``pt_gloo_runloop`` threads, where the bytes actually move) -- a collective in flight
      while the training thread computes is overlapped, not exposed.

    Returns one dict per step, in order: ``{"step_s", "comm_s", "compute_s", "comm_share",
    "in_flight_s"}`` (seconds)."""
    events = _trace_events(trace)
    steps = sorted((e for e in events if e.get("name") == step_name), key=lambda e: e["ts"])
    if not steps:
        raise LabkitError(f"no {step_name!r} span in the trace; record the steps with labkit.flops.profile_steps "
                          "(or wrap each in torch.profiler.record_function(step_name))")
    comm = [e for e in events if e.get("name") != step_name and op_category(str(e.get("name", ""))) == "communication"]
    out = []
    for s in steps:
        lo, hi = float(s["ts"]), float(s["ts"]) + float(s["dur"])
        mine, other = [], []
        for e in comm:
            a, b = max(lo, float(e["ts"])), min(hi, float(e["ts"]) + float(e["dur"]))
            if b <= a or e.get("pid") != s.get("pid"):
                continue
            (mine if e.get("tid") == s.get("tid") else other).append((a, b))
        step_s, comm_s = (hi - lo) / 1e6, _union_length(mine) / 1e6
        out.append({"step_s": step_s, "comm_s": comm_s, "compute_s": step_s - comm_s,
                    "comm_share": comm_s / step_s if step_s > 0 else 0.0, "in_flight_s": _union_length(other) / 1e6})
    return out


_BUS_KINDS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")


def bus_bandwidth(n_bytes: float, seconds: float, world: int, kind: str = "all_reduce") -> dict[str, float]:
    """Algorithm and bus bandwidth (bytes/s) of one collective, as nccl-tests reports them.

    ``algbw`` = ``n_bytes / seconds`` (``n_bytes``: the tensor's size; for all-gather the gathered
    output). ``busbw`` = algbw x the ring factor -- 2(n-1)/n for an all-reduce (a reduce-scatter then
    an all-gather), (n-1)/n for all-gather and reduce-scatter --, the bytes each rank's link really
    carries per second: comparable with the link's own speed whatever the number of ranks."""
    if kind not in _BUS_KINDS:
        raise LabkitError(f"unknown collective {kind!r}; use one of {', '.join(_BUS_KINDS)}")
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise LabkitError(f"world must be a positive integer (ranks), got {world!r}")
    for name, value in (("n_bytes", n_bytes), ("seconds", seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise LabkitError(f"{name} must be a positive number, got {value!r}")
    from .dist import ring_wire_bytes    # the ring's bytes per rank, lab 07 section 8

    algbw = n_bytes / seconds
    return {"algbw": algbw, "busbw": algbw if kind == "broadcast" else ring_wire_bytes(kind, algbw, world)}

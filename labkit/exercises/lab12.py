"""Lab 12: GPU utilisation -- the exercises at the end of the notebook.

The code exercises run the learner's function on fresh random Llama-shaped configurations
against `labkit.flops` (proven equal to torch's FlopCounterMode in lab 12, section 4); the
numbers are computed from labkit's model configs.
"""
from __future__ import annotations

from .checker import CodeExercise, Exercise, draw_int


def _config(gen):
    from transformers import LlamaConfig

    heads = draw_int(gen, 1, 8)
    kv = [h for h in range(1, heads + 1) if heads % h == 0][draw_int(gen, 0, sum(1 for h in range(1, heads + 1)
                                                                         if heads % h == 0) - 1)]
    head_dim = 8 * draw_int(gen, 1, 8)
    return LlamaConfig(vocab_size=draw_int(gen, 10, 5000), hidden_size=head_dim * heads, intermediate_size=draw_int(gen, 8, 900),
                       num_hidden_layers=draw_int(gen, 1, 12), num_attention_heads=heads, num_key_value_heads=kv,
                       head_dim=head_dim)


def _fpt_inputs(gen):
    return (_config(gen), draw_int(gen, 1, 4096), bool(draw_int(gen, 0, 1)), ["eager", "sdpa"][draw_int(gen, 0, 1)])


def _fpt_reference(config, seq_len, training, attn):
    from .. import flops

    return float(flops.flops_per_token(config, seq_len, training=training, attn_implementation=attn))


def _mfu_inputs(gen):
    import torch

    return (float(torch.empty(1).uniform_(10, 1e5, generator=gen)), _config(gen), draw_int(gen, 1, 4096),
            float(torch.empty(1).uniform_(1e12, 2e15, generator=gen)))


def _mfu_reference(tokens_per_s, config, seq_len, peak):
    from .. import flops

    return flops.mfu(tokens_per_s, config, seq_len, peak)


_COMM_NAMES = ("FSDP::all_gather (model.layers.0)", "FSDP::post_backward_reduce (lm_head)", "c10d::_allgather_base_",
               "fsdp::all_gather_copy_in", "c10d::allreduce_", "record_param_comms")
_OTHER_NAMES = ("aten::mm", "aten::copy_", "FSDP::pre_forward (model.layers.1)", "aten::_foreach_add_")


def _trace_inputs(gen):
    """A small synthetic Chrome trace: 1-3 marked steps on thread 1, communication and compute spans
    (nested, overlapping, crossing a step's edge) there and on gloo's thread 2, and another process."""
    from .. import flops

    events, t = [], 0
    for _ in range(draw_int(gen, 1, 3)):
        length = draw_int(gen, 50, 1000)
        events.append({"ph": "X", "name": flops.STEP_MARK, "ts": t, "dur": length, "pid": 1, "tid": 1})
        for _ in range(draw_int(gen, 0, 6)):
            comm = draw_int(gen, 0, 2) > 0
            names = _COMM_NAMES if comm else _OTHER_NAMES
            events.append({"ph": "X", "name": names[draw_int(gen, 0, len(names) - 1)],
                           "ts": t + draw_int(gen, -20, length), "dur": draw_int(gen, 1, length // 2 + 1),
                           "pid": [1, 1, 1, 2][draw_int(gen, 0, 3)], "tid": [1, 1, 2][draw_int(gen, 0, 2)]})
        t += length + draw_int(gen, 0, 100)
    return (events,)


def _comm_split_reference(events):
    from .. import flops

    return flops.comm_split(events)


def _bus_inputs(gen):
    import torch

    return (float(draw_int(gen, 1, 2**30)), float(torch.empty(1).uniform_(1e-5, 1.0, generator=gen)),
            draw_int(gen, 1, 64), ["all_reduce", "all_gather", "reduce_scatter"][draw_int(gen, 0, 2)])


def _bus_reference(n_bytes, seconds, world, kind):
    from .. import flops

    return flops.bus_bandwidth(n_bytes, seconds, world, kind)


def _zero3_gb_7b_8() -> float:
    from .. import dist, models

    n = models.count_params(models.build("llama-2-7b", device="meta"))
    return dist.comm_volume(n, "zero3", bytes_per_elem=2, n_gpus=8) / 1e9


def _gflops_7b_4096() -> float:
    from .. import flops, models

    return flops.flops_per_token(models.config("llama-2-7b"), 4096, attn_implementation="eager") / 1e9


def _mfu_7b_3000() -> float:
    from .. import flops, models

    return flops.mfu(3000, models.config("llama-2-7b"), 2048, 989.4e12)


EXERCISES = {
    "12.flops_per_token": CodeExercise(
        question="write flops_per_token_s(config, seq_len, training=True, attn_implementation='eager'): 6N (2N forward "
                 "only) for the matmul weights plus attention's two matmuls (all s keys for eager, (s+1)/2 causal)",
        reference=_fpt_reference, inputs=_fpt_inputs, solution="flops_per_token_s", rtol=1e-9, atol=0,
        hint="N = q, k, v, o (k and v have kv_heads x head_dim outputs) + gate/up/down of every layer + the LM head "
             "(no embedding); attention: 4 x layers x heads x head_dim x keys per token forward; training x3"),
    "12.mfu": CodeExercise(
        question="write mfu_s(tokens_per_s, config, seq_len, peak_flops): model-FLOPs utilisation with PaLM's "
                 "6N + 12·L·d·s per token",
        reference=_mfu_reference, inputs=_mfu_inputs, solution="mfu_s", rtol=1e-9, atol=0,
        hint="tokens/s x training FLOPs per token with eager (full s x s) attention, divided by the peak"),
    "12.comm_split": CodeExercise(
        question="write comm_split_s(events, step_name='labkit::step'): per marked step of a Chrome trace, the time "
                 "its own thread spends in communication spans (nested spans counted once), the compute rest, the "
                 "share, and the communication time on the process's other threads",
        reference=_comm_split_reference, inputs=_trace_inputs, solution="comm_split_s", rtol=1e-9, atol=1e-12,
        hint="clip every communication span to the step, keep those of the same pid, split by tid, then measure "
             "the union of the intervals (sort by start, extend the covered end); microseconds -> seconds"),
    "12.bus_bandwidth": CodeExercise(
        question="write bus_bandwidth_s(n_bytes, seconds, world, kind): nccl-tests' algbw and busbw (bytes/s) of "
                 "an all_reduce, all_gather or reduce_scatter",
        reference=_bus_reference, inputs=_bus_inputs, solution="bus_bandwidth_s", rtol=1e-9, atol=0,
        hint="algbw = n_bytes / seconds; busbw = algbw x 2(n-1)/n for all_reduce, x (n-1)/n for the other two"),

    "12.llama2_7b_gflops_per_token_4096": Exercise(
        "GFLOP per token of a Llama-2-7B training step at 4,096 tokens, eager attention", _gflops_7b_4096, 0.001,
        "6 x (matmul weights) + 12 x layers x hidden x seq_len; the embedding is not a matmul"),
    "12.mfu_llama2_7b_3000_h100": Exercise(
        "MFU of Llama-2-7B at 2,048 tokens and 3,000 tokens/s on one H100 SXM (989.4 TFLOP/s bf16), as a fraction",
        _mfu_7b_3000, 0.002, "tokens/s x (6N + 12 L d s) / 989.4e12"),
    "12.zero3_gb_per_gpu_7b_8gpus": Exercise(
        "GB (1e9 bytes) each of 8 GPUs sends per ZeRO-3 step of Llama-2-7B in bf16 (all parameters, ring factor "
        "(N-1)/N applied)", _zero3_gb_7b_8, 0.002,
        "3 x parameters x 2 bytes x 7/8: all-gather in forward and in backward, reduce-scatter of the gradients"),
}

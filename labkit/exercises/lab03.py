"""Lab 03: gradient checkpointing -- the exercises at the end of the notebook.

Each numeric checker computes its expected value independently (torch, a model on `meta`,
a hand formula), never from the notebook; each code exercise runs the learner's function on
fresh random inputs against a reference: labkit's `apply_checkpointing` (whose layouts lab 03
proves equal to the plain model and to transformers), torch's own `checkpoint_sequential`
(observed by recording which function runs when), or `torch.utils.checkpoint.checkpoint`.
"""
from __future__ import annotations

from .checker import CodeExercise, Exercise, draw_int


# ----------------------------------------------------------------------------- code: layouts
def _layer_stack(n_layers: int):
    """The smallest model `checkpointing.apply_checkpointing` accepts: ``model.model.layers``."""
    from torch import nn

    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList(nn.Identity() for _ in range(n_layers))
    return model


def _labkit_segments(n_layers: int, size: int) -> list[list[int]]:
    from .. import checkpointing

    return checkpointing.apply_checkpointing(_layer_stack(n_layers), segment=size)


def _labkit_every(n_layers: int, k: int) -> list[list[int]]:
    from .. import checkpointing

    return checkpointing.apply_checkpointing(_layer_stack(n_layers), every=k)


def _n_and_size(gen) -> tuple[int, int]:
    """A layer count and a segment size / stride; a third of the time an edge case (1, n, n + 1)."""
    n = draw_int(gen, 1, 40)
    size = (1, n, n + 1)[draw_int(gen, 0, 2)] if draw_int(gen, 0, 2) == 0 else draw_int(gen, 1, n)
    return n, size


def _torch_sequential_plan(n_layers: int, segments: int) -> tuple[list[list[int]], list[int]]:
    """The layout `torch.utils.checkpoint.checkpoint_sequential` really uses, observed: each layer
    records whether grad mode is on when it runs (off in a reentrant checkpoint's first forward),
    and the order of the backward's recomputations gives the segments."""
    import torch
    from torch.utils.checkpoint import checkpoint_sequential

    calls = []

    def layer(i):
        def f(x):
            calls.append((i, torch.is_grad_enabled()))
            return x * 1.0
        return f

    x = torch.ones(1, requires_grad=True)
    checkpoint_sequential([layer(i) for i in range(n_layers)], segments, x, use_reentrant=True).sum().backward()
    forward, recomputed = calls[:n_layers], [i for i, _ in calls[n_layers:]]
    runs: list[list[int]] = []
    for i in recomputed:          # segments are recomputed last first, each in order
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs[::-1], [i for i, grad_on in forward if grad_on]


def _n_and_segments(gen) -> tuple[int, int]:
    n = draw_int(gen, 1, 40)
    return n, (1, n)[draw_int(gen, 0, 1)] if draw_int(gen, 0, 3) == 0 else draw_int(gen, 1, n)


# ----------------------------------------------------------------------------- code: the checkpoint
def _mlp_and_input(gen) -> tuple:
    """A small MLP with dropout, its input, a mask (no gradient), a scale, the dropout p, the seed of
    the dropout masks, and whether the input itself needs a gradient (a frozen embedding does not)."""
    import torch

    batch, width, hidden = draw_int(gen, 1, 16), draw_int(gen, 2, 32), draw_int(gen, 2, 64)
    torch_state = torch.get_rng_state()
    torch.manual_seed(draw_int(gen, 0, 2**31))       # the MLP's init, reproducible from gen
    mlp = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, width))
    torch.set_rng_state(torch_state)
    x = torch.randn(batch, width, generator=gen)
    mask = torch.randn(batch, width, generator=gen)
    scale = float(torch.rand(1, generator=gen)) * 2
    p = (0.0, 0.1, 0.5)[draw_int(gen, 0, 2)]
    return mlp, x, mask, scale, p, draw_int(gen, 0, 2**31), draw_int(gen, 0, 3) != 0


def _mlp_gradients(ckpt, mlp, x, mask, scale, p, seed, x_needs_grad) -> dict:
    """One forward/backward of the MLP block through ``ckpt(fn, *args)``: the bytes autograd saved
    besides the inputs and parameters (none for a checkpointed call), the outputs, the gradients."""
    import torch

    x = x.requires_grad_(x_needs_grad)

    def block(x, mask, scale, p):
        h = torch.nn.functional.dropout(mlp[1](mlp[0](x)), p=p, training=True)
        return mlp[2](h) * scale + mask, h.square().mean()

    known = {t.untyped_storage().data_ptr() for t in (x, mask, *mlp.parameters())}
    inner = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in known:
            inner.append(t.untyped_storage().nbytes())
        return t

    torch.manual_seed(seed)                      # the same dropout masks for reference and answer
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, aux = ckpt(block, x, mask, scale, p)
    (y.sin().sum() + aux).backward()
    out = {"bytes saved for backward besides the inputs and parameters": sum(inner),
           "output": y.detach(), "second output": aux.detach()}
    if x_needs_grad:
        out["x.grad"] = x.grad
    out.update({f"mlp.{name}.grad": w.grad for name, w in mlp.named_parameters()})
    return out


# ----------------------------------------------------------------------------- code: accumulation
def _lm_batch_and_accum(gen) -> tuple:
    """A one-layer Llama with random weights, a batch of token ids (labels = inputs) and a number of
    micro-batches that divides the batch (1 and the whole batch included)."""
    import torch

    from .. import models

    cfg = models.config("lab-tiny", num_hidden_layers=1, hidden_size=32, intermediate_size=64, head_dim=16,
                        num_attention_heads=2, num_key_value_heads=2, vocab_size=draw_int(gen, 8, 64))
    model = models.build(cfg, device="cpu", seed=draw_int(gen, 0, 2**31)).train()
    batch_size, seq_len = draw_int(gen, 1, 8), draw_int(gen, 2, 24)
    ids = torch.randint(0, cfg.vocab_size, (batch_size, seq_len), generator=gen)
    divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
    return model, {"input_ids": ids, "labels": ids}, divisors[draw_int(gen, 0, len(divisors) - 1)]


def _big_batch_gradients(model, batch, accum) -> dict:
    """The gradient of the mean loss over the whole batch in one forward/backward (``accum`` unused)."""
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _torch_checkpoint(fn, *args):
    import torch.utils.checkpoint

    return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)

def _saved_bytes_8_layers_every4() -> float:
    import torch

    from .. import checkpointing, memory, models

    cfg = models.config("lab-tiny", num_hidden_layers=8)
    model = models.build(cfg, device="cpu", seed=0).train()
    ids = torch.randint(0, cfg.vocab_size, (2, 128), generator=torch.Generator().manual_seed(0))
    checkpointing.apply_checkpointing(model, every=4)
    return float(memory.saved_activation_bytes(model, ids, use_cache=False))


def _recompute_flops_fraction_1b() -> float:
    from .. import models

    model = models.build("llama-3.2-1b", device="meta")
    layers = sum(p.numel() for p in model.model.layers.parameters())
    head = model.config.vocab_size * model.config.hidden_size
    return layers / (3 * (layers + head))      # one extra forward of the layers over (forward + 2 x forward)


def _checkpointing_saves_7b_gb() -> float:
    from .. import memory

    plain, ckpt = (memory.estimate("llama-2-7b", batch_size=1, seq_len=4096, precision="bf16-mixed",
                                   gradient_checkpointing=gc) for gc in (False, True))
    return (plain.activations - ckpt.activations) / 1e9


EXERCISES: dict[str, Exercise | CodeExercise] = {
    "03.saved_bytes_8_layers_every4": Exercise(
        "bytes saved by the 8-layer lab-tiny-shaped model, batch 2 x 128, with every=4", _saved_bytes_8_layers_every4,
        0.01, "from the 4-layer table: A - B = (none - every=1) / 4 per checkpointed layer; outside the layers = "
              "none - 4 A; then 8 layers with 2 checkpointed keep outside + 6 A + 2 B"),
    "03.recompute_flops_fraction_1b": Exercise(
        "extra matmul FLOPs from checkpointing every layer of Llama-3.2-1B, as a fraction of forward + backward",
        _recompute_flops_fraction_1b, 0.02,
        "count parameters on `meta`: layers L, head V x h; the step costs 3 x (L + head), the recompute adds L"),
    "03.checkpointing_saves_7b_gb": Exercise(
        "GB of activations removed by checkpointing, Llama-2-7B, batch 1 x 4096, bf16-mixed (estimator)",
        _checkpointing_saves_7b_gb, 0.01, "memory.estimate(..., gradient_checkpointing=False) minus =True, activations"),
    "03.grad_accum_steps": Exercise(
        "grad_accum for an effective batch of 48 with micro-batches of 3 on 2 data-parallel GPUs",
        lambda: 48 / (3 * 2), 0.0, "effective batch = micro-batch x grad_accum x number of GPUs"),
    "03.segment_plan": CodeExercise(
        question="segment_plan(n_layers, size): all layers in consecutive segments of `size` layers, as lists "
                 "of layer indices (labkit's apply_checkpointing(model, segment=size) layout)",
        reference=_labkit_segments, inputs=_n_and_size, solution="segment_plan",
        hint="every layer belongs to exactly one segment, in order; when size does not divide n the last "
             "segment is shorter, and a size above n gives a single segment"),
    "03.every_plan": CodeExercise(
        question="every_plan(n_layers, k): the every-k-th layout as one-layer segments (labkit's "
                 "apply_checkpointing(model, every=k) layout)",
        reference=_labkit_every, inputs=_n_and_size, solution="every_plan",
        hint="the first layer is always checkpointed; count on from it in steps of k"),
    "03.sequential_plan": CodeExercise(
        question="sequential_plan(n_layers, segments): the layout torch.utils.checkpoint.checkpoint_sequential "
                 "uses, as (checkpointed segments, the layers of the last chunk, which run without a checkpoint)",
        reference=_torch_sequential_plan, inputs=_n_and_segments, solution="sequential_plan",
        hint="read checkpoint_sequential's source: one segment length, computed from n and segments, serves "
             "every checkpointed segment; then see what it does with the layers that are left"),
    "03.accumulate": CodeExercise(
        question="accumulated_gradients(model, batch, accum): {parameter name: gradient} of the batch's mean loss, "
                 "computed from `accum` equal micro-batches; it must equal one big batch's gradient",
        reference=_big_batch_gradients, inputs=_lm_batch_and_accum, solution="accumulated_gradients",
        rtol=1e-4, atol=1e-6,
        hint="every micro-batch has the same number of tokens, so the big batch's mean loss is the average of "
             "the micro-batches' mean losses; .grad adds up over backward calls until you zero it"),
    "03.checkpoint": CodeExercise(
        question="my_checkpoint(fn, *args): fn(*args) keeping only its inputs for the backward and recomputing "
                 "the rest; outputs and every gradient equal a plain forward/backward's (torch.utils.checkpoint's), "
                 "dropout included",
        reference=lambda *args: _mlp_gradients(_torch_checkpoint, *args),
        run=lambda answer, args: _mlp_gradients(answer, *args),
        inputs=_mlp_and_input, solution="my_checkpoint", rtol=1e-6, atol=1e-7,
        hint="the first forward must save nothing but the inputs; the recomputation must draw the same dropout "
             "masks as the first forward; and the parameters still need gradients when the input itself needs none"),
}

"""ZeRO-3 by hand, and the ZeRO memory calculator (lab 07 §4-5, §13).

Lab 07 builds ZeRO-3 in solution cells and proves it equal to FSDP2's ``fully_shard``
(``labs/scripts/zero3_train.py``); this is labkit's canonical copy the script runs as the
``labkit`` arm, and the formula the measured bytes are held against:

* `shard_layout` / `flat_shard` / `unit_views`: a unit's parameters as one padded flat vector,
  one equal slice per rank (built in lab 07 §4);
* `gather_full` / `zero3_step`: all-gather, run, free; all-gather, re-run, reduce-scatter
  (built in lab 07 §4, checked against ``fully_shard`` in §5);
* `tiny_lm`: the small LM of units both run (lab 07 §4-5);
* `zero_parts` / `zero_memory`: bytes per GPU under ZeRO stages 0-3 (lab 07 §2, §7, §13; lab 01
  and `labkit.parallelism` use it too).
"""
from __future__ import annotations

from ..errors import LabkitError

__all__ = ["shard_layout", "flat_shard", "unit_views", "gather_full", "zero3_step", "tiny_lm", "zero_parts",
           "zero_memory"]


# ---------------------------------------------------------------------------
# ZeRO-3 by hand (lab 07 §4): flat shards, all-gather, reduce-scatter
# ---------------------------------------------------------------------------
def shard_layout(numel: int, world: int) -> tuple[int, int]:
    """(padded numel, shard numel) of a flat parameter of ``numel`` elements over ``world`` ranks.

    ZeRO-3 / FSDP1 concatenate a unit's parameters into ONE flat vector and pad it with zeros to a
    multiple of the world size, so every rank holds an equal slice and ``all_gather_into_tensor``
    (which needs equal inputs) can rebuild it. Taught in lab 07 §4."""
    if not isinstance(numel, int) or numel < 0 or not isinstance(world, int) or world < 1:
        raise LabkitError(f"shard_layout needs numel >= 0 and world >= 1 (integers), got {numel!r}, {world!r}")
    shard = -(-numel // world)
    return shard * world, shard


def flat_shard(params, rank: int, world: int):
    """This rank's slice of the zero-padded concatenation of ``params`` (a unit's flat parameter)."""
    import torch

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    padded, shard = shard_layout(flat.numel(), world)
    flat = torch.nn.functional.pad(flat, (0, padded - flat.numel()))
    return flat[rank * shard:(rank + 1) * shard].clone()


def unit_views(full, unit) -> dict:
    """{parameter name: view of ``full``} -- the gathered flat vector seen as ``unit``'s parameters."""
    views, offset = {}, 0
    for name, p in unit.named_parameters():
        views[name] = full[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    return views


def gather_full(shard, dtype=None):
    """All-gather every rank's shard into the full flat vector (cast to ``dtype`` first: bf16 halves it)."""
    import torch.distributed as dist

    src = shard.detach() if dtype is None else shard.detach().to(dtype)
    full = src.new_empty(src.numel() * dist.get_world_size())
    dist.all_gather_into_tensor(full, src)
    return full


def zero3_step(units, shards, optimizer, x, y, param_dtype=None, reduce_dtype=None):
    """One ZeRO-3 training step by hand; returns this rank's loss (lab 07 §4).

    ``units`` run in order (the last gives logits); ``shards[i]`` is this rank's flat slice of unit
    i (a leaf the optimizer steps). Forward: all-gather a unit, run it, free it -- only unit inputs
    are kept. Backward, last unit first: all-gather again, recompute the unit with grad, reduce-scatter
    its gradient (mean over ranks) into the shard's ``.grad``. 2 all-gathers + 1 reduce-scatter = 3Ψ.
    ``param_dtype``/``reduce_dtype`` play FSDP2's MixedPrecisionPolicy (gather and compute in bf16,
    reduce in fp32)."""
    import torch
    import torch.distributed as dist
    from torch.func import functional_call

    world = dist.get_world_size()
    inputs = [x]
    with torch.no_grad():
        for unit, shard in zip(units, shards):
            inputs.append(functional_call(unit, unit_views(gather_full(shard, param_dtype), unit), (inputs[-1],)))
    logits = inputs.pop().requires_grad_()
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    loss.backward()
    grad_out = logits.grad
    for unit, shard, inp in reversed(list(zip(units, shards, inputs))):
        full = gather_full(shard, param_dtype).requires_grad_()
        inp = inp.detach().requires_grad_(inp.is_floating_point())
        with torch.enable_grad():
            out = functional_call(unit, unit_views(full, unit), (inp,))
            wrt = (full, inp) if inp.requires_grad else (full,)
            grads = torch.autograd.grad(out, wrt, grad_out)
        g_full = grads[0].to(reduce_dtype or shard.dtype)
        g_shard = g_full.new_empty(shard.numel())
        dist.reduce_scatter_tensor(g_shard, g_full)
        shard.grad = (g_shard / world).to(shard.dtype)
        grad_out = grads[1] if len(grads) > 1 else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def tiny_lm(vocab: int = 2048, width: int = 64, hidden: int = 256, layers: int = 2, seed: int = 0):
    """A small LM as a list of units (nn.Sequential): embedding, residual MLP blocks, norm + head.

    Every unit takes one tensor and returns one, so the hand-written ZeRO-3 step can run the units
    in order (`zero3_step`) and FSDP2 can shard each one (lab 07 §4)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.up, self.down = nn.LayerNorm(width), nn.Linear(width, hidden), nn.Linear(hidden, width)

        def forward(self, x):
            return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))

    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(vocab, width), *[Block() for _ in range(layers)],
                         nn.Sequential(nn.LayerNorm(width), nn.Linear(width, vocab)))


# ---------------------------------------------------------------------------
# The calculator: ZeRO memory per GPU
# ---------------------------------------------------------------------------
def zero_parts(n_params: float, n_gpus: int, stage: int, *, param_bytes: float = 2, grad_bytes: float = 2,
               optimizer_bytes: float = 12) -> dict:
    """Bytes per GPU of parameters, gradients and optimizer states under ZeRO stage 0-3.

    Mixed-precision Adam keeps per parameter: ``param_bytes`` (2: bf16/fp16
    weights), ``grad_bytes`` (2) and K = ``optimizer_bytes`` (12: fp32 master
    copy + two fp32 moments). With Ψ parameters on N GPUs (ZeRO paper, Rajbhandari et al. 2020):

    ======  =====================================  ==========================
    stage   what is sharded                        bytes per GPU
    ======  =====================================  ==========================
    0 (DDP) nothing                                (2 + 2 + K) Ψ
    1       optimizer states                       2Ψ + 2Ψ + KΨ/N
    2       + gradients                            2Ψ + (2 + K)Ψ/N
    3       + parameters (= FSDP full shard)       (2 + 2 + K)Ψ/N
    ======  =====================================  ==========================

    Pure fp32 training (what the lab measures on CPU) is param 4, grad 4, K=8.
    """
    if stage not in (0, 1, 2, 3):
        raise LabkitError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
    if n_gpus < 1 or n_params < 0:
        raise LabkitError("n_gpus must be at least 1 and n_params non-negative")
    p, g, o = param_bytes * n_params, grad_bytes * n_params, optimizer_bytes * n_params
    return {"params": p / n_gpus if stage >= 3 else p,
            "grads": g / n_gpus if stage >= 2 else g,
            "optimizer": o / n_gpus if stage >= 1 else o}


def zero_memory(n_params: float, n_gpus: int, stage: int, *, param_bytes: float = 2, grad_bytes: float = 2,
                optimizer_bytes: float = 12) -> float:
    """Bytes per GPU of model states (no activations) under ZeRO ``stage``; see `zero_parts` for the formula."""
    return sum(zero_parts(n_params, n_gpus, stage, param_bytes=param_bytes, grad_bytes=grad_bytes,
                          optimizer_bytes=optimizer_bytes).values())

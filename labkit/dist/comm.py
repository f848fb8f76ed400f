"""What a rank holds and what it sends: counted, simulated, and computed (lab 07 §7-8, §13).

Lab 07 measures memory and communication on real gloo ranks, so this module holds the
measuring instruments and the arithmetic they are checked against:

* `local_bytes` / `optimizer_bytes`: what a rank really stores (a DTensor counts its local
  shard), measured in lab 07 §6-7;
* `CommCounter`: counts the bytes of the collectives FSDP2, DDP and tensor parallelism issue, by
  wrapping the ``torch.distributed`` functions while active (`CommCounter.wrap`, shown in lab
  07 §6); `count_ddp` routes DDP's all-reduce through Python so it is seen (lab 07 §6, §8);
* `reduce_scatter_sim` / `ring_allreduce_sim` simulate the collectives in one process and
  `ring_wire_bytes` gives a ring's bytes on the wire (built in lab 07 §8);
* `comm_volume` / `comm_time` / `LINKS`: bytes and seconds per step on a link, the calculator
  of lab 07 §13 (one GPU or a laptop cannot measure a cluster's traffic).
"""
from __future__ import annotations

from ..errors import LabkitError

__all__ = ["local_bytes", "optimizer_bytes", "CommCounter", "count_ddp", "reduce_scatter_sim", "ring_allreduce_sim",
           "ring_wire_bytes", "comm_volume", "LINKS", "comm_time"]


# ---------------------------------------------------------------------------
# Measuring what a rank holds and what it sends
# ---------------------------------------------------------------------------
def local_bytes(tensors) -> int:
    """Bytes this rank really stores: a DTensor counts only its local shard (`to_local()`)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def optimizer_bytes(optimizer) -> int:
    """Bytes of an optimizer's state tensors on this rank (AdamW: exp_avg, exp_avg_sq, step)."""
    import torch

    return local_bytes(v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor))


class CommCounter:
    """Count the bytes of the collectives issued while active, by kind.

    FSDP2 calls ``torch.distributed.all_gather_single`` / ``reduce_scatter_single``
    (older releases ``all_gather_into_tensor`` / ``reduce_scatter_tensor``),
    tensor parallelism and gradient clipping ``all_reduce``; we wrap those
    module functions, so every call made through ``torch.distributed.X`` is
    seen. DDP issues its all-reduces from C++ unless a communication hook
    routes them through Python (`count_ddp`).

    Convention (the one the ZeRO paper's 2Ψ / 3Ψ use): an all-gather or
    reduce-scatter moves the FULL tensor's bytes, an all-reduce twice its bytes
    (a reduce-scatter plus an all-gather): the "logical volume". ``wire`` holds what a rank
    really sends in a ring, (N-1)/N of that (`ring_wire_bytes`): a 2-rank all-reduce of Ψ bytes
    sends Ψ per rank, not 2Ψ.
    """

    _NAMES = {"all_gather_single": "all_gather", "all_gather_into_tensor": "all_gather",
              "reduce_scatter_single": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter",
              "all_reduce": "all_reduce"}

    def __init__(self):
        self.bytes = {"all_gather": 0, "reduce_scatter": 0, "all_reduce": 0}
        self.wire = {k: 0.0 for k in self.bytes}   # bytes this rank sends in a ring (`ring_wire_bytes`)
        self.calls = {k: 0 for k in self.bytes}
        self._saved = {}

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def wire_total(self) -> float:
        return sum(self.wire.values())

    def add(self, kind: str, n_bytes: int, world: int = 1) -> None:
        """Count one collective: ``n_bytes`` in the logical convention, and its ring wire bytes."""
        self.bytes[kind] += int(n_bytes)
        tensor = n_bytes / 2 if kind == "all_reduce" else n_bytes
        self.wire[kind] += ring_wire_bytes(kind, tensor, world)
        self.calls[kind] += 1

    def reset(self) -> None:
        for k in self.bytes:
            self.bytes[k] = 0
            self.wire[k] = 0.0
            self.calls[k] = 0

    def __enter__(self):
        import torch.distributed as dist

        for name, kind in self._NAMES.items():
            fn = getattr(dist, name, None)
            if fn is None:
                continue
            self._saved[name] = fn
            setattr(dist, name, self.wrap(fn, name, kind))
        return self

    def __exit__(self, *exc):
        import torch.distributed as dist

        for name, fn in self._saved.items():
            setattr(dist, name, fn)
        self._saved.clear()

    def wrap(self, fn, name, kind):
        def counted(*args, **kwargs):
            if kind == "all_gather":      # (output, input): the full gathered tensor
                t = kwargs.get("output_tensor", args[0] if args else None)
                n = t.numel() * t.element_size()
            elif kind == "reduce_scatter":  # (output, input): the full tensor being reduced
                t = kwargs.get("input", kwargs.get("input_tensor", args[1] if len(args) > 1 else None))
                n = t.numel() * t.element_size()
            else:                          # all_reduce(tensor): reduce-scatter + all-gather
                t = kwargs.get("tensor", args[0] if args else None)
                n = 2 * t.numel() * t.element_size()
            pos = {"all_gather": 2, "reduce_scatter": 3, "all_reduce": 2}[kind]
            group = kwargs.get("group", args[pos] if len(args) > pos else None)
            import torch.distributed as dist

            group = group if isinstance(group, dist.ProcessGroup) else None
            self.add(kind, n, dist.get_world_size(group) if dist.is_initialized() else 1)
            return fn(*args, **kwargs)

        counted.__wrapped__ = fn
        return counted


def count_ddp(ddp_model) -> None:
    """Route DDP's gradient all-reduce through Python so `CommCounter` sees it.

    DDP normally calls the C++ process group directly; registering its own
    default all-reduce hook (same maths: sum, then divide by N) makes every
    bucket go through ``torch.distributed.all_reduce``.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    ddp_model.register_comm_hook(None, default_hooks.allreduce_hook)



# ---------------------------------------------------------------------------
# The collectives simulated in one process, and a ring's bytes on the wire
# ---------------------------------------------------------------------------
def reduce_scatter_sim(per_rank: list) -> list:
    """Reduce-scatter simulated in one process: rank r ends with chunk r of the SUM of every rank's tensor.

    The inputs are flat tensors of equal length, divisible by the number of ranks (pad first:
    `shard_layout`). What `torch.distributed.reduce_scatter_tensor` returns on each rank."""
    import torch

    world = len(per_rank)
    if world < 1 or any(t.numel() != per_rank[0].numel() for t in per_rank) or per_rank[0].numel() % world:
        raise LabkitError("reduce_scatter_sim needs equal-length flat tensors whose length the rank count divides")
    return list(torch.stack([t.reshape(-1) for t in per_rank]).sum(0).chunk(world))


def ring_allreduce_sim(per_rank: list) -> tuple[list, list[int]]:
    """A ring all-reduce simulated in one process: (every rank's summed tensor, bytes each rank SENT).

    The tensor is cut into N chunks; in N-1 reduce-scatter steps rank r sends one chunk to rank r+1,
    which adds it; in N-1 all-gather steps the finished chunks travel round the ring. Each rank
    sends 2(N-1) chunks = 2(N-1)/N of the tensor: on 2 ranks Ψ bytes, not 2Ψ (lab 07 §8)."""
    world = len(per_rank)
    if world < 1 or any(t.numel() != per_rank[0].numel() for t in per_rank) or per_rank[0].numel() % world:
        raise LabkitError("ring_allreduce_sim needs equal-length flat tensors whose length the rank count divides")
    chunks = [list(t.reshape(-1).clone().chunk(world)) for t in per_rank]
    sent = [0] * world
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(world - 1):
            # rank r sends chunk (r - step) (reduce-scatter) or (r + 1 - step) (all-gather) to rank r + 1
            msgs = []
            for r in range(world):
                c = (r - step) % world if phase == "reduce-scatter" else (r + 1 - step) % world
                msgs.append((r, c, chunks[r][c].clone()))
                sent[r] += chunks[r][c].numel() * chunks[r][c].element_size()
            for r, c, payload in msgs:
                dst = (r + 1) % world
                chunks[dst][c] = chunks[dst][c] + payload if phase == "reduce-scatter" else payload
    import torch

    return [torch.cat(c).view_as(per_rank[0]) for c in chunks], sent


def ring_wire_bytes(kind: str, tensor_bytes: float, world: int) -> float:
    """Bytes ONE rank sends on the wire for a ring collective on a ``tensor_bytes`` full tensor.

    all-gather / reduce-scatter: (N-1)/N of the full tensor; all-reduce: 2(N-1)/N of it. The
    "logical volume" `CommCounter` and the ZeRO paper use is the full tensor (x2 for an
    all-reduce), i.e. the large-N limit of these (lab 07 §8)."""
    if kind not in ("all_gather", "reduce_scatter", "all_reduce"):
        raise LabkitError(f"kind must be all_gather, reduce_scatter or all_reduce, got {kind!r}")
    if not isinstance(world, int) or world < 1:
        raise LabkitError(f"world must be a positive integer, got {world!r}")
    return (2 if kind == "all_reduce" else 1) * tensor_bytes * (world - 1) / world



# ---------------------------------------------------------------------------
# The calculator: communication per step, and its time on a link
# ---------------------------------------------------------------------------
def comm_volume(n_params: float, strategy: str = "zero3", *, bytes_per_elem: float = 2, n_gpus: int | None = None) -> float:
    """Bytes each GPU moves per training step (textbook volumes, ZeRO paper §7).

    * ``ddp`` / ``zero1`` / ``zero2``: 2Ψ -- one all-reduce of the gradients
      (= reduce-scatter Ψ + all-gather Ψ; ZeRO-1/2 do exactly those two halves);
    * ``zero3`` / ``fsdp``: 3Ψ -- all-gather the parameters in forward AND again
      in backward, reduce-scatter the gradients;
    * ``fsdp-no-reshard`` (``reshard_after_forward=False``): 2Ψ, the backward
      all-gather is skipped because forward kept the full parameters.

    Elements times ``bytes_per_elem`` (2 for bf16). With ``n_gpus`` the ring
    factor (N-1)/N is applied (what each GPU actually sends); without it, the
    large-N limit that the textbook numbers quote.
    """
    factor = {"ddp": 2, "zero1": 2, "zero2": 2, "zero3": 3, "fsdp": 3, "fsdp-no-reshard": 2}
    if strategy not in factor:
        raise LabkitError(f"unknown strategy {strategy!r}; use one of {', '.join(factor)}")
    ring = (n_gpus - 1) / n_gpus if n_gpus else 1.0
    return factor[strategy] * n_params * bytes_per_elem * ring


# Link bandwidths in BYTES per second, one direction (vendor figures).
LINKS = {
    "10GbE": 10e9 / 8,                  # 10 Gbit/s Ethernet
    "100GbE": 100e9 / 8,
    "InfiniBand NDR 400Gb/s": 400e9 / 8,  # one 400 Gbit/s HCA
    "PCIe 5.0 x16": 64e9,
    "NVLink 4 (H100)": 450e9,           # 900 GB/s total = 450 GB/s each way
}


def comm_time(n_bytes: float, bandwidth: float | str | None = None, *, gbit_per_s: float | None = None,
              gbyte_per_s: float | None = None) -> float:
    """Seconds to move ``n_bytes`` over a link (pure bandwidth: no latency, no overlap with compute).

    Give the bandwidth ONE way: ``bandwidth`` in **bytes per second** (or a name
    from `LINKS`, e.g. ``"10GbE"``), or ``gbit_per_s=`` (network units: 10 for
    10 GbE, 400 for NDR InfiniBand), or ``gbyte_per_s=`` (GB/s, 1e9 bytes).
    """
    given = [v is not None for v in (bandwidth, gbit_per_s, gbyte_per_s)]
    if sum(given) != 1:
        raise LabkitError("give the bandwidth exactly one way: bandwidth (bytes/s or a LINKS name), "
                          "gbit_per_s= or gbyte_per_s=")
    if isinstance(bandwidth, str):
        if bandwidth not in LINKS:
            raise LabkitError(f"unknown link {bandwidth!r}; known: {', '.join(LINKS)}")
        bytes_per_s = LINKS[bandwidth]
    elif bandwidth is not None:
        bytes_per_s = float(bandwidth)
    elif gbit_per_s is not None:
        bytes_per_s = gbit_per_s * 1e9 / 8
    else:
        bytes_per_s = gbyte_per_s * 1e9
    if bytes_per_s <= 0:
        raise LabkitError("bandwidth must be positive")
    return n_bytes / bytes_per_s

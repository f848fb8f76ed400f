"""3D parallelism on paper: memory per GPU, bytes per link and step time of a (TP, PP, DP) layout.

Lab 07 measures each piece on two CPU ranks -- ZeRO's shards (§7), the ring's wire bytes (§8),
tensor parallelism's two all-reduces per layer (§11), the pipeline bubble (§12). A cluster cannot
be measured here, so lab 07 §13 puts those pieces together in this calculator and asks it the
questions practitioners answer from experience: when is ZeRO alone enough, why put tensor
parallelism inside a node, what does a missing NVLink cost (interview ids DIST-04, DIST-07,
DIST-08, DIST-10, DIST-12, DIST-13).

The model is the usual first-order one (Megatron-LM: Narayanan et al. 2021; activation memory:
Korthikanti et al. 2022), and it says what it leaves out:

* parameters split evenly over ``tp * pp`` GPUs (the embedding's imbalance is ignored), then
  ZeRO stage 0-3 over the ``dp`` replicas (`labkit.dist.zero_memory`, mixed-precision Adam);
* activations per GPU: 1F1B keeps ``pp`` micro-batches in flight on the first stage, i.e. the
  activations of all ``layers`` for one micro-batch: ``s·b·h·(10 + 24/t + 5·a·s/(h·t))`` bytes per
  layer (no sequence parallelism), or ``2·s·b·h`` per layer with full recomputation;
* bytes each GPU sends per step: TP 4 all-reduces of ``s·b·h`` bf16 activations per layer and
  micro-batch (2 forward, 2 backward), on a ring ``2(t-1)/t`` of that; PP one activation forward
  and one gradient backward per micro-batch; DP the gradient traffic of ``labkit.dist.comm_volume``;
* GPUs are numbered TP innermost, then PP, then DP (Megatron's order), so a group uses the
  node's fast link only while it fits inside a node;
* time: compute at a given MFU, stretched by the bubble, plus communication *not overlapped*
  (an upper bound: real frameworks hide much of DP's traffic behind backward).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from .errors import LabkitError


@dataclass(frozen=True)
class Shape:
    """What the calculator needs of a decoder: parameters and the shape of its activations."""

    name: str
    params: float
    layers: int
    hidden: int
    heads: int

    @classmethod
    def from_config(cls, config, name: str | None = None) -> "Shape":
        """The shape of a transformers config (parameters counted on the ``meta`` device)."""
        from . import models

        n = models.count_params(models.build(config, device="meta"))
        return cls(name or getattr(config, "_name_or_path", "") or config.model_type, float(n),
                   config.num_hidden_layers, config.hidden_size, config.num_attention_heads)


# Published architectures: LLaMA paper (Touvron et al. 2023) Table 2; GPT-3 paper (Brown et al.
# 2020) Table 2.1. Parameters as the papers quote them.
SHAPES = {
    "llama-65b": Shape("llama-65b", 65.2e9, 80, 8192, 64),
    "gpt3-175b": Shape("gpt3-175b", 175e9, 96, 12288, 96),
}

# One-direction bandwidth in bytes/s per GPU (vendor figures).
LINKS = {
    "NVLink 4 (H100)": 450e9,            # 900 GB/s total
    "NVLink 3 (A100)": 300e9,            # 600 GB/s total
    "PCIe 4.0 x16": 32e9,
    "InfiniBand HDR 200Gb/s": 200e9 / 8,  # one HCA per GPU, as in a DGX A100
    "InfiniBand NDR 400Gb/s": 400e9 / 8,
    "100GbE": 100e9 / 8,
}


@dataclass(frozen=True)
class Cluster:
    """``nodes`` x ``gpus_per_node`` GPUs of ``memory_gb`` each, ``peak_tflops`` dense bf16/fp16."""

    nodes: int
    gpus_per_node: int
    memory_gb: float
    peak_tflops: float
    intra_link: str = "NVLink 3 (A100)"
    inter_link: str = "InfiniBand HDR 200Gb/s"

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Plan:
    """One layout's bill: bytes per GPU, bytes per GPU per step on each group's link, seconds."""

    tp: int
    pp: int
    dp: int
    zero_stage: int
    micro_batches: int
    model_state_bytes: float
    activation_bytes: float
    tp_bytes: float
    pp_bytes: float
    dp_bytes: float
    tp_link: str
    pp_link: str
    dp_link: str
    bubble: float
    compute_s: float
    comm_s: float
    fits: bool

    @property
    def memory_bytes(self) -> float:
        return self.model_state_bytes + self.activation_bytes

    @property
    def step_s(self) -> float:
        """Compute stretched by the bubble, plus communication that is not overlapped."""
        return self.compute_s / (1 - self.bubble) + self.comm_s

    @property
    def layout(self) -> str:
        return f"TP{self.tp} x PP{self.pp} x DP{self.dp} (ZeRO-{self.zero_stage})"


def _link(group_span: int, cluster: Cluster) -> str:
    return cluster.intra_link if group_span <= cluster.gpus_per_node else cluster.inter_link


def plan(shape: Shape, cluster: Cluster, tp: int, pp: int, zero_stage: int = 1, *, seq_len: int = 2048,
         micro_batch: int = 1, global_batch: int = 1024, recompute: bool = False, mfu: float = 0.4) -> Plan:
    """The bill of one layout: TP ``tp`` x PP ``pp`` x DP (the rest of the cluster's GPUs).

    ``global_batch`` sequences of ``seq_len`` tokens per step, split into micro-batches of
    ``micro_batch`` per DP replica; compute at ``mfu`` of the cluster's peak (6·N FLOPs per token,
    8·N with ``recompute``)."""
    for name, v in (("tp", tp), ("pp", pp), ("seq_len", seq_len), ("micro_batch", micro_batch),
                    ("global_batch", global_batch)):
        if not isinstance(v, int) or v < 1:
            raise LabkitError(f"{name} must be a positive integer, got {v!r}")
    if cluster.gpus % (tp * pp):
        raise LabkitError(f"tp x pp = {tp * pp} does not divide the cluster's {cluster.gpus} GPUs")
    if shape.heads % tp or shape.layers % pp:
        raise LabkitError(f"tp must divide the {shape.heads} heads and pp the {shape.layers} layers "
                          f"(got tp={tp}, pp={pp})")
    if not 0 < mfu <= 1:
        raise LabkitError(f"mfu must be in (0, 1], got {mfu!r}")
    from .dist import bubble_fraction, comm_volume, zero_memory

    dp = cluster.gpus // (tp * pp)
    if global_batch % (dp * micro_batch):
        raise LabkitError(f"global_batch {global_batch} is not a multiple of dp x micro_batch = {dp * micro_batch}")
    m = global_batch // (dp * micro_batch)
    s, b, h, a, L = seq_len, micro_batch, shape.hidden, shape.heads, shape.layers
    params_per_gpu = shape.params / (tp * pp)
    states = zero_memory(params_per_gpu, dp, zero_stage)
    per_layer = 2 * s * b * h if recompute else s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))
    activations = L * per_layer
    act_msg = 2 * s * b * h                                   # one bf16 activation tensor
    tp_bytes = 4 * (L // pp) * m * 2 * (tp - 1) / tp * act_msg
    pp_bytes = 2 * m * act_msg if pp > 1 else 0.0
    dp_bytes = comm_volume(params_per_gpu, "zero3" if zero_stage == 3 else "ddp", n_gpus=dp) if dp > 1 else 0.0
    links = (_link(tp, cluster), _link(tp * pp, cluster), _link(tp * pp * dp, cluster))
    for link in links:
        if link not in LINKS:
            raise LabkitError(f"unknown link {link!r}; known: {', '.join(LINKS)}")
    comm_s = sum(n / LINKS[link] for n, link in zip((tp_bytes, pp_bytes, dp_bytes), links))
    tokens = global_batch * seq_len
    compute_s = (8 if recompute else 6) * shape.params * tokens / (cluster.gpus * cluster.peak_tflops * 1e12 * mfu)
    fits = states + activations <= cluster.memory_gb * 1e9
    return Plan(tp, pp, dp, zero_stage, m, states, activations, tp_bytes, pp_bytes, dp_bytes, *links,
                bubble_fraction(pp, m), compute_s, comm_s, fits)


def plans(shape: Shape, cluster: Cluster, *, zero_stages=(1, 3), **kwargs) -> list[Plan]:
    """Every valid (tp, pp, zero stage) layout of the cluster, fastest first; those that fit first.

    ``tp`` runs over the divisors of the heads, ``pp`` over the divisors of the layers (both
    dividing the GPUs); keyword arguments go to `plan`."""
    out = []
    for tp, pp in itertools.product(range(1, cluster.gpus + 1), repeat=2):
        if cluster.gpus % (tp * pp) or shape.heads % tp or shape.layers % pp:
            continue
        dp = cluster.gpus // (tp * pp)
        if kwargs.get("global_batch", 1024) % (dp * kwargs.get("micro_batch", 1)):
            continue
        for z in zero_stages:
            out.append(plan(shape, cluster, tp, pp, z, **kwargs))
    return sorted(out, key=lambda p: (not p.fits, p.step_s))


def best(shape: Shape, cluster: Cluster, **kwargs) -> Plan | None:
    """The fastest layout that fits in memory, or None if none does."""
    found = plans(shape, cluster, **kwargs)
    return found[0] if found and found[0].fits else None


def as_row(p: Plan) -> dict:
    """A plan as one table row (GB, GB per step, seconds) for `labkit.plots.table`."""
    return {"layout": p.layout, "micro-batches": p.micro_batches,
            "GB / GPU": round(p.memory_bytes / 1e9, 1), "fits": "yes" if p.fits else "no",
            "TP GB/step": round(p.tp_bytes / 1e9, 1), "TP link": p.tp_link,
            "DP GB/step": round(p.dp_bytes / 1e9, 1), "DP link": p.dp_link,
            "bubble": f"{p.bubble:.0%}", "step s": round(p.step_s, 1),
            "comm share": f"{p.comm_s / p.step_s:.0%}" if p.comm_s >= 0.005 * p.step_s else "<1%"}


__all__ = ["Cluster", "LINKS", "Plan", "SHAPES", "Shape", "as_row", "best", "plan", "plans"]

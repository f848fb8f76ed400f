"""Replay and curriculum: putting general data back into the fine-tuning batches (lab 06 §6, §10).

Why a module: the cheapest mitigation of forgetting changes only the data. `mix` adds general
documents to the domain documents at an exact general:domain ratio (`parse_ratio`; built from
scratch as ``replay_mix`` and checked against `mix` in lab 06 §4, measured in §6);
`curriculum_batches` lets the general share of each batch decay over training (lab 06 §10).
"""
from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Iterator

import torch

from .. import train
from ..errors import LabkitError

__all__ = ["parse_ratio", "mix", "curriculum_batches"]


def parse_ratio(ratio) -> Fraction:
    """general:domain ratio -> general documents per domain document, as an exact Fraction.

    Accepted forms: a number (``0``, ``0.2``, ``1``; ``0.2`` = one general per five
    domain documents), a string ``"1:5"`` or ``"0.2"``, a pair ``(1, 5)``, a Fraction.
    """
    try:
        if isinstance(ratio, bool):
            raise TypeError
        if isinstance(ratio, str) and ":" in ratio:
            g, d = ratio.split(":")
            value = Fraction(g.strip()) / Fraction(d.strip())
        elif isinstance(ratio, (tuple, list)) and len(ratio) == 2:
            value = Fraction(ratio[0]) / Fraction(ratio[1])
        elif isinstance(ratio, float):
            if not math.isfinite(ratio):
                raise ValueError
            value = Fraction(ratio).limit_denominator(1000)  # 0.2 -> 1/5, not 3602879701896397/2**54
        else:
            value = Fraction(ratio)
    except (TypeError, ValueError, ZeroDivisionError):
        raise LabkitError(f"ratio must be general:domain as a number (0.2), 'g:d' ('1:5') or a pair (1, 5); "
                          f"got {ratio!r}") from None
    if value < 0:
        raise LabkitError(f"ratio must be >= 0 (general documents per domain document), got {ratio!r}")
    return value


def mix(domain: list, general: list, ratio, seed: int = 0) -> list:
    """All ``domain`` documents plus ``round(ratio * len(domain))`` general ones, shuffled.

    ``ratio`` is general:domain in *documents* (see `parse_ratio`): ``0`` = domain only,
    ``"1:10"`` = one general document per ten domain documents, ``1`` = as many of each.
    The general documents are the first ones of ``general`` (pass them in a random
    order); the shuffle is seeded. Too few general documents is an error, not a
    silently smaller ratio.
    """
    if not domain:
        raise LabkitError("mix needs at least one domain document")
    r = parse_ratio(ratio)
    k = round(r * len(domain))
    if k > len(general):
        raise LabkitError(f"ratio {ratio!r} needs {k} general documents for {len(domain)} domain ones, "
                          f"got {len(general)}; pass more general documents or a smaller ratio")
    out = list(domain) + list(general[:k])
    random.Random(seed).shuffle(out)
    return out


def curriculum_batches(domain_tokens: torch.Tensor, general_tokens: torch.Tensor, batch_size: int, seq_len: int,
                       steps: int, start: float, end: float = 0.0, seed: int = 0,
                       device: str | torch.device = "cpu") -> Iterator[dict]:
    """Seeded batches whose general share falls linearly from ``start`` to ``end`` over ``steps``.

    At step t (0-based) ``round(share(t) * batch_size)`` rows are windows of the general
    stream and the rest windows of the domain stream; after ``steps`` the share stays at ``end``.
    """
    if not (0.0 <= end <= 1.0 and 0.0 <= start <= 1.0):
        raise LabkitError(f"curriculum shares must be in [0, 1], got start={start}, end={end}")
    gen_d = train.random_batches(domain_tokens, batch_size, seq_len, seed=seed, device=device)
    gen_g = train.random_batches(general_tokens, batch_size, seq_len, seed=seed + 1, device=device)
    t = 0
    while True:
        share = start + (end - start) * min(t / max(steps - 1, 1), 1.0)
        n_g = round(share * batch_size)
        d, g = next(gen_d)["input_ids"], next(gen_g)["input_ids"]
        x = torch.cat([g[:n_g], d[: batch_size - n_g]])
        t += 1
        yield {"input_ids": x, "labels": x}

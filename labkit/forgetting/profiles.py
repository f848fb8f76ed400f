"""`Sizes`: everything a run profile (smoke, cpu, full) changes in lab 06, and nothing else.

Why a module: the probes (`evaluate` without explicit probes) and the driver both read the
profile's sizes; the code path is the same for every profile (lab 06 §1 prints them).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .. import env
from ..errors import LabkitError

__all__ = ["Sizes", "sizes"]


@dataclass
class Sizes:
    """Everything the profile changes. The code path is the same for every profile."""
    steps: int = 200
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 2e-3             # full fine-tuning; see the lab for why a 4.5M model needs this much
    lora_lr: float = 1e-2        # LoRA wants ~5-10x the full fine-tuning rate
    lora_r: int = 16
    warmup: int = 5
    curve_every: int = 20        # probe every N steps (0: only at the end)
    eval_windows: int = 64
    eval_seq_len: int = 128
    n_facts: int | None = None   # fact-probe subset (None: all 150)
    n_sft: int = 64
    fisher_windows: int = 64
    ewc_lambda: float = 1e6      # on the per-sequence Fisher of the mean-token loss; lab 06 section 8 on its scale
    curriculum_start: float = 1 / 3  # general share at step 0, decaying linearly to 0
    seed: int = 0


def sizes(profile: str | None = None, **overrides) -> Sizes:
    """The `Sizes` of a profile (default: the environment's), with overrides."""
    p = env.check_profile(profile)
    base = {
        "smoke": Sizes(steps=16, batch_size=4, seq_len=64, warmup=2, curve_every=8, eval_windows=16,
                       n_facts=30, n_sft=16, fisher_windows=8),
        "cpu": Sizes(steps=48, batch_size=8, seq_len=128, warmup=4, curve_every=8, eval_windows=48,
                     fisher_windows=48),
        "full": Sizes(steps=600, batch_size=16, seq_len=256, warmup=20, curve_every=30, eval_windows=256,
                      fisher_windows=256, n_sft=256),
    }[p]
    unknown = [k for k in overrides if k not in Sizes.__dataclass_fields__]
    if unknown:
        raise LabkitError(f"unknown size {unknown[0]!r}; known: {', '.join(Sizes.__dataclass_fields__)}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})

"""The input checks every quantizer shares: a float tensor, and no NaN/inf in it.

Why a module of its own: absmax int8 (`int8`), the 4-bit types (`fourbit`) and the 8-bit blockwise
code of double quantization (`double`) all refuse a NaN or inf the same way, so they read one
`_check_finite`. This is labkit's one deliberate difference from bitsandbytes, which quantizes such a
tensor silently (the block's absmax becomes NaN and every value sharing it dequantizes to NaN); lab 05
names the difference, tests/test_oneline_errors.py checks the one-line messages.
"""
from __future__ import annotations

import torch

from ..errors import LabkitError

__all__ = ["FLOAT_DTYPES"]

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_float(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise LabkitError(f"{what} needs a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise LabkitError(f"{what} needs a float32, bfloat16 or float16 tensor, got {x.dtype}")


def _listed(items: list[int], most: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:most])
    return shown + (f", ... ({len(items)} in all)" if len(items) > most else "")


def _check_finite(x: torch.Tensor, what: str, *, blocksize: int | None = None, dim: int | None = None,
                  allow_inf: bool = False) -> None:
    """Refuse NaN/inf: one of them makes the absmax of its whole block (row, tensor) NaN/inf.

    bitsandbytes quantizes such a tensor without a word: the block's absmax becomes NaN (or
    inf, and 0 x inf = NaN), so every value sharing that scale dequantizes to NaN. Here the
    learner is told how many values, in which blocks (``blocksize``: blocks of the flattened
    tensor), rows (``dim``: one scale per slice along ``dim``) or tensor (neither), and where
    the first one is. ``allow_inf``: only NaN is refused (LLM.int8 multiplies +-inf outliers in
    16-bit, where they propagate as in any float matmul).
    """
    bad = torch.isnan(x) if allow_inf else ~torch.isfinite(x)
    if not bool(bad.any()):
        return
    n_bad = int(bad.sum())
    first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    kind = "NaN" if allow_inf else "non-finite (NaN/inf)"
    plural = "s" if n_bad > 1 else ""
    if blocksize is not None:
        blocks = torch.unique(torch.nonzero(bad.reshape(-1)).flatten() // blocksize).tolist()
        where = (f"in block{'s' if len(blocks) > 1 else ''} {_listed(blocks)} (blocks of {blocksize} values "
                 f"of the flattened tensor; each shares one absmax)")
    elif dim is not None and x.dim() > 1:
        d = dim % x.dim()
        rest = bad.any(dim=d)
        groups = [tuple(int(i) for i in g) for g in torch.nonzero(rest).tolist()]
        label = "row" if x.dim() == 2 else "slice"
        names = [str(g[0]) if len(g) == 1 else str(g) for g in groups]
        where = f"in {label}{'s' if len(groups) > 1 else ''} {_listed(names)} (one absmax per {label})"
    else:
        where = "in a tensor that shares one absmax"
    raise LabkitError(f"{what}: {n_bad} {kind} value{plural} {where}, the first at index {first}: the scale "
                      f"becomes NaN/inf and every value sharing it dequantizes to NaN (bitsandbytes would do "
                      f"this silently); clean or clip the tensor first, e.g. torch.nan_to_num(x) or x.clamp(-c, c)")

"""8-bit quantization: absmax int8 (per tensor, vector-wise) and LLM.int8()'s outlier decomposition.

Built in lab 05 §2 (absmax int8) and §3 (outliers): `absmax_quantize` / `absmax_dequantize` (``q = round(127 * x / absmax)``, one
scale per tensor or per row), `int8_matmul` (both operands vector-wise int8, accumulated exactly and
rescaled once), and LLM.int8() (Dettmers et al. 2022): `outlier_columns` finds the input features
holding a value of magnitude >= 6.0, `llm_int8_matmul` multiplies those in 16-bit and the rest in int8.
"""
from __future__ import annotations

import torch

from .checks import _check_finite, _check_float

__all__ = ["INT8_MAX", "LLM_INT8_THRESHOLD", "absmax_quantize", "absmax_dequantize", "int8_matmul",
           "outlier_columns", "llm_int8_matmul"]

INT8_MAX = 127
LLM_INT8_THRESHOLD = 6.0


# ---------------------------------------------------------------------------
# absmax int8: per tensor and vector-wise
# ---------------------------------------------------------------------------
def absmax_quantize(x: torch.Tensor, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8: ``q = round(x * 127 / absmax)``. Returns ``(q int8, absmax float32)``.

    ``dim=None``: one absmax for the whole tensor. ``dim=-1``: one per row
    ("vector-wise", what ``bitsandbytes.functional.int8_vectorwise_quant``
    computes; absmax keeps the reduced dimension, so it broadcasts back).
    A NaN or inf would turn its whole row (tensor) to NaN: a `LabkitError` says where.
    """
    _check_float(x, "absmax_quantize")
    _check_finite(x, "absmax_quantize", dim=dim)
    if dim is None:
        absmax = x.abs().amax().float()
    else:
        absmax = x.abs().amax(dim=dim, keepdim=True).float()
    scale = torch.where(absmax > 0, INT8_MAX / absmax, torch.zeros_like(absmax))
    q = torch.round(x * scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, absmax


def absmax_dequantize(q: torch.Tensor, absmax: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Undo `absmax_quantize`: ``q * absmax / 127``."""
    return (q.float() * (absmax / INT8_MAX)).to(dtype)


def int8_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` with both operands vector-wise int8 (a scale per row of x, one per row of w).

    The integer products are accumulated exactly (int32 on an int8 tensor
    core; here in float64, which is exact for these sizes) and rescaled once:
    ``out[i, j] = acc[i, j] * absmax_x[i] * absmax_w[j] / 127^2``.
    """
    _check_float(x, "int8_matmul")
    _check_float(w, "int8_matmul")
    _check_finite(x, "int8_matmul (input x)", dim=-1)
    _check_finite(w, "int8_matmul (weight w)", dim=-1)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    qx, sx = absmax_quantize(x2, dim=-1)
    qw, sw = absmax_quantize(w, dim=-1)
    acc = qx.double() @ qw.double().T
    out = acc * (sx.double() * sw.double().T) / INT8_MAX**2
    return out.to(x.dtype).reshape(*shape[:-1], w.shape[0])


def outlier_columns(x: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD) -> torch.Tensor:
    """Indices of the feature columns (last dim) where any value has magnitude >= threshold."""
    x2 = x.reshape(-1, x.shape[-1])
    return torch.nonzero((x2.abs() >= threshold).any(dim=0)).flatten()


def llm_int8_matmul(x: torch.Tensor, w: torch.Tensor, threshold: float = LLM_INT8_THRESHOLD,
                    return_outliers: bool = False):
    """LLM.int8(): ``x @ w.T`` as an int8 matmul plus a 16-bit matmul over the outlier columns.

    1. outlier columns ``O``: input features where some value has ``|x| >= threshold``;
    2. the rest, ``x[:, ~O] @ w[:, ~O].T``, runs vector-wise in int8. As in
       bitsandbytes, each row's absmax is taken after the outlier *values* are
       removed, so it is below the threshold;
    3. ``x[:, O] @ w[:, O].T`` runs in x's dtype (a handful of columns);
    4. the two add up.
    """
    _check_float(x, "llm_int8_matmul")
    _check_float(w, "llm_int8_matmul")
    _check_finite(x, "llm_int8_matmul (input x)", dim=-1, allow_inf=True)   # +-inf: an outlier, in 16-bit
    _check_finite(w, "llm_int8_matmul (weight w)", dim=-1)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    cols = outlier_columns(x2, threshold)
    regular = x2.masked_fill(x2.abs() >= threshold, 0)      # row scales without the outlier values
    qx, sx = absmax_quantize(regular, dim=-1)
    qx[:, cols] = 0                                         # whole outlier columns leave the int8 part
    qw, sw = absmax_quantize(w, dim=-1)
    acc = qx.double() @ qw.double().T
    out = acc * (sx.double() * sw.double().T) / INT8_MAX**2
    out = out.to(x.dtype) + x2[:, cols] @ w[:, cols].to(x.dtype).T
    out = out.reshape(*shape[:-1], w.shape[0])
    return (out, cols) if return_outliers else out

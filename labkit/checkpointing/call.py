"""The call: `checkpoint`, which picks one of the two designs and checks its arguments.

Why a module of its own: it is the one entry point the labs and `layers` use, and it decides between
`reentrant` (``use_reentrant=True``, torch's default, the design lab 03 §3 builds as ``my_checkpoint``) and
`nonreentrant` (``use_reentrant=False``, and the case where no input needs a gradient, lab 03 §4).
Lab 03 §4 checks it bit for bit against the plain call and ``torch.utils.checkpoint.checkpoint``.
"""
from __future__ import annotations

import warnings

import torch
from torch.utils._pytree import tree_flatten

from ..errors import LabkitError
from .nonreentrant import _checkpoint_non_reentrant
from .reentrant import Recompute

__all__ = ["checkpoint"]


# ---------------------------------------------------------------------------
# The call
# ---------------------------------------------------------------------------
def checkpoint(function, *args, use_reentrant: bool = True, preserve_rng_state: bool = True, **kwargs):
    """``function(*args, **kwargs)``, keeping only the inputs for backward and recomputing the rest.

    Gradients equal the plain call's and ``torch.utils.checkpoint.checkpoint``'s; dropout gets
    the same masks in both passes. Without grad mode (``torch.no_grad()``, inference) it is a
    plain call.

    * ``use_reentrant=True`` (the default, as in torch): `Recompute`, the design lab 03,
      section 3 builds (``my_checkpoint``). Train with ``loss.backward()``; ``torch.autograd.grad``
      and ``backward(inputs=...)`` raise. Tensors that need a gradient must be positional
      arguments (inside a list/dict or as a keyword they are refused: their gradient would be
      lost or computed twice); keyword arguments are for constants. ``function`` returns tensors
      or a tuple of them.
    * ``use_reentrant=False``: ``saved_tensors_hooks`` replace each tensor an op inside saves by a
      ticket, and the first backward that needs one reruns ``function`` and hands the recomputed
      tensors out (torch's recommended design, written plainly). Works with ``torch.autograd.grad``,
      keyword and nested (list/dict) tensor arguments and any output structure.

    When no input needs a gradient (frozen embeddings in front of LoRA layers), torch's
    reentrant checkpoint warns "None of the inputs have requires_grad=True. Gradients will be
    None" and the parameters inside get no gradient (lab 03, section 4 shows it fail). labkit
    runs the non-reentrant design then, so the output requires grad exactly when the plain
    call's does and the parameters inside get theirs; torch's warning comes only when nothing
    at all will get a gradient.
    """
    if not torch.is_grad_enabled():
        return function(*args, **kwargs)
    if not use_reentrant:
        return _checkpoint_non_reentrant(function, args, kwargs, preserve_rng_state)
    hidden = tree_flatten(([a for a in args if not isinstance(a, torch.Tensor)], kwargs))[0]
    if any(isinstance(x, torch.Tensor) and x.requires_grad for x in hidden):
        raise LabkitError("checkpoint (use_reentrant=True) takes tensors that need a gradient as positional "
                          "arguments only, not as keywords or inside lists/dicts; pass use_reentrant=False")
    if not any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        out = _checkpoint_non_reentrant(function, args, kwargs, preserve_rng_state)
        if not any(isinstance(x, torch.Tensor) and x.requires_grad for x in tree_flatten(out)[0]):
            warnings.warn("None of the inputs have requires_grad=True. Gradients will be None", stacklevel=2)
        return out
    if kwargs:
        inner = function

        def function(*a):
            return inner(*a, **kwargs)
    out = Recompute.apply(function, preserve_rng_state, *args)
    nested = [o for o in (out if isinstance(out, tuple) else (out,)) if not isinstance(o, torch.Tensor)]
    if any(isinstance(x, torch.Tensor) for x in tree_flatten(nested)[0]):
        raise LabkitError("checkpoint (use_reentrant=True) returns tensors or a flat tuple of them; for tensors "
                          "inside lists/dicts (they would get no gradient) pass use_reentrant=False")
    return out

"""Activation (gradient) checkpointing from scratch: forget, then recompute.

A normal forward pass keeps every tensor that some op needs for its backward
(the *saved activations*, lab 01). Checkpointing a function ``f`` keeps only
its **inputs**: ``f`` runs under ``torch.no_grad()`` so nothing inside is
saved, and during backward ``f`` runs a second time -- now with autograd
recording -- to rebuild exactly the tensors its gradient needs. Memory for
the inner activations is traded for one extra forward of ``f``.

Two details make the recomputation *identical* to the original forward:

* **randomness** -- dropout draws new masks on every call, so we snapshot the
  CPU and CUDA random-number generators before the forward and replay them
  (inside `torch.random.fork_rng`, so the caller's RNG is untouched);
* **autocast** -- backward runs outside the caller's ``torch.autocast``
  block, so we record whether autocast was on (and its dtype) and turn it
  back on for the recomputation.

`checkpoint` has torch's two designs, chosen by ``use_reentrant``:

* ``use_reentrant=True`` (the default, as in torch; lab 03, section 3 builds it): `Recompute`,
  an ``autograd.Function`` whose backward differentiates the recomputed sub-graph with a
  nested ``torch.autograd.backward`` call, which also accumulates ``.grad`` of the
  parameters ``f`` uses. So use ``loss.backward()``, not ``torch.autograd.grad`` /
  ``backward(inputs=...)`` (those raise `CheckpointError`).
* ``use_reentrant=False``: ``f`` runs with autograd on, but ``saved_tensors_hooks`` swap each
  tensor its ops save for a ticket; the first backward that hands in a ticket reruns ``f``
  and gets the real tensor back. Nothing nests, so ``torch.autograd.grad``, keyword tensors
  and dict inputs/outputs all work. When no input needs a gradient, the default uses this
  design too (see `checkpoint`).

`apply_checkpointing` wraps the decoder layers of a `transformers` Llama-family
model with it -- every k-th layer, or Chen et al.'s (2016) sqrt(n) segments --
and `remove_checkpointing` undoes it.

One module per role, every name re-exported here, so ``from labkit import checkpointing as ck;
ck.checkpoint(f, x)`` reads the same as before the split:

* `replay` -- the RNG and autocast snapshots a recomputation replays (lab 03 §3);
* `reentrant` -- `Recompute` and `CheckpointError` (lab 03 §3, checked in §4);
* `nonreentrant` -- the ``saved_tensors_hooks`` design (``use_reentrant=False``; checked in lab 03 §4);
* `call` -- `checkpoint`, which picks the design (lab 03 §3-4);
* `layers` -- `apply_checkpointing`, `remove_checkpointing`, `checkpointed_layers`, `decoder_layers`,
  `sqrt_segment` and `segment_forward` (one segment run as one checkpoint) on a transformers model
  (lab 03 §5-7).
"""
from ..errors import LabkitError  # noqa: F401 -- a name of the module before the split
from .call import checkpoint
from .layers import (_CACHE_KWARGS, _ORIGINAL, _no_cache, _pass_through,  # noqa: F401 -- old private names
                     _segment_forward, apply_checkpointing, checkpointed_layers, decoder_layers,
                     remove_checkpointing, segment_forward, sqrt_segment)
from .nonreentrant import (_AllRecomputed, _checkpoint_non_reentrant, _Frame,  # noqa: F401 -- old private names
                           _never_unpacked, _SaveInputs)
from .reentrant import CheckpointError, Recompute
from .replay import (_autocast_snapshot, _cuda_devices, _replayed_autocast,  # noqa: F401 -- old private names
                     _replayed_rng, _rng_snapshot)

__all__ = ["checkpoint", "Recompute", "CheckpointError", "apply_checkpointing", "remove_checkpointing",
           "checkpointed_layers", "decoder_layers", "sqrt_segment", "segment_forward"]

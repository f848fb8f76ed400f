"""What a recomputation must replay so that it is the forward again: the random numbers and autocast.

Why a module of its own: both designs of `checkpoint` -- the reentrant `Recompute` (`reentrant`) and the
saved-tensor-hooks one (`nonreentrant`) -- snapshot the CPU and CUDA generators and the active autocast
regions before the first forward and put them back for the second, so they share these helpers.
Lab 03 §3 builds the same pieces (``rng_state`` / ``replayed_rng``, ``autocast_state`` /
``replayed_autocast``).
"""
from __future__ import annotations

import contextlib

import torch

__all__: list[str] = []     # private helpers: imported by name from the sibling modules


# ---------------------------------------------------------------------------
# The state a recomputation must replay: random numbers and autocast
# ---------------------------------------------------------------------------
def _cuda_devices(tensors) -> list[int]:
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def _rng_snapshot(tensors) -> dict:
    """The CPU generator's state and that of every CUDA device the inputs live on."""
    devices = _cuda_devices(tensors)
    return {"cpu": torch.get_rng_state(), "devices": devices,
            "cuda": [torch.cuda.get_rng_state(d) for d in devices]}


@contextlib.contextmanager
def _replayed_rng(snapshot: dict | None):
    """Run the block with the generators as they were at `snapshot`, then put them back."""
    if snapshot is None:
        yield
        return
    with torch.random.fork_rng(devices=snapshot["devices"]):
        torch.set_rng_state(snapshot["cpu"])
        for device, state in zip(snapshot["devices"], snapshot["cuda"]):
            torch.cuda.set_rng_state(state, device)
        yield


def _autocast_snapshot() -> dict:
    """Which autocast regions are active now (device type -> dtype)."""
    active = {}
    for device_type in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device_type):
            active[device_type] = torch.get_autocast_dtype(device_type)
    return active


def _replayed_autocast(active: dict) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for device_type, dtype in active.items():
        stack.enter_context(torch.autocast(device_type, dtype=dtype))
    return stack

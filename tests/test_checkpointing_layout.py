"""labkit.checkpointing as a package split by role (issue 24): every name of the old single module
still reachable from ``labkit.checkpointing`` (the same object as in its role module), no module over
450 lines, and the public `segment_forward` (old `_segment_forward`, kept as its alias)."""
import importlib
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from labkit import checkpointing as ck

PARTS = ("replay", "reentrant", "nonreentrant", "call", "layers")
MODULES = [importlib.import_module(f"labkit.checkpointing.{part}") for part in PARTS]

# every top-level name of labkit/checkpointing.py before the split (git show c3dd9a9:labkit/checkpointing.py)
OLD_NAMES = [
    "LabkitError", "_cuda_devices", "_rng_snapshot", "_replayed_rng", "_autocast_snapshot", "_replayed_autocast",
    "CheckpointError", "Recompute", "_SaveInputs", "_Frame", "_AllRecomputed", "_never_unpacked",
    "_checkpoint_non_reentrant", "checkpoint", "_ORIGINAL", "_CACHE_KWARGS", "decoder_layers", "sqrt_segment",
    "_no_cache", "_segment_forward", "_pass_through", "apply_checkpointing", "remove_checkpointing",
    "checkpointed_layers"]
OLD_ALL = ["checkpoint", "Recompute", "CheckpointError", "apply_checkpointing", "remove_checkpointing",
           "checkpointed_layers", "decoder_layers", "sqrt_segment"]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_labkit_checkpointing(name):
    obj = getattr(ck, name)
    exec(f"from labkit.checkpointing import {name}", {})
    if (inspect.isfunction(obj) or inspect.isclass(obj)) and name != "LabkitError":   # defined in a role module
        assert obj.__module__ in {m.__name__ for m in MODULES}, name


def test_all_lists_only_real_names_and_every_old_public_name():
    assert set(OLD_ALL) <= set(ck.__all__) <= set(dir(ck))
    for module in MODULES:
        assert module.__doc__ and "lab 03" in module.__doc__.lower(), module.__name__
        assert set(module.__all__) <= set(dir(module)), module.__name__
        for name in module.__all__:      # the package re-exports the very object, not a copy
            assert getattr(ck, name) is getattr(module, name), (module.__name__, name)
    assert {n for m in MODULES for n in m.__all__} == set(ck.__all__)
    assert inspect.isfunction(ck.checkpoint)                    # the function, not a submodule
    assert ck.__doc__ and "lab 03" in ck.__doc__.lower()


def test_segment_forward_is_public_and_the_old_name_is_kept():
    assert ck._segment_forward is ck.segment_forward is ck.layers.segment_forward
    layers = [nn.Linear(3, 3) for _ in range(2)]
    x = torch.randn(2, 3, requires_grad=True)
    out = ck.segment_forward([layer.forward for layer in layers], {})(x)
    torch.testing.assert_close(out, layers[1](layers[0](x)))
    out.sum().backward()
    assert x.grad is not None and layers[0].weight.grad is not None


@pytest.mark.parametrize("path", sorted(Path(ck.__file__).parent.glob("*.py")), ids=lambda p: p.name)
def test_no_checkpointing_module_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450

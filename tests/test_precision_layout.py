"""labkit.precision as a package (issue 24): every name of the old single module still works from
``labkit.precision`` as the very same object, each role lives in one module under 450 lines, and
`FloatFormat` (which lab 02 shows with ``labkit.show``) keeps its source."""
import importlib
import inspect
from pathlib import Path

import pytest

from labkit import precision

PACKAGE = Path(precision.__file__).resolve().parent

# Every top-level name of labkit/precision.py before the split (labs, benches, exercises and tests use them).
OLD_NAMES = [
    "LabkitError", "FloatFormat", "FORMATS", "cast_report", "_fp32", "update_scale", "ScalerStateError", "_READY",
    "_UNSCALED", "_STEPPED", "DynamicLossScaler", "_check_factors", "stochastic_round_bf16", "_Fp16Linear",
    "emulate_fp16_autocast", "Bf16AdamW",
]
PARTS = ("formats", "loss_scaling", "fp16_emulation", "bf16_training")


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_labkit_precision(name):
    namespace = {}
    exec(f"from labkit.precision import {name}", namespace)
    obj = namespace[name]
    assert obj is getattr(precision, name)
    if (inspect.isfunction(obj) or inspect.isclass(obj)) and name != "LabkitError":
        assert obj.__module__ in {f"labkit.precision.{p}" for p in PARTS}, name   # defined in one role module


def test_all_lists_only_real_names_and_every_public_name():
    assert set(precision.__all__) <= set(dir(precision))
    public = {n for n in OLD_NAMES if not n.startswith("_") and n != "LabkitError"}
    assert public == set(precision.__all__)
    owners = {}
    for part in PARTS:
        module = importlib.import_module(f"labkit.precision.{part}")
        assert module.__doc__ and "lab 02 §" in module.__doc__ and set(module.__all__) <= set(dir(module)), part
        for name in module.__all__:     # the package re-exports the very object, not a copy
            assert getattr(precision, name) is getattr(module, name), (part, name)
            owners[name] = part
    assert set(owners) == set(precision.__all__)


def test_the_shared_private_pieces_are_the_role_modules_own():
    from labkit.precision import bf16_training, fp16_emulation, loss_scaling

    assert precision._Fp16Linear is fp16_emulation._Fp16Linear
    assert precision._fp32 is loss_scaling._fp32 and precision._check_factors is loss_scaling._check_factors
    assert (precision._READY, precision._UNSCALED, precision._STEPPED) == ("ready", "unscaled", "stepped")
    assert inspect.unwrap(bf16_training.Bf16AdamW.step).__globals__["stochastic_round_bf16"] is precision.stochastic_round_bf16
    assert inspect.getsource(precision.FloatFormat).startswith("@dataclass(frozen=True)\nclass FloatFormat:\n")


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_precision_module_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450

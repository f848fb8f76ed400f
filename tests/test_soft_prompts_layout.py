"""labkit.soft_prompts as a package split by role (issue 24): every name of the old single module still
reachable from ``labkit.soft_prompts`` (the same object as in its role module), ``__all__`` real, and no
module over 450 lines."""
import importlib
import inspect
from pathlib import Path

import pytest

from labkit import soft_prompts as sp

# every top-level name of labkit/soft_prompts.py before the split (git show bebf1d8:labkit/soft_prompts.py)
OLD_NAMES = [
    "LabkitError", "METHODS", "IA3_TARGETS", "IA3_FEEDFORWARD", "LORA_TARGETS", "_positive_int", "_check_model",
    "_freeze_all", "trainable_parameters", "_dims", "_VirtualTokens", "PromptTuning", "PromptEncoder", "PTuning",
    "PrefixTuning", "_features", "IA3Linear", "ia3_layers", "_as_names", "_is_target", "_is_feedforward",
    "_ia3_targets", "inject_ia3", "_decoder_layers", "freeze", "_own_state", "_pairs", "load_from_peft",
    "copy_to_peft", "count_parameters",
]
PARTS = ("checks", "prompts", "prefix", "ia3", "freezing", "peft_copy", "count")
MODULES = [importlib.import_module(f"labkit.soft_prompts.{part}") for part in PARTS]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_labkit_soft_prompts(name):
    assert hasattr(sp, name), name
    exec(f"from labkit.soft_prompts import {name}", {})
    obj = getattr(sp, name)
    if (inspect.isfunction(obj) or inspect.isclass(obj)) and name != "LabkitError":   # defined in a role module
        assert obj.__module__ in {m.__name__ for m in MODULES}, name


def test_all_lists_only_real_names_and_every_public_name():
    assert set(sp.__all__) <= set(dir(sp))
    assert set(sp.__all__) <= set(OLD_NAMES)
    for module in MODULES:
        assert module.__doc__ and "lab 13" in module.__doc__, module.__name__
        assert set(module.__all__) <= set(dir(module)), module.__name__
        for name in module.__all__:     # the package re-exports the very object, not a copy
            assert getattr(sp, name) is getattr(module, name), (module.__name__, name)
    assert {n for m in MODULES for n in m.__all__} == set(OLD_NAMES) - {"LabkitError"}
    assert inspect.isfunction(sp.freeze) and sp.PTuning is sp.PromptEncoder   # functions, not submodules


@pytest.mark.parametrize("path", sorted(Path(sp.__file__).parent.glob("*.py")), ids=lambda p: p.name)
def test_no_soft_prompts_module_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450

"""labkit.preference as a package split by role (issue 24): every name of the old single module still
reachable from ``labkit.preference`` (the same object as in its role module), ``__all__`` real, and no
module over 450 lines."""
import importlib
import inspect
from pathlib import Path

import pytest

from labkit import preference

# every top-level name of labkit/preference.py before the split (git show bebf1d8:labkit/preference.py)
OLD_NAMES = [
    "data", "LabkitError", "KINDS", "LOSS_TYPES", "IGNORE", "_positive_number", "_float_tensor", "_same_shape",
    "_id_tensor", "_ADD_ANSWER", "_fact_qa", "_wrong_fact", "_sum_qa", "_off_by_one", "_no_stop", "_MAKERS",
    "preference_pairs", "formats", "RewardModel", "pairwise_loss", "sequence_logps", "_tokens", "dpo_loss",
    "implicit_rewards", "pair_batch", "addition_reward", "IDK", "_SYLLABLES", "_made_up_name", "unknown_pairs",
    "group_advantages",
]
PARTS = ("checks", "pairs", "reward", "dpo", "onpolicy", "honesty")
MODULES = [importlib.import_module(f"labkit.preference.{part}") for part in PARTS]


def test_the_package_re_exports_each_role_module_s_objects():
    from labkit import data

    owner = {name: module for module in MODULES for name in module.__all__}
    assert set(owner) == set(OLD_NAMES) - {"LabkitError", "data"} and preference.data is data
    missing = [name for name in OLD_NAMES if not hasattr(preference, name)]
    assert not missing and set(preference.__all__) <= set(owner)
    copies = [name for name, module in owner.items() if getattr(preference, name) is not getattr(module, name)]
    assert copies == []                 # the very object, not a copy


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rpartition(".")[2])
def test_each_role_module_has_a_docstring_naming_lab_14_and_a_real_all(module):
    assert module.__doc__ and "lab 14" in module.__doc__
    assert set(module.__all__) <= set(dir(module))
    defined = [getattr(module, n) for n in module.__all__ if inspect.isfunction(getattr(module, n))]
    assert all(f.__module__ == module.__name__ for f in defined)


@pytest.mark.parametrize("path", sorted(Path(preference.__file__).parent.glob("*.py")), ids=lambda p: p.name)
def test_no_preference_module_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450

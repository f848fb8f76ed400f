"""labkit.forgetting as a package split by role (issue 24): every name of the old single module still
reachable from ``labkit.forgetting``, no module over 450 lines, `Sizes` still a (mutable) dataclass,
the public `format_probes` (old `_fmt`), and a CLI that looks its driver up where tests patch it."""
import dataclasses
import inspect
from pathlib import Path

import pytest

from labkit import forgetting
from labkit.errors import LabkitError
from labkit.forgetting import driver, ewc, probes, profiles, replay, world_facts

MODULES = [probes, world_facts, replay, ewc, profiles, driver]

# every top-level name of labkit/forgetting.py before the split (git show 06c5cc4:labkit/forgetting.py)
OLD_NAMES = [
    "PROBE_KEYS", "Probes", "make_probes", "chat_eval_batches", "fact_hits", "fact_recall", "_WORLD",
    "world_fact_candidates", "known_facts", "english_nll", "general_vocab_loss", "vocab_probe",
    "_DEFAULT_PROBES", "evaluate", "parse_ratio", "mix", "curriculum_batches", "fisher_diagonal",
    "uniform_fisher", "ewc_penalty", "EWC", "Sizes", "sizes", "Lab", "train_token_rows", "setup", "_NAME",
    "parse_strategy", "run_strategy", "default_strategies", "compare", "frontier_point",
    "at_matched_domain_loss", "main", "_fmt"]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_still_importable_from_labkit_forgetting(name):
    assert hasattr(forgetting, name), name


def test_role_modules_export_what_the_package_exports():
    for module in MODULES:
        for name in module.__all__:
            assert getattr(forgetting, name) is getattr(module, name), (module.__name__, name)
    assert {n for m in MODULES for n in m.__all__} | {"main", "format_probes"} >= set(forgetting.__all__)
    assert inspect.isfunction(forgetting.sizes)                 # the function, not a submodule


def test_no_module_of_the_package_is_over_450_lines():
    for path in Path(forgetting.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, path.name


def test_every_module_says_why_it_exists_and_names_lab_06():
    for module in [forgetting, *MODULES]:
        assert module.__doc__ and "lab 06" in module.__doc__, module.__name__


def test_sizes_stay_a_dataclass_lab_06_can_change():
    s = forgetting.sizes("smoke")
    assert dataclasses.is_dataclass(s) and isinstance(s, forgetting.Sizes)
    s.ewc_lambda = 2.0                                          # lab 06 §12 rescales smol_lab.sizes.ewc_lambda
    assert s.ewc_lambda == 2.0 and forgetting.sizes("smoke").ewc_lambda == 1e6


def test_format_probes_is_public_and_the_old_name_is_kept():
    r = {"general_loss": 1.23456, "fact_recall": 0.5, "domain_loss": 2.0, "domain_acc": 0.25}
    assert forgetting._fmt is forgetting.format_probes
    assert forgetting.format_probes(r) == ("general loss 1.235  fact recall 50%  domain loss 2.000  "
                                           "domain acc 25%")


def test_the_cli_looks_up_setup_in_the_package(monkeypatch):
    """tests/test_oneline_errors.py patches ``forgetting.setup``: that must be the one `main` calls."""
    def refuse(*a, **k):
        raise LabkitError("SENTINEL: setup reached")

    monkeypatch.setattr(forgetting, "setup", refuse)
    with pytest.raises(LabkitError, match="SENTINEL"):
        forgetting.main(["--profile", "smoke", "--strategies", "full_ft"])
    with pytest.raises(LabkitError, match="--seed"):            # checked before setup
        forgetting.main(["--profile", "smoke", "--seed", "-1"])

"""labkit.decoding as a package (issue 24): every name of the old single module still works from
``labkit.decoding`` as the very same object, each role lives in one module under 450 lines, and
``python -m labkit decode`` is still reached through ``labkit.decoding.main``."""
import importlib
import inspect
from pathlib import Path

import pytest

from labkit import decoding

PACKAGE = Path(decoding.__file__).resolve().parent

# Every top-level name of labkit/decoding.py before the split (lab 10, benches, exercises and tests use them).
OLD_NAMES = [
    "LabkitError", "apply_rope", "__all__", "_check_logits", "_check_ids", "_positive_number", "_positive_int",
    "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram", "_ngrams", "distinct_n",
    "repetition_rate", "KVCache", "_decoder", "forward_logits", "_apply_temperature", "_apply_top_k", "_apply_top_p",
    "_apply_repetition_penalty", "generate", "GRID", "_left_pad", "repetition_grid", "main",
]
# the old module's own __all__, kept as it was
OLD_ALL = ["KVCache", "distinct_n", "generate", "no_repeat_ngram", "repetition_grid", "repetition_penalty",
           "repetition_rate", "temperature", "top_k", "top_p"]
PARTS = ("checks", "processors", "repetition_metrics", "kv_cache", "generation", "experiment")


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_labkit_decoding(name):
    assert hasattr(decoding, name), name
    exec(f"from labkit.decoding import {name}", {})
    obj = getattr(decoding, name)
    if (inspect.isfunction(obj) or inspect.isclass(obj)) and name not in ("LabkitError", "apply_rope"):
        assert obj.__module__ in {f"labkit.decoding.{p}" for p in PARTS}, name   # a function, not a submodule


def test_all_is_the_old_all_and_role_modules_export_the_same_objects():
    assert decoding.__all__ == OLD_ALL
    exported = set()
    for part in PARTS:
        module = importlib.import_module(f"labkit.decoding.{part}")
        assert module.__doc__ and set(module.__all__) <= set(dir(module)), part
        assert part == "checks" or "lab 10 §" in module.__doc__, part
        for name in module.__all__:     # the package re-exports the very object, not a copy
            assert getattr(decoding, name) is getattr(module, name), (part, name)
        exported |= set(module.__all__)
    public = {n for n in OLD_NAMES if not n.startswith("_") and n not in ("LabkitError", "apply_rope")}
    assert exported == public


def test_generate_calls_the_processors_under_their_second_names():
    from labkit.decoding import generation

    assert decoding._apply_temperature is decoding.temperature is generation._apply_temperature
    assert decoding._apply_top_k is decoding.top_k and decoding._apply_top_p is decoding.top_p
    assert decoding._apply_repetition_penalty is decoding.repetition_penalty
    assert inspect.unwrap(generation.generate).__globals__["forward_logits"] is decoding.forward_logits


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_decoding_module_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450


def test_the_cli_is_still_labkit_decoding_main():
    from labkit.__main__ import COMMANDS

    assert COMMANDS["decode"][:2] == ("labkit.decoding", "main")
    module, func = COMMANDS["decode"][:2]
    assert getattr(importlib.import_module(module), func) is decoding.main
    with pytest.raises(SystemExit) as exc:
        decoding.main(["--help"])
    assert exc.value.code == 0

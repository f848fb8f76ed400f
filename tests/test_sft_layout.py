"""labkit.sft as a package split by role (issue 24): every name of the old single module still
reachable from ``labkit.sft`` (the same object as in its role module), no module over 450 lines,
and ``python -m labkit sft`` still reached through ``labkit.sft.main``."""
import importlib
import inspect
from pathlib import Path

import pytest

from labkit import sft

PARTS = ("formats", "batches", "render", "generation", "curation", "command")
MODULES = [importlib.import_module(f"labkit.sft.{part}") for part in PARTS]

# every top-level name of labkit/sft.py before the split (git show c3dd9a9:labkit/sft.py)
OLD_NAMES = [
    "LabkitError", "IGNORE", "TEMPLATES", "_text", "messages", "_special", "_newline_id", "build_labels",
    "_base_segments", "_encode", "format_example", "format_prompt", "format_dataset", "format_pretraining",
    "collate", "sft_batches", "eval_batches", "pack", "collate_packed", "packed_batches", "document_mask",
    "_pieces", "render_text", "render_html", "generate", "normalize", "text_of", "exact_dedup", "shingles",
    "jaccard", "_PRIME", "minhash_signatures", "minhash_jaccard", "near_dedup", "length_filter", "clean",
    "token_counts", "mix_table", "main"]
OLD_ALL = [
    "IGNORE", "TEMPLATES", "messages", "format_example", "build_labels", "format_prompt", "format_dataset",
    "format_pretraining", "collate", "sft_batches", "eval_batches", "pack", "collate_packed", "packed_batches",
    "document_mask", "render_text", "render_html", "generate", "normalize", "text_of", "exact_dedup", "shingles",
    "jaccard", "minhash_signatures", "minhash_jaccard", "near_dedup", "length_filter", "clean", "token_counts",
    "mix_table", "main"]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_labkit_sft(name):
    obj = getattr(sft, name)
    exec(f"from labkit.sft import {name}", {})
    if (inspect.isfunction(obj) or inspect.isclass(obj)) and name != "LabkitError":   # defined in a role module
        assert inspect.unwrap(obj).__module__ in {m.__name__ for m in MODULES}, name


def test_all_is_the_old_all_and_every_role_name_is_in_it():
    assert sft.__all__ == OLD_ALL and set(sft.__all__) <= set(dir(sft))
    assert sorted(n for m in MODULES for n in m.__all__) == sorted(OLD_ALL)
    assert sft.IGNORE == -100 and sft.TEMPLATES == ("chat", "base")
    assert "lab 09" in sft.__doc__.lower()


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_each_role_module_names_lab_09_and_is_re_exported_as_is(module):
    assert "lab 09" in (module.__doc__ or "").lower()
    copies = [n for n in module.__all__ if getattr(sft, n, None) is not getattr(module, n)]
    assert copies == []                 # the package hands out the role module's own objects


def test_the_cli_is_still_labkit_sft_main():
    from labkit.__main__ import COMMANDS

    assert COMMANDS["sft"][:2] == ("labkit.sft", "main")
    assert inspect.isfunction(sft.main) and sft.main is sft.command.main
    with pytest.raises(SystemExit) as exc:
        sft.main(["--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize("path", sorted(Path(sft.__file__).parent.glob("*.py")), ids=lambda p: p.name)
def test_no_sft_module_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450

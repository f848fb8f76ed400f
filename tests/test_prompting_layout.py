"""labkit.prompting as a package (issue 24): every name of the old single module still works from
``labkit.prompting``, each role lives in one module under 450 lines, and `_run` has a public name."""
import importlib
from pathlib import Path

import pytest

from labkit import prompting

LABKIT = Path(prompting.cli.__file__).resolve().parent.parent

# Every top-level name of labkit/prompting.py before the split (labs, exercises, cot_model and tests use them).
OLD_NAMES = [
    "STRATEGIES", "COT_TRIGGER", "ANSWER_TRIGGER", "LTM_TRIGGER", "LTM_SOLVE", "COT_MODEL", "qa_prefix",
    "reasoning_of", "subquestions", "decomposition_text", "solved_in_order_text", "direct", "zero_shot_cot",
    "zero_shot_cot_stage2", "EXEMPLAR_STEPS", "exemplars", "few_shot_cot", "exemplar_sets", "least_to_most",
    "least_to_most_stage2", "_SUBQ", "parse_subquestions", "least_to_most_step", "least_to_most_final",
    "cut_subanswer", "self_consistency", "_NUMBER", "_ANSWER_RE", "normalize_number", "extract_answer",
    "wilson_ci", "majority_vote", "chi2_sf", "CochranResult", "cochran_q", "SpreadResult", "prompt_spread",
    "load_model", "_is_lab_tokenizer", "generate_batch", "Record", "EvalResult", "_check_strategy",
    "prompt_lengths", "_model_texts", "evaluate", "_run", "LTM_MAX_SUBQUESTIONS", "least_to_most_calls",
    "records_table", "write_records", "read_records", "held_out", "compare", "format_table", "_check_out_path",
    "_check_cli_args", "main", "_EQ", "diagnose", "LabkitError",
]
PARTS = ("prompts", "scoring", "generation", "harness", "cli")


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_labkit_prompting(name):
    assert hasattr(prompting, name), name
    exec(f"from labkit.prompting import {name}", {})


def test_all_lists_only_real_names_and_every_public_name():
    assert set(prompting.__all__) <= set(dir(prompting))
    public = {n for n in OLD_NAMES if not n.startswith("_") and n != "LabkitError"}
    assert public <= set(prompting.__all__)
    for part in PARTS:
        module = importlib.import_module(f"labkit.prompting.{part}")
        assert module.__doc__ and set(module.__all__) <= set(dir(module)), part
        for name in module.__all__:     # the package re-exports the very object, not a copy
            assert getattr(prompting, name) is getattr(module, name), (part, name)


def test_run_has_a_public_name_and_the_cli_entry_point_resolves():
    assert prompting.run_strategy is prompting._run and "run_strategy" in prompting.__all__
    from labkit.__main__ import COMMANDS

    module, func = COMMANDS["cot"][:2]
    assert getattr(importlib.import_module(module), func) is prompting.cli.main


@pytest.mark.parametrize("path", sorted((LABKIT / "prompting").glob("*.py")), ids=lambda p: p.name)
def test_no_prompting_module_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450


def test_file_still_names_the_repository_two_levels_up():
    """tests/test_prompting.py reads data/models/lab-cot/training.json via Path(P.__file__).parent.parent."""
    assert Path(prompting.__file__).parent.parent == LABKIT.parent
    assert (Path(prompting.__file__).parent.parent / "data/models/lab-cot/training.json").is_file()

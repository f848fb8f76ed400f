"""labkit.data as a package (issue 24): every name of the old single module still works from
``labkit.data``, each role lives in one module under 450 lines, and the committed corpora are still
found one directory deeper (CORPORA_DIR is <repo>/data/corpora, not labkit/data/corpora)."""
import importlib
import inspect
from pathlib import Path

import pytest

from labkit import data, data_templates

LABKIT = Path(data.__file__).resolve().parent.parent

# Every top-level name of labkit/data.py before the split (git show HEAD:labkit/data.py): the world's
# tables it imported from labkit.data_templates, then its own constants, functions and classes.
TABLES = [
    "COUNTRIES", "BIRDS", "PEOPLE", "MACHINES", "RELATIONS", "FEMALE", "MALE", "TOWNS", "RIVER_OF", "JOBS", "PLACES",
    "ANIMALS", "PRODUCE", "GROCERIES", "SPICES", "DISHES", "OBJECTS", "RELATIVES", "TOPICS", "TIMES", "WEEKDAYS",
    "SEASONS", "TRANSPORT", "SCENERY", "WEATHER", "FEELINGS", "ACTIVITIES", "TOGETHER", "ADJ", "TOWN_ADJ", "NUMBERS",
    "INSTRUMENTS", "BUILDINGS", "THEMES", "THEME_NAMES", "BRIDGES", "BRIDGE_OF", "PURPOSE", "PARTS", "CONDITIONS",
    "CAUSES", "TOOLS", "DOMAIN_THEMES", "DOMAIN_THEME_NAMES", "ORDER_WORDS", "FACT_QUESTIONS", "OPPOSITE_OF",
    "SIMPLE_WORDS", "DOMAIN_QUESTIONS", "FOLLOW_UPS", "ITEMS", "GROUPS", "ADD_VERBS", "CONTAINERS", "VERB_FORMS",
]
OLD_NAMES = TABLES + [
    "SPLITS", "NAMES", "CORPORA_DIR", "_a", "_cap", "FACTS", "DOMAIN_FACTS", "fact_sentence", "fact_probes",
    "domain_probes", "_Deck", "_fact_cards", "_person", "_story_context", "_middles", "_finish", "_assemble",
    "_fact_block", "_general_doc", "_domain_context", "_domain_doc", "split_of", "_check", "_draw", "general_corpus",
    "domain_corpus", "_some_words", "_count_answer", "_task_fact", "task_add", "_task_subtract", "_task_multiply",
    "_task_reverse", "_task_opposite", "_task_count", "_task_repeat", "_task_sort", "_TASKS", "_task_add",
    "_FACT_QUESTIONS", "_OPPOSITE_OF", "_instruction", "instructions", "domain_fact_instructions",
    "_dlg_same_relation", "_dlg_person", "_dlg_country", "_dlg_arithmetic", "_dlg_words", "_DIALOGUE_KINDS",
    "_dialogue", "_dialogue_split", "dialogues", "APPLES_PROBLEM", "_verb", "_wp_step", "_word_problem",
    "word_problems", "_SAMPLE_SIZES", "_sample", "_path", "write_corpora", "load",
]
OLD_ALL = ["SPLITS", "NAMES", "CORPORA_DIR", "FACTS", "DOMAIN_FACTS", "FACT_QUESTIONS", "APPLES_PROBLEM",
           "fact_sentence", "fact_probes", "domain_probes", "split_of", "general_corpus", "domain_corpus",
           "task_add", "instructions", "domain_fact_instructions", "dialogues", "word_problems",
           "write_corpora", "load"]
PARTS = ("english", "splits", "facts", "corpora", "instructions", "dialogues", "word_problems", "sample_files")


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_labkit_data(name):
    assert hasattr(data, name), name
    exec(f"from labkit.data import {name}", {})


def test_the_tables_are_the_data_templates_objects():
    for name in TABLES:
        assert getattr(data, name) is getattr(data_templates, name), name


def test_all_lists_only_real_names_and_every_public_name():
    assert data.__all__ == OLD_ALL
    assert set(data.__all__) <= set(dir(data))
    for part in PARTS:
        module = importlib.import_module(f"labkit.data.{part}")
        assert module.__doc__ and "lab " in module.__doc__, part
        assert set(module.__all__) <= set(dir(module)), part
        for name in module.__all__:     # the package re-exports the very object, not a copy
            assert getattr(data, name) is getattr(module, name), (part, name)
    owned = {n for part in PARTS for n in importlib.import_module(f"labkit.data.{part}").__all__}
    assert owned == set(OLD_NAMES) - set(TABLES)    # each old name has exactly one home
    assert inspect.isfunction(data.dialogues) and inspect.isfunction(data.word_problems)  # not the submodules


def test_corpora_dir_is_the_repo_data_folder_one_level_deeper():
    assert data.CORPORA_DIR == LABKIT.parent / "data" / "corpora"
    assert data.CORPORA_DIR.is_dir() and (data.CORPORA_DIR / "general_train.txt").exists()
    assert data.load("word_problems", "test")[0] == data.APPLES_PROBLEM


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


@pytest.mark.parametrize("path", sorted((LABKIT / "data").glob("*.py")), ids=lambda p: p.name)
def test_no_data_module_over_450_lines(path):
    assert _lines(path) <= 450

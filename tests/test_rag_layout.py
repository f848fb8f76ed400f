"""labkit.rag as a package split by role (issue 24): every name of the old single module still
reachable from ``labkit.rag`` (the same object as in its role module), no module over 450 lines,
and ``python -m labkit rag`` still reached through ``labkit.rag.main``."""
import inspect
from pathlib import Path

import pytest

from labkit import rag
from labkit.rag import checks, chunking, dense, experiment, langchain_pieces, ranking, sparse, task

MODULES = [checks, chunking, sparse, dense, ranking, langchain_pieces, task, experiment]

# every top-level name of labkit/rag.py before the split (git show 06c5cc4:labkit/rag.py)
OLD_NAMES = [
    "_positive_int", "_number", "_shape", "_check_text", "_check_chunk_sizes", "_merge",
    "fixed_size_chunks", "_split_keeping_separator", "recursive_chunks", "_recursive", "tokenize",
    "_stable_top", "BM25", "mean_pool", "_pad_right", "embed", "_as_matrix", "cosine_top_k", "_id_list",
    "reciprocal_rank_fusion", "_per_query", "recall_at_k", "hit_at_k", "mrr", "BiEncoder",
    "contrastive_loss", "PromptTemplate", "_word_count", "LengthExampleSelector", "_FENCE",
    "parse_json_output", "BufferMemory", "_OPS", "calculator", "REACT_TEMPLATE", "_ACTION", "react",
    "SimilarityExampleSelector", "SummaryMemory", "QUESTIONS", "fact_question", "lab_corpus", "_mentions",
    "answer_bearing", "qa_set", "_REFUSAL", "answer_match", "is_refusal", "train_bi_encoder",
    "training_pairs", "retrieval_table", "main"]


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_still_importable_from_labkit_rag(name):
    obj = getattr(rag, name)
    if inspect.isfunction(obj) or inspect.isclass(obj):         # defined in one role module
        assert obj.__module__ in {m.__name__ for m in MODULES}, name


def test_role_modules_export_what_the_package_exports():
    for module in MODULES:
        for name in module.__all__:
            assert getattr(rag, name) is getattr(module, name), (module.__name__, name)
    public = {n for m in MODULES for n in m.__all__}
    assert public == set(rag.__all__)
    assert set(rag.__all__) <= set(OLD_NAMES)
    assert inspect.isfunction(rag.main) and inspect.isfunction(rag.embed)   # functions, not submodules


def test_no_module_of_the_package_is_over_450_lines():
    for path in Path(rag.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, path.name


def test_every_module_says_why_it_exists_and_names_lab_15():
    for module in [rag, *MODULES]:
        assert module.__doc__ and ("lab 15" in module.__doc__ or module is checks), module.__name__


def test_the_cli_is_still_labkit_rag_main():
    from labkit.__main__ import COMMANDS

    assert COMMANDS["rag"][:2] == ("labkit.rag", "main")
    with pytest.raises(SystemExit) as exc:
        rag.main(["--help"])
    assert exc.value.code == 0

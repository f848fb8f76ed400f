"""labkit.quant as a package (issue 24): every name of the old single module still works from
``labkit.quant``, each role lives in one module under 450 lines, and NF4_BLOCKSIZE is defined once."""
import importlib
from pathlib import Path

import pytest

from labkit import quant

LABKIT = Path(quant.__file__).resolve().parent.parent

# Every top-level name of labkit/quant.py before the split (labs, benches, exercises and tests use them).
OLD_NAMES = [
    "INT8_MAX", "LLM_INT8_THRESHOLD", "NF4_BLOCKSIZE", "DQ_BLOCKSIZE", "NF4_OFFSET", "FLOAT_DTYPES", "_check_float",
    "_listed", "_check_finite", "absmax_quantize", "absmax_dequantize", "int8_matmul", "outlier_columns",
    "llm_int8_matmul", "normal_float_levels", "NF4_LEVELS", "_check_blocks", "_n_blocks", "QUANT_STORAGE",
    "_check_storage", "pack_4bit", "unpack_4bit", "nf4_quantize", "nf4_dequantize", "fp4_levels", "FP4_LEVELS",
    "QUANT_TYPES", "_byte_pairs", "_PAIRS", "levels_4bit", "quantize_4bit", "dequantize_4bit", "fp4_quantize",
    "fp4_dequantize", "dynamic_map", "DYNAMIC_MAP", "blockwise_quantize", "blockwise_dequantize", "DoubleQuant",
    "double_quantize", "double_dequantize", "bits_per_param", "nf4_nbytes", "_NF4Linear", "QuantizedWeightError",
    "Linear4bit", "_bnb_linear4bit", "BACKENDS", "quantize_model", "dequantized_weight", "merge_lora_4bit",
    "cast_frozen", "model_nbytes", "WEIGHT_FORMATS", "weight_bytes", "LabkitError",
]
PARTS = ("checks", "int8", "fourbit", "double", "linear", "size")


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_labkit_quant(name):
    assert hasattr(quant, name), name
    exec(f"from labkit.quant import {name}", {})


def test_all_lists_only_real_names_and_every_public_name():
    assert set(quant.__all__) <= set(dir(quant))
    public = {n for n in OLD_NAMES if not n.startswith("_") and n != "LabkitError"}
    assert public <= set(quant.__all__)
    for part in PARTS:
        module = importlib.import_module(f"labkit.quant.{part}")
        assert module.__doc__ and set(module.__all__) <= set(dir(module)), part
        for name in module.__all__:     # the package re-exports the very object, not a copy
            assert getattr(quant, name) is getattr(module, name), (part, name)


def test_one_definition_of_the_shared_constants():
    from labkit import memory
    from labkit.memory import constants

    assert constants.NF4_BLOCKSIZE is quant.NF4_BLOCKSIZE and memory.NF4_BLOCKSIZE == 64
    assert quant._NF4Linear is quant.linear._NF4Linear
    defs = [p for p in LABKIT.rglob("*.py") if "\nNF4_BLOCKSIZE = " in p.read_text()]
    assert [p.relative_to(LABKIT).as_posix() for p in defs] == ["quant/fourbit.py"]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


@pytest.mark.parametrize("path", sorted((LABKIT / "quant").glob("*.py")), ids=lambda p: p.name)
def test_no_quant_module_over_450_lines(path):
    assert _lines(path) <= 450

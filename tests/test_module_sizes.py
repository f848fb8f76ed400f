"""No labkit module over 450 lines (issue 24): a newcomer opens one file per role. The one
exception is a table module -- data the generators read, not logic (``data_templates``)."""
from pathlib import Path

import pytest

LABKIT = Path(__file__).resolve().parent.parent / "labkit"
TABLES = {"data_templates.py"}
LIMIT = 450


def _modules():
    return sorted(p for p in LABKIT.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_package_is_where_this_test_looks():
    assert (LABKIT / "__init__.py").is_file() and len(_modules()) > 50


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(LABKIT).as_posix())
def test_no_module_over_450_lines(path):
    if path.name in TABLES:
        pytest.skip("a table module: data, not logic")
    assert len(path.read_text().splitlines()) <= LIMIT, f"{path.relative_to(LABKIT)}: split it by role"

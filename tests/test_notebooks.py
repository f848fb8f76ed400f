"""Every lab notebook: committed with outputs, stamped with its run, under 1 MB.

(nbval itself runs the notebooks: `pytest labs --nbval-lax`, part of `make test`.)
"""
import json
from pathlib import Path

import pytest

from labkit.labs import LABS
from labkit.notebooks import MAX_BYTES, STAMP_RE

LABS_DIR = Path(__file__).resolve().parent.parent / "labs"
NOTEBOOKS = sorted(LABS_DIR.glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks in labs/"
    assert (LABS_DIR / "00_setup_and_hardware.ipynb") in NOTEBOOKS


def test_notebook_names_follow_the_lab_map():
    known = {lab.path.name for lab in LABS}
    for nb in NOTEBOOKS:
        assert nb.name in known, f"{nb.name} is not in labkit.labs.LABS"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_small_and_stamped(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size:,} bytes (limit 1 MB)"
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown"
    assert STAMP_RE.search(first), "first cell must name the profile and device of the committed outputs"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "commit the notebook with outputs of a full run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, "committed outputs contain an error"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_anatomy(path):
    nb = json.loads(path.read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown").lower()
    for heading in ("interview questions", "what we measured", "exercises"):
        assert heading in text, f"{path.name} lacks a '{heading}' section"
    sources = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "env.report()" in sources
    assert "NBVAL_CHECK_OUTPUT" in sources


UNRESOLVABLE = ("the seeds'", "seeds' ", "the issue's", "the issue", "the 3x target", "(target ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_pages_are_clean(path):
    """What a learner reads on GitHub: no stderr boxes, no progress bars frozen at 0%, no words
    that point at this project's own planning instead of a paper or an interview question."""
    import base64
    import re
    import struct

    nb = json.loads(path.read_text())
    outputs = [(i, o) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" for o in c.get("outputs", [])]
    stderr = [i for i, o in outputs if o.get("name") == "stderr"]
    assert not stderr, f"stderr output in cells {stderr}"
    stubs = [i for i, o in outputs if re.search(r"\b0%\|", "".join(o.get("data", {}).get("text/plain", "")))]
    assert not stubs, f"progress bars saved at 0% in cells {stubs} (use labkit.progress)"
    text = "\n".join("".join(c["source"]) for c in nb["cells"]).lower()
    text += "\n".join("".join(o.get("text", "")) for _, o in outputs).lower()
    for phrase in UNRESOLVABLE:
        assert phrase not in text, f"{path.name} says {phrase!r}; cite a paper or an interview question id"
    for i, o in outputs:  # figures drawn at >= 110 dpi: the lab style's 6.4 in default is >= 700 px wide
        png = o.get("data", {}).get("image/png")
        if png:
            width = struct.unpack(">I", base64.b64decode(png[:44])[16:20])[0]
            assert width >= 300, f"cell {i}: a {width}-px figure is too small to read"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stamp_and_setup_cell_agree_on_threads(path):
    """The first cell's device names the torch threads the run used; env.report() printed the same."""
    import re

    nb = json.loads(path.read_text())
    device = STAMP_RE.search("".join(nb["cells"][0]["source"])).group(2)
    stamped = re.search(r"(\d+) torch threads?", device)
    printed = [m.group(1) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
               for m in [re.search(r"CPU threads\s+(\d+)", "".join(o.get("text", "")))] if m]
    if device.startswith("CPU") and printed:
        assert stamped, f"{path.name}: the stamp {device!r} does not say how many torch threads ran"
        assert stamped.group(1) == printed[0], f"{path.name}: stamp says {stamped.group(1)}, setup printed {printed[0]}"

"""The interview index: every question listed once, every mark pointing at a real cell, measured
entries backed by output, and the committed labs/INTERVIEW.md up to date."""
import json

import pytest

from labkit import interview
from labkit.__main__ import main as labkit_main
from labkit.errors import LabkitError


def test_question_list_has_165_unique_ids_with_topics():
    qs = interview.questions()
    assert len(qs) == 165
    assert all(q.topic and q.text for q in qs.values())
    assert list(qs)[0] == "BAS-01"


def test_marks_name_known_ids_and_real_cells():
    qs = interview.questions()
    for a in interview.answers():
        assert a.id in qs, f"{a.lab} cell {a.cell}: unknown id {a.id}"
        cells = json.loads((interview.LABS_DIR / a.lab).read_text())["cells"]
        assert a.evidence < len(cells)
        if a.kind == "measured":
            assert cells[a.evidence]["cell_type"] == "code" and cells[a.evidence]["outputs"], \
                f"{a.lab} cell {a.evidence} is called measured but has no output"


def test_committed_index_is_up_to_date():
    text = interview.render()
    assert interview.INDEX_FILE.read_text() == text, "labs/INTERVIEW.md is stale: run python -m labkit index"
    cov = interview.coverage(interview.questions(), interview.answers())
    assert cov["measured"] + cov["explained"] + cov["missing"] == 165
    print(f"interview coverage: {cov}")


def test_cell_ids_from_tags_and_answers_lines():
    assert interview.cell_ids({"metadata": {"tags": ["q:MEM-01", "solution", "q:PEFT-04"]}, "source": ""}) == [
        "MEM-01", "PEFT-04"]
    cell = {"metadata": {}, "source": ["some text\n", "**Answers:** SFT-06, SFT-12\n"]}
    assert interview.cell_ids(cell) == ["SFT-06", "SFT-12"]
    assert interview.cell_ids({"metadata": {}, "source": "# Answers: COT-01\nprint(1)"}) == ["COT-01"]
    assert interview.cell_ids({"metadata": {}, "source": "MEM-01 mentioned in passing"}) == []


def test_markdown_mark_is_measured_only_with_output_after_it(tmp_path):
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {"tags": ["q:MEM-01"]}, "source": "**MEM-01**"},
        {"cell_type": "code", "metadata": {}, "source": "print(2)", "outputs": [{"output_type": "stream", "text": "2"}]},
        {"cell_type": "markdown", "metadata": {"tags": ["q:MEM-02"]}, "source": "prose"},
        {"cell_type": "code", "metadata": {"tags": ["q:MEM-03"]}, "source": "x = 1", "outputs": []},
        {"cell_type": "code", "metadata": {"tags": ["q:MEM-04", "q:MEM-05", "prose:MEM-05"]}, "source": "print(3)",
         "outputs": [{"output_type": "stream", "text": "3"}]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "42_test.ipynb").write_text(json.dumps(nb))
    found = {a.id: a for a in interview.answers(tmp_path)}
    assert (found["MEM-01"].kind, found["MEM-01"].evidence) == ("measured", 1)
    assert found["MEM-02"].kind == "explained" and found["MEM-03"].kind == "explained"
    assert found["MEM-04"].kind == "measured" and found["MEM-05"].kind == "explained"   # prose:ID: printed, not measured
    text = interview.render(interview.questions(), list(found.values()))
    assert "| MEM-01 |" in text and "measured" in text
    bad = [interview.Answer("NOPE-01", "42_test.ipynb", 0, None, "explained", 0)]
    with pytest.raises(LabkitError, match="NOPE-01"):
        interview.render(interview.questions(), bad)


def test_cli_check_and_refusal_to_overwrite_a_hand_written_file(tmp_path, monkeypatch, capsys):
    assert labkit_main(["index", "--check"]) == 0
    hand = tmp_path / "INTERVIEW.md"
    hand.write_text("my notes\n")
    monkeypatch.setattr(interview, "INDEX_FILE", hand)
    assert labkit_main(["index", "--check"]) == 1
    assert labkit_main(["index"]) == 2
    assert hand.read_text() == "my notes\n"
    assert "not generated" in capsys.readouterr().err

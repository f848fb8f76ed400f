"""labkit.exercises and the student edition.

Numeric checkers: each takes its right answer, the answer rounded to 3 significant digits, and
rejects two wrong ones. Code exercises: the instructor's key (the notebook's `solution` cells)
passes, the student-edition stub and a wrong function fail with one printed line, never a
traceback.
"""
import json
import math

import pytest

from labkit import exercises, student
from labkit.errors import LabkitError
from labkit.exercises.checker import CodeExercise, Exercise

NUMERIC = sorted(n for n, ex in exercises.EXERCISES.items() if isinstance(ex, Exercise))
CODE = sorted(n for n, ex in exercises.EXERCISES.items() if isinstance(ex, CodeExercise))
KEYS = {p.name[:2]: p for p in student.LABS_DIR.glob("[0-9][0-9]_*.ipynb")}
# Labs whose technique is written out in `solution` cells, with code exercises (issue 15 builds
# 00-04, issue 16 05-09); each lab joins this list when it lands.
BUILT_LABS = ("00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16")


def _one_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{out}"
    return lines[0]


def _round_sig(x: float, sig: int = 3) -> float:
    return x if x == 0 else float(f"{x:.{sig - 1}e}")


# ----------------------------------------------------------------------------- names()
def test_names_lists_every_exercise_with_its_kind():
    all_names = exercises.names()
    assert set(all_names) == set(exercises.EXERCISES)
    assert set(all_names.values()) <= {"number", "code"}
    assert all(n[:2].isdigit() and n[2] == "." for n in all_names)
    assert exercises.names(2) == exercises.names("02") == {n: k for n, k in all_names.items() if n.startswith("02.")}


@pytest.mark.parametrize("lab", BUILT_LABS)
def test_built_labs_have_two_code_exercises(lab):
    code = [n for n, k in exercises.names(lab).items() if k == "code"]
    assert len(code) >= 2, f"lab {lab} has code exercises {code}"


def test_names_of_unknown_lab_is_one_line_error():
    with pytest.raises(LabkitError, match="labs with exercises") as err:
        exercises.names(42)
    assert "\n" not in str(err.value)
    with pytest.raises(LabkitError, match="lab number"):
        exercises.names("two")


def test_unknown_exercise_suggests_close_names():
    with pytest.raises(LabkitError, match="00.fp16_max"):
        exercises.check("00.fp16max", 1)


# ----------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("name", NUMERIC)
def test_numeric_checker_right_rounded_and_wrong(name, capsys):
    expected = float(exercises.EXERCISES[name].expected())
    assert exercises.check(name, expected) is True
    rounded = _round_sig(expected)
    assert exercises.check(name, rounded) is True, f"{name}: {rounded} (3 significant digits) rejected"
    assert exercises.check(name, f"{rounded:g}") is True
    for wrong in (expected * 2 + 1, expected * 1.05 if expected else 0.5):
        assert exercises.check(name, wrong) is False, f"{name}: wrong answer {wrong} accepted"
    out = capsys.readouterr().out
    assert all(line.startswith(("[x]", "[ ]")) for line in out.strip().splitlines())
    hint = exercises.EXERCISES[name].hint
    shown = {f"{expected:g}", f"{rounded:g}", str(int(expected)) if expected.is_integer() else "~"}
    assert not any(s in hint for s in shown if len(s) > 1), f"{name}: the hint gives the answer away"


@pytest.mark.parametrize("name, answer", [("06.ewc_penalty_by_hand", 2), ("06.ewc_penalty_by_hand", "2"),
                                          ("07.bubble_p8_m32", 0.179), ("07.bubble_p8_m32", "0.1795"),
                                          ("02.fp16_min_subnormal", "5.96e-8"), ("00.fp16_max", 65504.0)])
def test_answers_at_the_precision_asked_are_accepted(name, answer):
    assert exercises.check(name, answer) is True


@pytest.mark.parametrize("name, answer", [("07.bubble_p8_m32", 0.18), ("07.bubble_p8_m32", 0.17),
                                          ("07.bubble_p8_m32", "0.1790"), ("00.fp16_max", "65000"),
                                          ("06.ewc_penalty_by_hand", 2.1)])
def test_too_coarse_or_misrounded_answers_are_rejected(name, answer):
    assert exercises.check(name, answer) is False


def test_unanswered_number_is_a_reminder(capsys):
    assert exercises.check("00.fp16_max", None) is False
    assert "not answered yet" in _one_line(capsys.readouterr().out)


# ----------------------------------------------------------------------------- code
def _key_function(name):
    ex = exercises.EXERCISES[name]
    ns = student.solution_namespace(KEYS[name[:2]])
    assert ex.solution in ns, f"{name}: the key's solution cells define no {ex.solution!r}"
    return ns[ex.solution]


@pytest.mark.parametrize("name", CODE)
def test_key_solution_passes(name, capsys):
    assert exercises.check(name, _key_function(name), trials=3, seed=0) is True
    assert _one_line(capsys.readouterr().out).startswith(f"[x] {name}: passed")


@pytest.mark.parametrize("name", CODE)
def test_student_stub_fails_cleanly(name, capsys):
    ex = exercises.EXERCISES[name]
    ns = student.solution_namespace(KEYS[name[:2]], stubbed=True)
    assert exercises.check(name, ns[ex.solution], trials=2, seed=0) is False
    line = _one_line(capsys.readouterr().out)
    assert line.startswith(f"[ ] {name}: not written yet")


@pytest.mark.parametrize("name", CODE)
def test_wrong_function_fails_with_one_line(name, capsys):
    def wrong(*args, **kwargs):
        return 0

    def crashes(*args, **kwargs):
        raise ValueError("a bug\nover two lines")

    assert exercises.check(name, wrong, trials=2, seed=0) is False
    line = _one_line(capsys.readouterr().out)
    assert line.startswith(f"[ ] {name}:") and "Traceback" not in line
    assert exercises.check(name, crashes, trials=2, seed=0) is False
    assert "raised ValueError: a bug over two lines" in _one_line(capsys.readouterr().out)


def test_code_exercise_needs_a_function():
    name = CODE[0] if CODE else pytest.skip("no code exercises")
    with pytest.raises(LabkitError, match="pass the function itself"):
        exercises.check(name, 3.0)


def test_difference_reports_first_mismatch():
    import torch

    from labkit.exercises.checker import difference

    assert difference(torch.ones(3), torch.ones(3)) is None
    msg = difference(torch.tensor([1.0, 2.5, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    assert "1 of 3" in msg and "index (1,)" in msg and "off by 0.5" in msg
    assert "shape (2,)" in difference(torch.ones(2), torch.ones(3))
    assert difference((1.0, torch.ones(2)), (1.0, torch.zeros(2))).startswith("value 1:")
    assert difference(float("nan"), float("nan")) is None


# ----------------------------------------------------------------------------- student edition
def test_stub_source_keeps_signature_and_docstring():
    src = ('import math\n\nK = 3\n\ndef f(x, *, y=2):\n    """Add.\n\n    More."""\n    z = x + y\n    return z\n\n'
           'class C:\n    """A class."""\n    n = 1\n\n    def g(self):\n        return 1\n')
    new, stubbed = student.stub_source(src)
    assert stubbed == ["f", "C.g"]
    assert "def f(x, *, y=2):" in new and '"""Add.' in new and "K = 3" in new and "n = 1" in new
    assert "return z" not in new and "return 1" not in new
    ns = {}
    exec(new, ns)
    with pytest.raises(NotImplementedError, match="write this: f -- Add"):
        ns["f"](1)
    with pytest.raises(NotImplementedError, match="write this: C.g"):
        ns["C"]().g()


def test_solution_functions_have_docstrings():
    import ast

    for path in KEYS.values():
        for src in student.solution_cells(json.loads(path.read_text())):
            for node in ast.parse(src).body:
                fns = [node] if isinstance(node, ast.FunctionDef) else (
                    [n for n in node.body if isinstance(n, ast.FunctionDef)] if isinstance(node, ast.ClassDef) else [])
                for fn in fns:
                    assert ast.get_docstring(fn), f"{path.name}: solution function {fn.name} has no docstring"


def test_student_edition_is_generated_with_stubs_and_no_outputs(tmp_path):
    made = student.write_student_edition(out_dir=tmp_path)
    assert set(made) == {p.name for p in KEYS.values()}
    for lab in BUILT_LABS:
        name = KEYS[lab].name
        assert made[name], f"{name} has no solution cells"
        nb = json.loads((tmp_path / name).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code)
        text = "\n".join("".join(c["source"]) for c in code)
        assert "NotImplementedError(" in text and "assert exercises.check(" not in text
        for c in code:  # a cell that only checks answers must never be allowed to raise
            src = "".join(c["source"])
            if src.strip().startswith("exercises.check(") and all(
                    ln.startswith(("exercises.check(", "#", " ")) or not ln.strip() for ln in src.splitlines()):
                assert "raises-exception" not in c.get("metadata", {}).get("tags", [])


def test_student_edition_never_overwrites_a_learners_edits(tmp_path, capsys):
    student.write_student_edition(out_dir=tmp_path, only=["02"])
    path = next(tmp_path.glob("02_*.ipynb"))
    student.write_student_edition(out_dir=tmp_path, only=["02"])   # unchanged: regenerated freely
    nb = json.loads(path.read_text())
    nb["cells"][3]["source"] = "my own work\n"
    path.write_text(json.dumps(nb))
    with pytest.raises(LabkitError, match="has your edits"):
        student.write_student_edition(out_dir=tmp_path, only=["02"])
    assert student.main(["02", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert "my own work" in path.read_text()
    assert student.main(["02", "--out", str(tmp_path), "--force"]) == 0
    assert "my own work" not in path.read_text()


def test_unknown_lab_for_student_edition():
    with pytest.raises(LabkitError, match="no lab notebook matches"):
        student.write_student_edition(only=["99"])


def test_numeric_checker_tolerates_float32_tensors():
    import torch

    assert exercises.check("07.bubble_p8_m32", torch.tensor(0.179)) is True
    assert math.isclose(float(exercises.EXERCISES["07.bubble_p8_m32"].expected()), 7 / 39)

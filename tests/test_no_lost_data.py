"""No command a learner is told to run replaces committed results or models without an explicit flag.

Each command runs for real (``python -m ...``) in a temporary git copy of this
working tree; afterwards ``git status --porcelain`` of the copy must be empty.
Files the copy's .gitignore ignores (``data/results/local/``, where CPU and
``--quick`` bench runs write) do not show there.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _git(cwd, *args) -> str:
    env = None
    if Path(cwd) != ROOT:    # the copy: no global or system config (excludes, hooks, signing) may hide a change
        env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def _copy(tmp_path_factory) -> Path:
    """The files git would commit from this working tree (tracked and new, not ignored; uncommitted
    edits included), committed as ``base`` in a fresh repository."""
    files = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    dst = tmp_path_factory.mktemp("repo")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_symlink() or src.is_file():      # a tracked file deleted in the working tree is left out
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel, follow_symlinks=False)
    _git(dst, "init", "-q")
    _git(dst, "add", "-A")
    _git(dst, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    r = _run(dst, "-c", "import labkit; print(labkit.__file__)")
    assert Path(r.stdout.strip()).resolve() == (dst / "labkit" / "__init__.py").resolve(), r.stdout + r.stderr
    return dst


@pytest.fixture
def repo_copy(_copy) -> Path:
    """The module's copy, back at ``base``: tracked files restored, new files and data/results/local/ removed."""
    _git(_copy, "reset", "-q", "--hard")
    _git(_copy, "clean", "-fdq")
    shutil.rmtree(_copy / "data" / "results" / "local", ignore_errors=True)
    assert _status(_copy) == ""
    return _copy


def _run(copy: Path, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python *args`` in the copy, importing the copy's labkit (not the editable install)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "LABKIT_PROFILE": "smoke",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("LABKIT_DEVICE", None)
    return subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _status(copy: Path) -> str:
    return _git(copy, "status", "--porcelain", "--untracked-files=all")


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return lines[0]


# ---------------------------------------------------------------------------------- labkit/bench
# every bench with a CPU code path; the README tells users to run memory and checkpointing this way
QUICK_BENCHES = ["memory", "checkpointing", "precision", "lora", "fsdp", "forgetting", "qlora"]


@pytest.mark.parametrize("name", QUICK_BENCHES)
def test_bench_quick_cpu_run_keeps_committed_results(name, repo_copy):
    r = _run(repo_copy, "-m", f"labkit.bench.{name}", "--quick", "--device", "cpu")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _status(repo_copy) == ""
    local = f"data/results/local/{name}_cpu_quick.csv"
    assert (f"wrote {local} (a CPU/--quick run; data/results/{name}_gpu.csv is written only by a full run "
            "on a GPU)") in r.stdout.splitlines()
    first = (repo_copy / local).read_text().splitlines()[0]
    assert json.loads(first[1:])["device"] == "cpu"


@pytest.mark.parametrize("name", ["memory", "checkpointing"])
def test_cpu_run_may_not_write_a_gpu_csv(name, repo_copy):
    """An explicit --out is honoured, but a CPU number in a *_gpu.csv would be a silent wrong number."""
    r = _run(repo_copy, "-m", f"labkit.bench.{name}", "--quick", "--device", "cpu",
             "--out", f"data/results/{name}_gpu.csv")
    line = _one_line_error(r)
    assert f"--out data/results/{name}_gpu.csv" in line and "drop --out" in line and "another name" in line
    assert _status(repo_copy) == ""


def test_matmul_on_cpu_is_one_line_error(repo_copy):
    line = _one_line_error(_run(repo_copy, "-m", "labkit.bench.matmul", "--quick", "--device", "cpu"))
    assert "GPU" in line and "data/results/matmul_gpu.csv" in line
    assert _status(repo_copy) == ""


def test_memory_reestimate_keeps_measurements(tmp_path):
    """``--reestimate`` rewrites a CSV in place (the user names it): only estimate columns may change."""
    from labkit import results
    from labkit.bench import memory as bench

    committed = results.RESULTS_DIR / "memory_gpu.csv"
    path = tmp_path / "memory_gpu.csv"
    shutil.copy(committed, path)
    bench.reestimate(str(path))

    def load(p):
        with open(p) as f:
            meta = json.loads(f.readline()[1:])
            return meta, list(csv.DictReader(f))

    (meta0, rows0), (meta1, rows1) = load(committed), load(path)
    assert len(rows1) == len(rows0)
    for before, after in zip(rows0, rows1):
        kept = [k for k in before if not k.startswith("est") and k not in ("rel_error", "n_params", "n_trainable")]
        assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert {k: meta1[k] for k in meta0 if k != "summary"} == {k: v for k, v in meta0.items() if k != "summary"}
    assert meta1["summary_at_measurement"] == meta0.get("summary_at_measurement", meta0.get("summary"))
    assert "estimates_recomputed" in meta1


# ---------------------------------------------------------------------------------- models
def test_pretrain_defaults_keep_committed_lab_tiny(repo_copy):
    r = _run(repo_copy, "-m", "labkit", "pretrain", "--steps", "1", "--docs", "50", "--batch-size", "2",
             "--seq-len", "16")
    assert _one_line_error(r) == ("error: data/models/lab-tiny already holds a committed model; pass --out DIR "
                                  "for a new one, or --force to replace it")
    assert _status(repo_copy) == ""


def test_pretrain_default_out_needs_force_only_over_a_model(tmp_path, monkeypatch):
    from labkit import models, pretrain
    from labkit.errors import LabkitError

    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(models, "checkpoint_dir", lambda name: tmp_path / name)
    assert pretrain.default_out("lab-small") == tmp_path / "lab-small"       # nothing there yet
    (tmp_path / "lab-tiny").mkdir()
    (tmp_path / "lab-tiny" / "model.safetensors").write_bytes(b"")
    with pytest.raises(LabkitError, match="already holds a committed model; pass --out DIR"):
        pretrain.default_out("lab-tiny")
    assert pretrain.default_out("lab-tiny", force=True) == tmp_path / "lab-tiny"


def test_cot_model_defaults_keep_committed_lab_cot(repo_copy):
    r = _run(repo_copy, "-m", "labkit.cot_model", "--steps", "1", "--batch-size", "1", "--seq-len", "32",
             "--eval-every", "0")
    assert _one_line_error(r) == ("error: data/models/lab-cot already holds a committed model; pass --out DIR "
                                  "for a new one, or --force to replace it")
    assert _status(repo_copy) == ""


def test_data_rerun_reproduces_the_committed_corpora(repo_copy):
    """`python -m labkit data` (as the README says) leaves the committed corpora byte for byte."""
    r = _run(repo_copy, "-m", "labkit", "data")
    assert r.returncode == 0, r.stderr
    assert "unchanged" in r.stdout and "replaced" not in r.stdout
    assert _status(repo_copy) == ""


def test_tokenizer_that_would_differ_needs_force(repo_copy):
    r = _run(repo_copy, "-m", "labkit", "tokenizer", "--vocab-size", "512")
    assert _one_line_error(r).startswith("error: this would change the committed tokenizer")
    assert _status(repo_copy) == ""
    r = _run(repo_copy, "-m", "labkit", "tokenizer")  # the defaults reproduce it bit for bit
    assert r.returncode == 0 and "unchanged" in r.stdout, r.stderr
    assert _status(repo_copy) == ""


def test_cpu_precision_bench_writes_only_local_results(repo_copy):
    r = _run(repo_copy, "-m", "labkit.bench.cpu_precision", "--quick")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bf16 autocast / fp32 step time" in r.stdout
    assert (repo_copy / "data/results/local/cpu_precision_cpu_quick.csv").exists()
    assert _status(repo_copy) == ""

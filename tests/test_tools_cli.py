"""The tool CLIs (`notebooks`, `student`, `cot-model`) follow `labkit.cli`, and pretrain / cot_model
save through the one bf16 save, `models.write_bf16` (what `models.save` writes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import cot_model, models, pretrain

REPO = Path(__file__).resolve().parents[1]


def _run(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("command", [("labkit.notebooks", "--profile", "smoke", "x.ipynb", "--bogus"),
                                     ("labkit", "notebooks", "--bogus"),
                                     ("labkit.student", "--bogus"),
                                     ("labkit", "student", "--bogus"),
                                     ("labkit.cot_model", "--steps", "many"),
                                     ("labkit", "cot-model", "--bogus")])
def test_bad_flag_is_one_line_and_exit_2(command):
    r = _run(*command)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("module", ["labkit.notebooks", "labkit.student", "labkit.cot_model"])
def test_help_lists_json(module):
    r = _run(module, "--help")
    assert r.returncode == 0 and "--json" in r.stdout


def test_notebooks_profile_stays_required():
    r = _run("labkit.notebooks", "labs/01_memory_estimation.ipynb")
    assert r.returncode == 2 and "--profile" in r.stderr


def test_student_json_last_line(tmp_path):
    r = _run("labkit.student", "02", "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path)
    (name,) = summary["written"]
    assert (tmp_path / name).exists() and name.startswith("02_")


def test_cot_model_smoke_refuses_data_models():
    r = _run("labkit.cot_model", "--profile", "smoke", "--out", "data/models/lab-cot-smoke")
    assert r.returncode == 2 and "never writes into data/models" in r.stderr
    assert not (REPO / "data/models/lab-cot-smoke").exists()


@pytest.fixture
def models_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path / "models")
    return tmp_path / "models"


def _files(directory: Path) -> dict:
    return {f.name: f.read_bytes() for f in sorted(directory.iterdir())}


def test_pretrain_saves_what_models_save_writes(tmp_path, models_tmp):
    out = tmp_path / "pretrained"
    summary = pretrain.pretrain("lab-tiny", steps=1, batch_size=1, seq_len=16, n_docs=4, out=out,
                                progress=False, device="cpu")
    written = _files(out)
    assert sorted(written) == ["config.json", "generation_config.json", "model.safetensors", "training.json"]
    assert json.loads(written["training.json"]) == json.loads(json.dumps(summary))
    model, _ = models.load(str(out))     # bf16 on disk -> fp32 -> bf16 again: the same bytes
    again = _files(models.save(model, "again"))
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        assert written[name] == again[name], name


def test_cot_model_save_is_models_save_in_the_lab_cot_layout(tmp_path, monkeypatch):
    model, tok = models.load("lab-tiny")
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path / "models")
    cot_model.save(model, tok, tmp_path / "cot", {"steps": 1})
    written = _files(tmp_path / "cot")
    assert sorted(written) == ["config.json", "model.safetensors", "training.json"]   # as the committed lab-cot
    assert json.loads(written["config.json"])["dtype"] == json.loads(
        (REPO / "data/models/lab-cot/config.json").read_text())["dtype"]
    reference = _files(models.save(model, "reference", summary={"steps": 1}))
    assert written["model.safetensors"] == reference["model.safetensors"]
    assert written["training.json"] == reference["training.json"]

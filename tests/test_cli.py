import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_doctor_runs_and_lists_labs():
    r = run("doctor")
    assert r.returncode == 0, r.stderr
    assert "torch" in r.stdout and "Setup and hardware" in r.stdout


def test_doctor_json_is_last_line():
    r = run("doctor", "--json")
    assert r.returncode == 0
    data = json.loads(r.stdout.strip().splitlines()[-1])
    assert data["env"]["torch"] and data["labs"][0]["lab"] == "00"


def test_unknown_command_and_bad_flag_exit_2_with_one_line():
    for args in (("frobnicate",), ("doctor", "--nope"), ("pretrain", "--model", "llama-2-7b", "--steps", "1")):
        r = run(*args)
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:"), r.stderr


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0 and "doctor" in r.stdout and "memory" in r.stdout

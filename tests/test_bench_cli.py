"""Every `labkit.bench.*` script through `labkit.cli`: `python -m labkit bench <name>`, `--profile`,
`--json` (one JSON object, last stdout line), one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import importlib

import pytest

from labkit import bench, cli, results
from labkit.__main__ import main as labkit_main

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=180, env=ENV)


def test_profile_defaults_mapping():
    assert bench.profile_defaults(None, True) == {} == bench.profile_defaults(None, False)
    assert bench.profile_defaults("smoke", False) == {"quick": True, "device": "cpu"}
    assert bench.profile_defaults("smoke", True) == {"quick": True, "device": "cuda"}
    assert bench.profile_defaults("cpu", True) == {"quick": True, "device": "cpu"}
    assert bench.profile_defaults("full", False) == {"quick": False, "device": "cuda"}
    # a bench with its own CPU sizes (cpu_precision): cpu and full mean no --quick
    assert bench.profile_defaults("cpu", False, cpu_sizes=True)["quick"] is False
    assert bench.profile_defaults("smoke", False, cpu_sizes=True)["quick"] is True


def _parsed(argv, **kw):
    p = bench.parser("demo", "demo")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    args = bench.parse(p, argv, **kw)
    return args.quick, args.device


def test_parse_applies_the_profile_and_explicit_flags_win(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _parsed([]) == (False, "cuda")                      # no profile: today's defaults exactly
    assert _parsed(["--profile", "smoke"]) == (True, "cpu")
    assert _parsed(["--profile", "cpu"]) == (True, "cpu")
    assert _parsed(["--profile", "full"]) == (False, "cuda")
    assert _parsed(["--profile", "cpu", "--device", "cuda"]) == (True, "cuda")
    assert _parsed(["--profile", "full", "--quick"]) == (True, "cuda")
    assert _parsed(["--profile", "smoke"]) == (True, "cpu")    # the parser's defaults were restored
    assert _parsed([]) == (False, "cuda")


def _in_process(capsys, argv):
    """`python -m labkit <argv>` in this process: (exit code, stdout, stderr)."""
    try:
        code = labkit_main(argv)
    except SystemExit as exc:   # argparse's --help
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code, err):
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name", list(bench.BENCHES))
def test_help_shows_profile_and_json(capsys, name):
    code, out, _ = _in_process(capsys, ["bench", name, "--help"])
    assert code == 0
    assert "--profile" in out and "--json" in out and f"python -m labkit bench {name}" in out


@pytest.mark.parametrize("name", list(bench.BENCHES))
def test_bad_flag_is_one_line_exit_2_both_ways(capsys, name):
    code, _, err = _in_process(capsys, ["bench", name, "--no-such-flag"])
    assert "--no-such-flag" in _one_line_error(code, err)
    # `python -m labkit.bench.<name>`: its __main__ block is `sys.exit(cli.run(main, sys.argv[1:]))`
    module = importlib.import_module(f"labkit.bench.{name}")
    assert "sys.exit(cli.run(main, sys.argv[1:]))" in Path(module.__file__).read_text()
    code = cli.run(module.main, ["--no-such-flag"])
    assert "--no-such-flag" in _one_line_error(code, capsys.readouterr().err)


@pytest.mark.parametrize("name", ["matmul", "decode"])
def test_bad_flag_as_a_module_script(name):
    r = _run("-m", f"labkit.bench.{name}", "--no-such-flag")
    assert "--no-such-flag" in _one_line_error(r.returncode, r.stderr)


def test_bench_help_lists_benches_and_top_level_help_names_them(capsys):
    code, out, _ = _in_process(capsys, ["bench", "--help"])
    assert code == 0 and all(name in out for name in bench.BENCHES)
    r = _run("-m", "labkit", "--help")
    assert r.returncode == 0 and all(name in r.stdout for name in bench.BENCHES)
    for command in ("bench", "notebooks", "student", "cot-model"):
        assert f"  {command} " in r.stdout
    assert "unknown bench" in _one_line_error(*_in_process(capsys, ["bench", "nope"])[::2])


def test_gpu_only_bench_refuses_profile_cpu_in_one_line(capsys):
    for name in ("matmul", "mfu"):
        _one_line_error(*_in_process(capsys, ["bench", name, "--profile", "cpu"])[::2])


@pytest.mark.parametrize("name,argv", [("cpu_precision", ["--profile", "smoke"]),
                                       ("decode", ["--quick", "--device", "cpu"])])
def test_json_last_line_rows_equal_the_csv(capsys, tmp_path, name, argv):
    out = tmp_path / "bench.csv"
    code, stdout, err = _in_process(capsys, ["bench", name, *argv, "--json", "--out", str(out)])
    assert code == 0, err
    data = json.loads(stdout.strip().splitlines()[-1])
    assert data["bench"] == name and data["csv"] == str(out) and set(data) == {"bench", "csv", "rows"}
    assert data["rows"] and data["rows"] == results.read_csv(out)[1]

"""labkit.results: CSVs with a metadata line, and where bench scripts may write them."""
import pytest

from labkit import results
from labkit.errors import LabkitError


ROWS = [{"config": "a", "ms": 1.5}, {"config": "b", "ms": 2.0, "extra": 3}]


def test_csv_round_trip_keeps_metadata_and_numbers(tmp_path):
    path = results.write_csv(tmp_path / "x.csv", ROWS, {"device": "test", "command": "python -m x"})
    meta, rows = results.read_csv(path)
    assert meta == {"device": "test", "command": "python -m x"}
    assert rows[0]["ms"] == 1.5 and rows[1]["extra"] == 3 and rows[1]["config"] == "b"


@pytest.fixture
def dirs(monkeypatch, tmp_path):
    """RESULTS_DIR (committed GPU CSVs) and LOCAL_DIR (CPU / --quick runs) inside tmp_path."""
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(results, "LOCAL_DIR", tmp_path / "results" / "local")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "results", tmp_path / "results" / "local"


@pytest.mark.parametrize("device, quick, local_name", [("cpu", False, "demo_cpu.csv"), ("cpu", True, "demo_cpu_quick.csv"),
                                                       ("cuda", True, "demo_cuda_quick.csv")])
def test_bench_csv_of_cpu_or_quick_runs_goes_to_local_folder(device, quick, local_name, dirs, capsys):
    """A --quick or CPU run only checks the code path: it must never replace a committed GPU CSV,
    so it writes the git-ignored data/results/local/ and says where."""
    committed, local = dirs
    path = results.write_bench_csv("demo", ROWS, device=device, quick=quick, metadata={})
    assert path == local / local_name
    assert [p.name for p in committed.iterdir()] == ["local"]          # no demo_gpu.csv
    assert results.read_csv(path)[1][0]["config"] == "a"
    assert capsys.readouterr().out.strip() == (f"wrote results/local/{local_name} (a CPU/--quick run; "
                                               "results/demo_gpu.csv is written only by a full run on a GPU)")


def test_bench_csv_real_gpu_run_and_explicit_out(dirs, capsys):
    committed, local = dirs
    assert results.write_bench_csv("demo", ROWS, device="cuda", quick=False, metadata={"device": "H100"}) \
        == committed / "demo_gpu.csv"
    assert capsys.readouterr().out.strip() == "wrote results/demo_gpu.csv"
    assert results.write_bench_csv("demo", ROWS, device="cuda:0", quick=False, out=committed / "x_gpu.csv",
                                   metadata={}) == committed / "x_gpu.csv"
    out = committed.parent / "elsewhere.csv"
    assert results.write_bench_csv("demo", ROWS, device="cpu", quick=True, out=out, metadata={}) == out
    assert results.read_csv(out)[1][0]["config"] == "a"
    assert not local.exists()


@pytest.mark.parametrize("device, quick", [("cpu", False), ("cpu", True), ("cuda", True)])
def test_cpu_or_quick_run_may_not_write_a_gpu_csv(device, quick, dirs):
    """A CPU number in a *_gpu.csv is a silent wrong number: refused in one line, nothing written."""
    committed, _ = dirs
    for out in (committed / "demo_gpu.csv", "somewhere/else_gpu.csv"):
        with pytest.raises(LabkitError, match="drop --out .* or choose another name") as info:
            results.bench_csv_path("demo", device=device, quick=quick, out=out)
        assert "\n" not in str(info.value)
        with pytest.raises(LabkitError):
            results.write_bench_csv("demo", ROWS, device=device, quick=quick, out=out, metadata={})
    assert not committed.exists() and not (committed.parent / "somewhere").exists()


def test_a_subset_of_a_gpu_run_never_replaces_the_full_table(monkeypatch, tmp_path):
    """`memory --only X` on a GPU measures some rows: they go to data/results/local/, not the committed CSV."""
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(results, "LOCAL_DIR", tmp_path / "local")
    assert results.bench_csv_path("memory", device="cuda", quick=False, subset=True) \
        == tmp_path / "local" / "memory_cuda_only.csv"
    assert results.bench_csv_path("memory", device="cuda", quick=False) == tmp_path / "memory_gpu.csv"

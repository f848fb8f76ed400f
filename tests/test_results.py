"""labkit.results: CSVs with a metadata line, and where bench scripts may write them."""
import pytest

from labkit import results


ROWS = [{"config": "a", "ms": 1.5}, {"config": "b", "ms": 2.0, "extra": 3}]


def test_csv_round_trip_keeps_metadata_and_numbers(tmp_path):
    path = results.write_csv(tmp_path / "x.csv", ROWS, {"device": "test", "command": "python -m x"})
    meta, rows = results.read_csv(path)
    assert meta == {"device": "test", "command": "python -m x"}
    assert rows[0]["ms"] == 1.5 and rows[1]["extra"] == 3 and rows[1]["config"] == "b"


@pytest.mark.parametrize("device, quick", [("cpu", False), ("cpu", True), ("cuda", True)])
def test_bench_csv_not_written_by_cpu_or_quick_runs(device, quick, monkeypatch, tmp_path):
    """A --quick or CPU run only checks the code path: it must never replace a committed GPU CSV."""
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    assert results.write_bench_csv("demo", ROWS, device=device, quick=quick) is None
    assert not list(tmp_path.iterdir())


def test_bench_csv_real_gpu_run_and_explicit_out(monkeypatch, tmp_path):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    assert results.write_bench_csv("demo", ROWS, device="cuda", quick=False, metadata={"device": "H100"}) \
        == tmp_path / "demo_gpu.csv"
    out = tmp_path / "elsewhere.csv"
    assert results.write_bench_csv("demo", ROWS, device="cpu", quick=True, out=out, metadata={}) == out
    assert results.read_csv(out)[1][0]["config"] == "a"

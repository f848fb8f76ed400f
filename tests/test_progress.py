"""labkit.progress: a saved notebook shows the finished bar, not tqdm's widget text at 0%."""
import nbformat
from nbclient import NotebookClient

from labkit import progress


def _run_cell(source: str):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb.cells[0].outputs


def test_saved_notebook_output_is_the_finished_bar():
    outputs = _run_cell(
        "from labkit.progress import progress\n"
        "bar = progress(total=5, desc='fp32')\n"
        "for _ in range(5):\n"
        "    bar.set_postfix({'loss': '1.234'}, refresh=False)\n"
        "    bar.update(1)\n"
        "bar.close()\n"
        "for _ in progress(range(3), desc='eval'):\n"
        "    pass\n")
    texts = ["".join(o.get("data", {}).get("text/plain", "")) for o in outputs]
    assert not any(o.get("name") == "stderr" for o in outputs)
    assert texts[0].startswith("fp32: 100%") and "5/5" in texts[0] and "loss=1.234" in texts[0]
    assert texts[1].startswith("eval: 100%") and "3/3" in texts[1]
    assert not any(" 0%|" in t for t in texts)


def test_terminal_is_plain_tqdm():
    from tqdm import tqdm

    bar = progress.progress(total=2, desc="x", disable=True)
    assert isinstance(bar, tqdm)
    bar.close()

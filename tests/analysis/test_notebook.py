"""The notebooks run top to bottom against a ledger the tests build, and are committed stripped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from analysis.efficiency import STATED_CAVEAT
from tests.analysis.conftest import TOY_SWEEP

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "megadocs-test"


@pytest.fixture
def this_python_kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec that runs this interpreter (works in a fresh venv without `ipykernel install`)."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "megadocs tests", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOKS.parent))
    return KERNEL


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_is_a_notebook():
    assert [p.name for p in notebooks()] == ["generation_scaling.ipynb"]


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom_on_a_real_ledger(path, toy_sweep, this_python_kernel, monkeypatch):
    monkeypatch.setenv("MEGADOCS_SWEEP", str(toy_sweep))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name=this_python_kernel, timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "sweep toy: " in text and "[simple]" in text and "[stitched]" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # 4 validation sets (Figures 1/2/5) + Figure 11 + one map per certification (7)
    assert len(images) == 4 + 1 + 7
    assert not any(o.output_type == "error" for o in outputs)
    # The stated law's caveat in its one wording (the report's paragraph), not the notebook's own.
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert markdown.count(STATED_CAVEAT) == 1 and "Data efficiency uses the paper's reference law" in markdown
    assert "illustrative" not in "".join(cell.source for cell in notebook.cells)


def test_notebook_on_the_default_sweep_tabulates_its_losses(tmp_path, this_python_kernel, monkeypatch):
    """`make notebook-run`'s default sweep is the analytic example, whose runs report their own
    objective and no iid loss: the loss table must hold its certifications, not come out empty
    (issue 34)."""
    import yaml

    from search.controller import run_sweep
    from search.sweep import load_sweep

    data = yaml.safe_load((NOTEBOOKS.parent / "search/examples/analytic.yaml").read_text())
    data.update(executor={"kind": "debug", "max_parallel": 4, "poll_s": 0.01}, out=str(tmp_path / "out"))
    path = tmp_path / "analytic.yaml"
    path.write_text(yaml.safe_dump(data))
    run_sweep(load_sweep(path))
    monkeypatch.setenv("MEGADOCS_SWEEP", str(path))
    notebook = nbformat.read(NOTEBOOKS / "generation_scaling.ipynb", as_version=4)
    NotebookClient(notebook, kernel_name=this_python_kernel, timeout=600,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    [losses] = [cell for cell in notebook.cells if cell.cell_type == "code" and "table[table[\"set\"] == main]" in cell.source]
    [result] = [o for o in losses.outputs if o.output_type == "execute_result"]
    shown = result["data"]["text/plain"]
    assert "Empty DataFrame" not in shown and "simple" in shown and "stitched" in shown, shown


def test_notebook_runs_on_a_ledger_whose_runs_all_diverged(tmp_path, this_python_kernel, monkeypatch):
    """A stopped or failed sweep is what a user opens the notebook on first: no finite loss must be
    one printed line, not a UserError that stops every cell after it."""
    from search.controller import run_sweep
    from search.sweep import load_sweep
    from tests.analysis.conftest import write_sweep

    text = TOY_SWEEP.replace("tests.analysis.objectives:paper_like", "tests.analysis.objectives:diverges")
    path = write_sweep(tmp_path / "diverged", text)
    run_sweep(load_sweep(path))
    monkeypatch.setenv("MEGADOCS_SWEEP", str(path))
    notebook = nbformat.read(NOTEBOOKS / "generation_scaling.ipynb", as_version=4)
    NotebookClient(notebook, kernel_name=this_python_kernel, timeout=600,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "no loss table: generation scaling: no certification has a finite loss" in text

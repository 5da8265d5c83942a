from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_recs_retraining_notebook_runs_on_a_real_slice(feature_ready_settings, monkeypatch):
    monkeypatch.setenv("TAILOR_DATA_DIR", str(feature_ready_settings.data_dir))
    monkeypatch.setenv("TAILOR_FEAST_PROJECT", feature_ready_settings.feast_project)
    notebook = nbformat.read(NOTEBOOKS / "01-recs-retraining.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "promoted (no champion yet)" in outputs
    assert "champion version: 1" in outputs
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 2

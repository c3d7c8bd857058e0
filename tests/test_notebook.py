"""Runs mp4.ipynb top to bottom in QUICK mode (headless, nbclient); any cell error fails."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_runs_in_quick_mode(data_root, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if not (data_root / "PennFudanPed").is_dir():
        pytest.skip("Penn-Fudan data not found")
    nb = nbformat.read(ROOT / "mp4.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit mp4.ipynb with outputs cleared"
    )
    monkeypatch.setenv("SEGKIT_QUICK", "1")
    monkeypatch.setenv("SEGKIT_DATA", str(data_root))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    texts = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "QUICK=True" in texts and "mean AP" in texts
    assert (tmp_path / "runs" / "notebook-quick" / "effnet_unet" / "checkpoint.pt").is_file()
    assert os.environ["SEGKIT_QUICK"] == "1"

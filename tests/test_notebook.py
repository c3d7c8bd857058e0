"""mp4.ipynb executed headless (nbclient) in quick mode on the session's shared quick run.

The notebook's quick configs are those of ``segkit reproduce --quick``, so on the ``quick_run``
fixture's folders it trains nothing: it loads, evaluates and draws. The checks are what a student
and a grader see: every cell runs, no figure is shown twice, no long stderr block (progress bars
or warnings) buries the results, and every question's section shows a figure or a table.
"""

import hashlib
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_STDERR_LINES = 5
SECTIONS = ("Q1", "Q2", "Q3", "Q4", "Q5", "Q6", "Q7", "Bonus")


@pytest.fixture(scope="module")
def executed(quick_run, quick_data, tmp_path_factory):
    """The notebook after a headless run, and the run folder it used (a copy of the quick run's,
    so the shared fixture stays as reproduce wrote it)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    runs = tmp_path_factory.mktemp("notebook") / "runs"
    shutil.copytree(quick_run, runs)  # copy2: modification times are kept
    before = {p: p.stat().st_mtime for p in runs.glob("*/checkpoint.pt")}
    nb = nbformat.read(ROOT / "mp4.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit mp4.ipynb with outputs cleared (python tools/make_notebook.py)"
    )
    env = {
        "SEGKIT_QUICK": "1",
        "SEGKIT_RUNS": str(runs),
        "SEGKIT_DATA": str(quick_data),
        "PYTHONWARNINGS": "default",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        client = nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        )
        client.execute()  # raises CellExecutionError (cell source and traceback) on a failure
    return nb, runs, before


def _outputs(cell):
    return cell.get("outputs", []) if cell.cell_type == "code" else []


def _is_table(out) -> bool:
    text = out.get("text", "") if out.get("output_type") == "stream" else ""
    return out.get("name") == "stdout" and len(text.strip().splitlines()) >= 3


def test_reuses_the_quick_run_and_trains_nothing(executed):
    nb, runs, before = executed
    assert len(before) >= 6  # five semantic models, the instance model (and the study's runs)
    retrained = [str(p) for p, t in before.items() if p.stat().st_mtime != t]
    assert not retrained, f"the notebook retrained (configs differ from reproduce's): {retrained}"
    text = "".join(o.get("text", "") for c in nb.cells for o in _outputs(c))
    assert "QUICK mode" in text and "quick run" in text and "full run" in text


def test_no_figure_is_shown_twice(executed):
    nb, _, _ = executed
    seen: dict[str, int] = {}
    for i, cell in enumerate(nb.cells):
        pngs = [o["data"]["image/png"] for o in _outputs(cell) if "image/png" in o.get("data", {})]
        assert len(pngs) <= 1 or len(set(pngs)) == len(pngs), f"cell {i} shows a figure twice"
        for png in pngs:
            h = hashlib.sha256(png.encode()).hexdigest()
            assert h not in seen, f"cell {i} repeats the figure of cell {seen[h]}"
            seen[h] = i
    assert len(seen) >= 8  # Q1, Q2, Q3, Q5, Q6 (3), Q7, instance


def test_no_long_stderr_block(executed):
    nb, _, _ = executed
    for i, cell in enumerate(nb.cells):
        for out in _outputs(cell):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines = out["text"].strip().splitlines()
                assert len(lines) <= MAX_STDERR_LINES, f"cell {i} stderr:\n" + "\n".join(lines)


def test_every_question_shows_a_figure_or_a_table(executed):
    nb, _, _ = executed
    shown: dict[str, bool] = {}
    section = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.match(r"##\s+(Q\d|Bonus)\b", cell.source)
            if m:
                section = m.group(1)
                shown.setdefault(section, False)
            continue
        has = any("image/png" in o.get("data", {}) or _is_table(o) for o in _outputs(cell))
        if section:
            shown[section] = shown[section] or has
    assert set(SECTIONS) <= set(shown), sorted(k for k in shown if k)
    assert all(shown[s] for s in SECTIONS), {s: shown[s] for s in SECTIONS}

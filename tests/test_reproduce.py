"""``segkit reproduce --quick`` end to end (the session's one shared quick run), its tables
against results.json, resumability, and the PDF built from it."""

import json
import os
import shutil
import time

import pytest
from test_report import ROOT, check_tables, report_inputs

from segkit.cli import main
from segkit.config import SEMANTIC_MODELS
from segkit.report import build_pdf
from segkit.study import AUGMENT_SETTINGS, LEVER_SETTINGS
from segkit.utils import WALL_LEDGER, SegkitError, WallClock


def test_quick_writes_every_table_and_figure(quick_run):
    gen = quick_run / "generated"
    res = json.loads((gen / "results.json").read_text())
    assert res["quick"] is True and set(res["models"]) == set(SEMANTIC_MODELS)
    assert (
        len(res["augmentation"]) == len(AUGMENT_SETTINGS)
        and res["instance"]["test"]["ap"] is not None
    )
    assert res["reproduce_wall_minutes"] > 0 and len(res["reproduce_calls"]) == 1
    assert res["reproduce_reused_runs"] == []  # a fresh runs folder: everything trained here
    # the lever study: one run per setting; runs with flip TTA and EMA also measure each off
    levers = res["levers"]
    assert [r["key"] for r in levers] == list(LEVER_SETTINGS)
    for r in levers:
        over = LEVER_SETTINGS[r["key"]][1]
        levers_on = {"no_tta": over.get("tta"), "no_ema": over.get("ema_decay")}
        assert set(r["ablation"]) == {k for k, on in levers_on.items() if on}
    assert any(r["ablation"]["no_tta"]["mean_ap"] != r["mean_ap"] for r in levers if r["ablation"])
    # the Mask R-CNN ablation's inference sides scale with its trained side (full: 320 to 640)
    ablation = res["maskrcnn_ablation"]
    sides = [r["short_side"] for r in ablation["inference_short_side"]]
    trained = ablation["trained_short_side"]
    assert sides == [round(trained * s) for s in (0.8, 1.0, 1.28, 1.6)] and trained in sides
    tex, figs, _ = report_inputs()
    missing = [name for name in tex + figs if not (gen / name).is_file()]
    assert not missing, missing


def test_quick_tables_match_results_json(quick_run):
    check_tables(quick_run / "generated")


def test_second_run_reuses_finished_runs_and_resumes_unfinished(quick_run, quick_data, tmp_path):
    gen = quick_run / "generated"
    before = json.loads((gen / "results.json").read_text())
    mtime = (quick_run / "unet" / "checkpoint.pt").stat().st_mtime
    # an interrupted run: its results are gone, its last checkpoint is there
    runs = tmp_path / "runs"
    shutil.copytree(quick_run, runs)
    (runs / "baseconv" / "results_val.json").unlink()
    (runs / "baseconv" / "results_test.json").unlink()
    argv = ["reproduce", "--quick", "--device", "cpu", "--data-dir", str(quick_data),
            "--runs", str(runs), "--out", str(runs / "generated")]  # fmt: skip
    assert main(argv) == 0
    assert (quick_run / "unet" / "checkpoint.pt").stat().st_mtime == mtime  # not retrained
    after = json.loads((runs / "generated" / "results.json").read_text())
    assert after["models"]["unet"] == before["models"]["unet"]
    # baseconv resumed from its last checkpoint: every epoch already done, same numbers
    assert after["models"]["baseconv"]["val"]["mean_ap"] == pytest.approx(
        before["models"]["baseconv"]["val"]["mean_ap"], abs=1e-9
    )


def test_finished_run_with_another_config_is_refused(quick_run, quick_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(quick_run, runs)
    res = runs / "unet" / "results_val.json"
    data = json.loads(res.read_text())
    data["config"]["lr"] = 0.5
    res.write_text(json.dumps(data))
    argv = ["reproduce", "--quick", "--device", "cpu", "--data-dir", str(quick_data),
            "--runs", str(runs), "--out", str(runs / "generated")]  # fmt: skip
    assert main(argv) == 2
    assert "lr differ" in capsys.readouterr().err


def test_jobs_below_one_is_refused(quick_data, tmp_path, capsys):
    argv = ["reproduce", "--quick", "--jobs", "0", "--data-dir", str(quick_data),
            "--runs", str(tmp_path), "--out", str(tmp_path / "generated")]  # fmt: skip
    assert main(argv) == 2
    assert "jobs must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="LaTeX not installed")
def test_pdf_builds_from_the_quick_run(quick_run, tmp_path):
    shutil.copytree(quick_run / "generated", tmp_path / "generated")
    for name in ("main.tex", "author.tex"):
        shutil.copy(ROOT / "report" / name, tmp_path / name)
    pdf = build_pdf(tmp_path)
    assert pdf.is_file() and pdf.stat().st_size > 10_000


def test_wall_clock_sums_the_calls_of_one_reproduction(tmp_path):
    # a call killed midway left its heartbeat: 5 minutes, the reproduction not finished
    ledger = tmp_path / WALL_LEDGER
    ledger.write_text(json.dumps({"calls": [{"started": "2026-01-01T00:00:00", "minutes": 5.0}]}))
    # a call that stops on an error keeps its minutes; the heartbeat wrote while it ran
    with pytest.raises(RuntimeError), WallClock(tmp_path, interval=0.05) as failed:
        first = json.loads(ledger.read_text())["calls"][-1]["minutes"]
        time.sleep(0.5)
        assert json.loads(ledger.read_text())["calls"][-1]["minutes"] - first > 0.2 / 60
        raise RuntimeError("a worker died")
    assert not failed._thread.is_alive() and not (tmp_path / "reproduce.lock").exists()
    assert len(failed.calls) == 2 and failed.minutes >= 5 + 0.5 / 60
    # the call that completes adds its minutes and marks the reproduction finished
    with WallClock(tmp_path, interval=60) as done:
        pass
    assert len(done.calls) == 3 and done.minutes == pytest.approx(failed.minutes, abs=0.01)
    assert json.loads(ledger.read_text()) == {"finished": True, "calls": done.calls}
    # a finished reproduction, or --force, starts a new ledger
    with WallClock(tmp_path, interval=60) as after:
        pass
    assert len(after.calls) == 1
    ledger.write_text(json.dumps({"calls": done.calls}))  # unfinished again
    with WallClock(tmp_path, interval=60, fresh=True) as forced:
        pass
    assert len(forced.calls) == 1


def test_wall_clock_refuses_a_second_reproduction_on_one_runs_folder(tmp_path):
    lock = tmp_path / "reproduce.lock"
    lock.write_text(str(os.getpid()))  # a live process holds it
    with pytest.raises(SegkitError, match=rf"pid {os.getpid()}.*already running"):
        WallClock(tmp_path).__enter__()
    lock.write_text("999999999")  # no such process: a stale lock of a killed call is taken over
    with WallClock(tmp_path, interval=60):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_wall_clock_names_runs_finished_before_the_first_call(tmp_path):
    old, new = tmp_path / "lever_inverse", tmp_path / "unet"
    for d in (old, new, tmp_path / "baseconv"):  # baseconv: never finished
        d.mkdir()
    (old / "results_val.json").write_text("{}")
    os.utime(old / "results_val.json", (1e9, 1e9))  # finished in 2001
    with WallClock(tmp_path, interval=60) as clock:
        (new / "results_val.json").write_text("{}")
    assert clock.reused([old, new, tmp_path / "baseconv"]) == ["lever_inverse"]

"""The benchmark scripts run and print what they promise: ``bench/train_speed.py`` (table and a
JSON line with the throughput ratios) and ``bench/gpu_check.sh`` in its CPU dry modes (every command
of the GPU check parses; the slow test also runs one tiny training and train_speed through it).

Data: the session's tiny synthetic dataset (the ``quick_data`` fixture): these tests check what
the scripts print, not how fast training is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "bench" / "gpu_check.sh"
TRAIN_SPEED = ROOT / "bench" / "train_speed.py"


@pytest.fixture(scope="module")
def sbd_root(quick_data: Path) -> Path:
    """The session's tiny synthetic data (64 x 96 images): the benches' plumbing, not speed."""
    return quick_data


def _run(cmd: list[str], root: Path, tmp_path: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGKIT_DATA": str(root), "PYTHON": sys.executable, "OUT": str(tmp_path)}
    env.pop("DRY_RUN", None)
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a timed training bench: about 10 s
def test_train_speed_prints_table_and_ratios(sbd_root: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, str(TRAIN_SPEED), "--model", "baseconv", "--steps", "2", "--rounds",
           "1", "--batch-size", "2", "--threads", "1", "--device", "cpu"]  # fmt: skip
    res = _run(cmd, sbd_root, tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for row in ("plain (assignment-style)", "segkit engine", "pure model step", "data wait"):
        assert row in out
    summary = _last_json(out)
    assert summary["bench"] == "train_speed" and summary["steps"] == 2
    assert set(summary["images_per_s"]) == {"plain", "segkit", "pure"}
    assert all(v > 0 for v in summary["images_per_s"].values())
    ratios = summary["ratios"]
    for key in ("segkit_vs_plain", "segkit_vs_pure", "pure_vs_plain"):
        assert ratios[key] > 0
    assert ratios["segkit_vs_plain"] == pytest.approx(
        summary["images_per_s"]["segkit"] / summary["images_per_s"]["plain"]
    )
    # the share of an epoch spent evaluating: validation seconds over (epoch training + them)
    assert "so evaluating is" in out
    assert 0 < summary["eval_forward_seconds"] <= summary["eval_seconds"] * 1.5
    assert 0 < summary["eval_share_of_epoch"] < 1
    assert 0 <= summary["data_share"]["segkit"] < 1
    assert f"segkit: {ratios['segkit_vs_plain']:.2f}x the plain loop" in out


def test_train_speed_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("train_speed", TRAIN_SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exc:
        module.build_parser().parse_args(["--model", "nope"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    args = module.build_parser().parse_args(["--device", "cuda", "--no-amp", "--compile"])
    assert (args.device, args.amp, args.compile, args.bf16_cpu) == ("cuda", False, True, False)


def _check_tables(out: Path, stdout: str) -> dict:
    table = (out / "gpu_check" / "table.md").read_text()
    assert "| model | amp | s / epoch (train + val) | val AP | train img/s (epoch) |" in table
    assert table.strip() in stdout
    summary = json.loads((out / "gpu_check" / "summary.json").read_text())
    models = {(r["model"], r["amp"]) for r in summary["train"]}
    names = ("baseconv", "unet", "resnet18", "resnet18_unet", "effnet_unet")
    assert models == {(m, amp) for m in names for amp in (True, False)}
    assert {r["name"] for r in summary["speed"]} == {
        "speed_unet", "speed_effnet_unet", "speed_unet_compile"
    }  # fmt: skip
    return summary


def test_gpu_check_parse_dry_run(sbd_root: Path, tmp_path: Path) -> None:
    """Every command of the GPU check, in its CPU and its CUDA form, parses (~15 s)."""
    res = _run(["bash", str(GPU_CHECK), "--dry-run=parse"], sbd_root, tmp_path, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "commands parse (dry and real forms" in res.stdout
    summary = _check_tables(tmp_path, res.stdout)
    assert all(r["status"] == "parsed" for r in summary["train"] + summary["speed"])
    assert (tmp_path / "gpu_check" / "logs.tar.gz").is_file()
    # the GPU reproduction's plan and the reproduction itself are among the checked commands
    other = {o["name"]: o["status"] for o in summary["other"]}
    assert other["plan_cuda"] == other["gpu_reproduce"] == "parsed"


def test_gpu_check_rejects_unknown_argument() -> None:
    res = subprocess.run(
        ["bash", str(GPU_CHECK), "--dryrun"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 2 and "unknown argument" in res.stderr


@pytest.mark.slow
def test_gpu_check_dry_run(sbd_root: Path, tmp_path: Path) -> None:
    """``--dry-run``: parses everything, collects the gpu tests, and runs one tiny training and
    one tiny train_speed end to end on the CPU (~50 s on 2 busy cores, hence slow)."""
    res = _run(["bash", str(GPU_CHECK), "--dry-run"], sbd_root, tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = _check_tables(tmp_path, res.stdout)
    ran = [r for r in summary["train"] if r["status"] == "ok"]
    assert len(ran) == 1 and 0 <= ran[0]["val_ap"] <= 1 and ran[0]["images_per_s"] > 0
    speed = next(r for r in summary["speed"] if r["name"] == "speed_unet")
    assert speed["status"] == "ok" and speed["ratios"]["segkit_vs_plain"] > 0
    assert [(o["name"], o["status"]) for o in summary["other"]] == [("gpu_tests", "ok")]


@pytest.mark.slow  # three spawned interpreters: about 25 s
def test_side_by_side_prints_both_layouts_and_their_ratio(tmp_path, sbd_root):
    cmd = [sys.executable, str(ROOT / "bench" / "side_by_side.py"), "--model", "baseconv",
           "--steps", "1", "--batch-size", "1", "--image-size", "64", "96"]  # fmt: skip
    out = _run(cmd, sbd_root, tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    row = _last_json(out.stdout)
    assert row["ratio"] == pytest.approx(row["side_by_side_img_s"] / row["one_process_img_s"])
    assert "side by side / one process" in out.stdout

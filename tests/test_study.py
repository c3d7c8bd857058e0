"""The seed study: what seeds.json records, on a tiny budget."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from segkit import recipe
from segkit.config import LEVERS
from segkit.metrics.mask_ap import InstanceEvaluator
from segkit.report_q1 import sweep_macros
from segkit.study import (
    SWEEP_CROP_MIN,
    SWEEP_FLIP_P,
    SWEEP_SEEDS,
    compare_instance_runs,
    seed_study,
    sweep_configs,
)
from segkit.viz import plot_augment_sweep


def test_seed_study_records_runs_spread_and_levers(synthetic_root, tmp_path):
    tiny = dict(limit_train=4, limit_val=2, batch_size=2, warmup_steps=0, num_threads=1)
    rows = seed_study(("baseconv",), (0, 1), 1, data_dir=str(synthetic_root),
                      out_dir=str(tmp_path), device="cpu", **tiny)  # fmt: skip
    (entry,) = rows
    aps = [r["mean_ap"] for r in entry["runs"]]
    assert [r["seed"] for r in entry["runs"]] == [0, 1]
    assert entry["spread"] == max(aps) - min(aps)
    assert entry["std"] == statistics.stdev(aps)
    # the levers the runs trained with (today's recipe), so the report can name them
    assert entry["levers"] == {k: getattr(recipe("baseconv"), k) for k in LEVERS}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed_baseconv_0", "seed_baseconv_1"]


# ------------------------------------------------------------------------------ the Q1 sweep
def test_sweep_varies_one_factor_at_a_time_around_the_recipe():
    by = sweep_configs(recipe("effnet_unet", epochs=2))
    base = recipe("effnet_unet")
    centre = (base.aug_scale, base.flip_p)
    assert [c.flip_p for c in by["flip"]] == list(SWEEP_FLIP_P)
    assert {c.aug_scale for c in by["flip"]} == {centre[0]}  # crop fixed at the recipe's
    assert [c.aug_scale for c in by["crop"]] == [(c, 1.0) for c in SWEEP_CROP_MIN]
    assert {c.flip_p for c in by["crop"]} == {centre[1]}  # flip fixed at the recipe's
    assert [c.seed for c in by["seeds"]] == list(SWEEP_SEEDS)
    assert {(c.aug_scale, c.flip_p) for c in by["seeds"]} == {centre}
    every = [c for cs in by.values() for c in cs]
    names = {c.name for c in every}
    assert len(names) == len(SWEEP_FLIP_P) + len(SWEEP_CROP_MIN) - 1 + len(SWEEP_SEEDS) - 1
    # same name, same config: a point shared by two factors is one run folder
    for n in names:
        assert len({repr(c.to_dict()) for c in every if c.name == n}) == 1
    # apart from augmentation, seed and name, every run is the recipe (same model and budget)
    skip = {"aug_scale", "flip_p", "seed", "run_name", "extra"}
    ref = {k: v for k, v in by["flip"][0].to_dict().items() if k not in skip}
    for c in every:
        assert {k: v for k, v in c.to_dict().items() if k not in skip} == ref


def _sweep(flip: list[float], crop: list[float], seeds: list[float]) -> dict:
    hw = "CPU x86_64 (2 cores, 1 torch threads), torch"
    row = lambda c, f, s, ap: dict(crop_min=c, flip_p=f, seed=s, mean_ap=ap,  # noqa: E731
                                   train_seconds=60.0, hardware=hw)  # fmt: skip
    return {
        "model": "effnet_unet", "epochs": 2, "train_seconds": 600.0,
        "flip": [row(0.5, p, 0, a) for p, a in zip(SWEEP_FLIP_P, flip, strict=True)],
        "crop": [row(c, 0.5, 0, a) for c, a in zip(SWEEP_CROP_MIN, crop, strict=True)],
        "seeds": [row(0.5, 0.5, s, a) for s, a in zip(SWEEP_SEEDS, seeds, strict=True)],
    }  # fmt: skip


def test_sweep_verdicts_follow_the_numbers():
    quiet = _sweep([0.60, 0.61, 0.62, 0.60, 0.61], [0.60, 0.62, 0.62, 0.61, 0.60],
                   [0.62, 0.58, 0.64, 0.60])  # fmt: skip
    m = sweep_macros({"augment_sweep": quiet})
    assert m["SweepSpread"] == "0.060" and m["SweepFlipRange"] == "0.020"
    assert m["SweepFlipVerdict"] == m["SweepCropVerdict"] == "within"
    assert "neither factor" in m["SweepConclusion"] and m["SweepRuns"] == "12"
    assert "the 2-core CPU, one torch thread per run" in m["SweepMinutesSentence"]
    loud = _sweep([0.40, 0.61, 0.62, 0.60, 0.61], [0.60, 0.62, 0.62, 0.61, 0.60],
                  [0.62, 0.61, 0.62, 0.60])  # fmt: skip
    m = sweep_macros({"augment_sweep": loud})
    assert m["SweepFlipVerdict"] == "larger than" and m["SweepCropVerdict"] == "within"
    assert m["SweepFlipWorst"] == "0" and "Only the flip probability" in m["SweepConclusion"]
    fig = plot_augment_sweep(loud)
    assert len(fig.axes) == 2


def test_compare_instance_runs_reads_both_runs_matches(tmp_path, capsys):
    gt = np.zeros((10, 10), np.int64)
    gt[:5, :5], gt[5:, 5:] = 1, 2
    half = gt.copy()
    half[5:, 5:] = 0  # finds one person of two
    for run, pred in (("a", half), ("b", gt)):
        ev = InstanceEvaluator()
        for _ in range(6):
            ev.update(pred, np.ones(int(pred.max())), gt)
        (tmp_path / run).mkdir()
        ev.save(tmp_path / run / "matches_test.npz")
    out = compare_instance_runs(tmp_path / "a", tmp_path / "b", resamples=50)
    assert out["a"] == "a" and out["ci"]["b"]["ap"] == [1.0, 1.0]
    # a finds half the people at precision 1: 51 of the 101 recall points (COCO), b all
    assert out["paired"]["diff"] == pytest.approx(1 - 51 / 101) and out["paired"]["b_better"] == 1
    (tmp_path / "a" / "matches_test.npz").unlink()
    out = compare_instance_runs(tmp_path / "a", tmp_path / "b", resamples=50)
    assert "paired" not in out and set(out["ci"]) == {"b"}
    assert "matches_test.npz is missing" in capsys.readouterr().out

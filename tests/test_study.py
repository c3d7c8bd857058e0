"""The seed study: what seeds.json records, on a tiny budget."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from segkit import recipe
from segkit.config import LEVERS, MaskRCNNConfig
from segkit.metrics.mask_ap import InstanceEvaluator
from segkit.report_bonus import levers_macros
from segkit.report_q1 import sweep_macros, weighting_macros
from segkit.report_tables import table_maskrcnn_levers
from segkit.study import (
    MASKRCNN_LEVERS,
    MASKRCNN_RECIPE,
    SWEEP_CROP_MIN,
    SWEEP_FLIP_P,
    SWEEP_SEEDS,
    compare_instance_runs,
    maskrcnn_lever_configs,
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
    assert "SweepBelowSeeds" not in m and "SweepNoneAboveSeeds" in m  # all within [0.58, 0.64]
    assert "the 2-core CPU, one torch thread per run" in m["SweepMinutesSentence"]
    loud = _sweep([0.40, 0.61, 0.62, 0.60, 0.61], [0.60, 0.62, 0.62, 0.61, 0.60],
                  [0.62, 0.61, 0.62, 0.60])  # fmt: skip
    m = sweep_macros({"augment_sweep": loud})
    assert m["SweepFlipVerdict"] == "well beyond" and m["SweepCropVerdict"] == "within"
    assert m["SweepFlipWorst"] == "0" and "Only the flip probability" in m["SweepConclusion"]
    assert m["SweepBelowSeeds"] == "$p=0$ (0.400)"  # the one run under every seed (0.60 to 0.62)
    assert "SweepNoneAboveSeeds" in m
    fig = plot_augment_sweep(loud)
    assert len(fig.axes) == 2
    # a range between one and 1.5 seed spreads is seed-sized, not an effect (spread 0.020 here)
    sized = _sweep([0.60, 0.61, 0.625, 0.60, 0.61], [0.60, 0.62, 0.62, 0.61, 0.60],
                   [0.62, 0.61, 0.62, 0.60])  # fmt: skip
    m = sweep_macros({"augment_sweep": sized})
    assert m["SweepFlipVerdict"] == "about the size of" and m["SweepCropVerdict"] == "within"
    assert m["SweepConclusion"].startswith("Neither factor's range clearly exceeds the seed noise")


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


# ------------------------------------------------------------------ the Mask R-CNN lever study
def test_mask_rcnn_levers_change_one_field_each_from_the_recipe():
    base = MaskRCNNConfig()
    runs = maskrcnn_lever_configs(base, epochs=3, seeds=(5, 6))
    labels = [label for label, _ in runs]
    assert labels == [MASKRCNN_RECIPE, MASKRCNN_RECIPE, *list(MASKRCNN_LEVERS)[1:]]
    assert [c.seed for _, c in runs] == [5, 6] + [5] * (len(runs) - 2)  # levers at the first seed
    assert len({c.run_name for _, c in runs}) == len(runs)  # one folder per run
    fields = {f for f in base.to_dict() if f not in ("seed", "epochs", "run_name")}
    for label, cfg in runs:
        assert cfg.epochs == 3
        changed = {f for f in fields if getattr(cfg, f) != getattr(base, f)}
        assert changed == set(MASKRCNN_LEVERS[label]), label
    changes = [MASKRCNN_LEVERS[label] for label in labels[2:]]
    assert {"scheduler": "none"} in changes and {"anchor_size": 16} in changes
    assert {"frozen_stages": 4} in changes and any("short_side" in c for c in changes)


def _levers(aps: dict[tuple[str, int], float]) -> dict:
    rows = [{"lever": lever, "seed": seed, "ap": ap, "ap50": 0.9, "ap75": 0.5,
             "train_seconds": 600.0} for (lever, seed), ap in aps.items()]  # fmt: skip
    recipe = [ap for (lever, _), ap in aps.items() if lever == MASKRCNN_RECIPE]
    return {"epochs": 4, "split": "val", "rows": rows, "spread": max(recipe) - min(recipe),
            "train_seconds": 600.0 * len(rows)}  # fmt: skip


def test_lever_verdict_counts_only_changes_beyond_the_recipe_seed_spread():
    levers = _levers({(MASKRCNN_RECIPE, 0): 0.50, (MASKRCNN_RECIPE, 1): 0.52,  # mean 0.51
                      ("constant learning rate", 0): 0.525, ("4 frozen stages", 0): 0.44,
                      ("anchors 16 to 256", 0): 0.56})  # fmt: skip
    m = levers_macros(levers)
    assert m["LevRecipeAP"] == "0.510" and m["LevSpread"] == "0.020" and m["LevRuns"] == "5"
    assert m["LevVerdict"] == (
        "4 frozen stages lowered it by 0.070 (more than twice that spread) and anchors 16 to 256 "
        "raised it by 0.050 (more than twice that spread); constant learning rate moved it by no "
        "more than the spread, which these runs cannot tell from seed noise"
    )
    weak = levers_macros(_levers({(MASKRCNN_RECIPE, 0): 0.50, (MASKRCNN_RECIPE, 1): 0.52,
                                  ("4 frozen stages", 0): 0.54}))  # fmt: skip
    assert weak["LevVerdict"] == (
        "4 frozen stages raised it by 0.030 (just beyond the spread, weak evidence with 2 seeds)"
    )
    assert m["LevBestAP"] == "0.560" and m["LevBestRun"] == "anchors 16 to 256"
    assert m["LevMinutes"] == "50" and m["LevRunMinutes"] == "10"
    tex = table_maskrcnn_levers({"maskrcnn_levers": levers})
    assert "4 frozen stages & 0 & 0.440 & 0.900 & 0.500 & $-$0.070 & 10" in tex
    assert "Recipe & 1 & 0.520 & 0.900 & 0.500 & -- & 10" in tex
    assert "(0.510); their spread, 0.020," in tex
    quiet = levers_macros(_levers({(MASKRCNN_RECIPE, 0): 0.5, (MASKRCNN_RECIPE, 1): 0.6,
                                   ("4 frozen stages", 0): 0.52}))  # fmt: skip
    assert quiet["LevVerdict"].startswith("4 frozen stages moved it by no more than the spread")
    assert table_maskrcnn_levers({}).startswith("%") and levers_macros(None) == {}


def _lever(key: str, ap: float, iou: float, acc: float) -> dict:
    return {"key": key, "mean_ap": ap, "miou": iou, "pixel_acc": acc}


def test_weighting_verdict_reads_each_difference_against_two_run_noise():
    """Q4: the square root minus inverse weights, metric by metric, against two standard
    deviations of the difference of two single runs, sqrt(2) x the seeds' std, under the seed
    study (without the levers) and the sweep's centre (with them). Hand-computed:
    differences AP 0.030, mIoU 0.060, accuracy 0.250; two-run std, study: 0.070, 0.100, 0.100;
    sweep: 0.037, 0.024, 0.021."""
    levers = [_lever("levers", 0.63, 0.46, 0.95), _lever("levers_inverse", 0.60, 0.40, 0.70)]
    seeds = {"runs": [{"mean_ap": a, "miou": i, "pixel_acc": c}
                      for a, i, c in ((0.50, 0.30, 0.60), (0.57, 0.40, 0.70))]}  # fmt: skip
    sweep = _sweep([0.6] * 5, [0.6] * 5, [0.62, 0.58, 0.64, 0.60])
    for row, (iou, acc) in zip(
        sweep["seeds"], ((0.40, 0.7), (0.42, 0.72), (0.44, 0.7), (0.41, 0.73)), strict=True
    ):
        row |= {"miou": iou, "pixel_acc": acc}
    m = weighting_macros({"levers": levers, "seeds": seeds, "augment_sweep": sweep})
    text = m["WeightingVerdict"]
    assert (
        "(without the levers, then with the levers: AP 0.070 and 0.037; mIoU 0.100 and 0.024;"
        in text
    )
    assert (
        "The difference in AP (0.030) is within two of those standard deviations for both" in text
    )
    assert (
        "the difference in mIoU (0.060) is beyond two of those standard deviations only with "
        "the levers" in text
    )
    assert (
        "the difference in pixel accuracy (0.250) is beyond two of those standard deviations "
        "for both" in text
    )
    assert "a lead for more seeds to confirm" in text and "WeightingAPWithin" in m
    # sweep rows without mIoU (an older file): the seed study alone
    bare = _sweep([0.6] * 5, [0.6] * 5, [0.62, 0.58, 0.64, 0.60])
    assert "SweepIoUSpread" not in sweep_macros({"augment_sweep": bare})
    m = weighting_macros({"levers": levers, "seeds": seeds, "augment_sweep": bare})
    text = m["WeightingVerdict"]
    assert "The differences in AP (0.030) and mIoU (0.060) are within two of those standard" in text
    assert (
        "the difference in pixel accuracy (0.250) is beyond two of those standard deviations."
        in text
    )
    quiet = [_lever("levers", 0.61, 0.41, 0.71), _lever("levers_inverse", 0.60, 0.40, 0.70)]
    m = weighting_macros({"levers": quiet, "seeds": seeds, "augment_sweep": sweep})
    assert m["WeightingVerdict"].endswith("none of these differences is established.")
    assert weighting_macros({"levers": levers}) == {}  # no repeated seeds: no noise claim

import json
from pathlib import Path

import pytest

from segkit.cli import build_parser, config_from_args, main


def test_flags_come_from_the_config():
    args = build_parser().parse_args(
        [
            "train",
            "--model",
            "unet",
            "--epochs",
            "3",
            "--aug-scale",
            "0.8,1",
            "--no-amp",
            "--weights",
            "none",
            "--early-stop",
            "2",
        ]
    )
    cfg = config_from_args(args)
    assert (cfg.model, cfg.epochs, cfg.aug_scale, cfg.amp, cfg.weights, cfg.early_stop) == (
        "unet",
        3,
        (0.8, 1.0),
        False,
        None,
        2,
    )
    assert cfg.lr == 1e-3  # untouched fields keep the recipe's values


def test_unknown_model_is_a_clear_error(capsys, data_root):
    assert main(["train", "--model", "nope", "--quick", "--data-dir", str(data_root)]) == 2
    assert "unknown model 'nope'; available" in capsys.readouterr().err
    assert not (Path("runs") / "quick" / "nope").exists()  # nothing written for a bad name


def test_missing_data_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEGKIT_DATA", raising=False)
    assert main(["train", "--quick", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path)]) == 2
    assert "dataset 'sbd' not found" in capsys.readouterr().err


def test_one_epoch_train_then_evaluate(tmp_path, data_root, capsys):
    rc = main(
        [
            "train",
            "--model",
            "baseconv",
            "--quick",
            "--limit-train",
            "4",
            "--limit-val",
            "2",
            "--batch-size",
            "2",
            "--data-dir",
            str(data_root),
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    run = tmp_path / "baseconv"
    for name in (
        "checkpoint.pt",
        "checkpoint_last.pt",
        "history.json",
        "results_val.json",
        "loss_curve.png",
        "confusion_val.png",
        "predictions_test.png",
    ):
        assert (run / name).is_file(), name
    res = json.loads((run / "results_val.json").read_text())
    assert res["config"]["epochs"] == 1 and res["split"] == "val"
    assert len(res["metrics"]["ap"]) == 9
    assert (
        main(["evaluate", str(run), "--split", "val", "--limit", "2", "--data-dir", str(data_root)])
        == 0
    )
    again = json.loads((run / "eval_val.json").read_text())
    assert json.loads((run / "results_val.json").read_text()) == res  # kept as trained
    # the checkpoint's model, evaluated again on the same images, gives the same numbers
    assert again["metrics"]["mean_ap"] == pytest.approx(res["metrics"]["mean_ap"], abs=1e-6)
    assert "val: mean AP" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("model, bar", [("effnet_unet", 0.68), ("unet", 0.60), ("baseconv", 0.52)])
def test_full_recipe_reaches_its_bar(model, bar, tmp_path, data_root):
    """The full recipes on the real data (tens of minutes each on a 2-core CPU)."""
    from segkit.config import recipe
    from segkit.experiment import run_experiment

    out = run_experiment(
        recipe(model, data_dir=str(data_root), out_dir=str(tmp_path)), progress=False, figures=False
    )
    assert out["metrics"]["mean_ap"] >= bar

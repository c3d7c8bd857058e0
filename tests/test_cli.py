import json

import pytest
import torch

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


def test_invalid_values_are_rejected_naming_the_valid_ones(capsys):
    for argv, expect in (
        (["train", "--model", "nope"], "choose from 'baseconv', 'unet'"),
        (["train", "--aug-ratio", "none"], "expected two numbers 'A,B', got 'none'"),
        (["train", "--scheduler", "cosin"], "choose from 'cosine', 'plateau', 'none'"),
        (["train", "--epochs", "three"], "expected int, got 'three'"),
        (["trian"], "invalid choice: 'trian'"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert expect in capsys.readouterr().err, argv


def test_every_train_flag_has_help_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "``" not in out and ":class:" not in out  # no raw reStructuredText
    for flag in ("--epochs", "--lr", "--aug-scale", "--class-weighting", "--weights", "--seed"):
        assert flag in out
    assert out.count("(default:") >= 25
    assert "{baseconv,unet,resnet18,resnet18_unet,effnet_unet," in out


def test_missing_data_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SEGKIT_DATA", raising=False)
    assert main(["train", "--quick", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path)]) == 2
    assert "dataset 'sbd' not found" in capsys.readouterr().err


def test_one_epoch_train_then_evaluate(tmp_path, quick_data, capsys):
    rc = main(
        [
            "train",
            "--model",
            "baseconv",
            "--quick",
            "--epochs",
            "3",
            "--limit-train",
            "4",
            "--limit-val",
            "2",
            "--batch-size",
            "2",
            "--data-dir",
            str(quick_data),
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
    assert res["config"]["epochs"] == 3 and res["split"] == "val"  # the quick recipe
    assert len(res["metrics"]["ap"]) == 9
    assert (
        main(
            ["evaluate", str(run), "--split", "val", "--limit", "2", "--data-dir", str(quick_data)]
        )
        == 0
    )
    again = json.loads((run / "eval_val.json").read_text())
    assert json.loads((run / "results_val.json").read_text()) == res  # kept as trained
    # the checkpoint's model, evaluated again on the same images, gives the same numbers
    assert again["metrics"]["mean_ap"] == pytest.approx(res["metrics"]["mean_ap"], abs=1e-6)
    assert "val: mean AP" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("model, bar", [("effnet_unet", 0.68), ("unet", 0.60), ("baseconv", 0.52)])
def test_full_recipe_reaches_its_bar(model, bar, tmp_path, real_data):
    """The full recipes on the real data (tens of minutes each on a 2-core CPU)."""
    from segkit.config import recipe
    from segkit.experiment import run_experiment

    out = run_experiment(
        recipe(model, data_dir=str(real_data), out_dir=str(tmp_path)), progress=False, figures=False
    )
    assert out["metrics"]["mean_ap"] >= bar


# ------------------------------------------------------------ faults end in one clear message
def _quick_argv(data_root, out, *extra):
    return ["train", "--model", "baseconv", "--epochs", "1", "--limit-train", "4",
            "--limit-val", "2", "--batch-size", "2", "--no-figures",
            "--data-dir", str(data_root), "--out-dir", str(out), *extra]  # fmt: skip


def test_divergence_is_one_message_with_nonzero_exit(tmp_path, quick_data, capsys):
    assert main(_quick_argv(quick_data, tmp_path, "--lr", "1e9")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 2
    assert "run 'baseconv', epoch 1" in err and "learning rate" in err
    assert "average precision" not in err  # NaN never reaches the metrics


def test_resume_with_changed_config_is_refused(tmp_path, quick_data, capsys):
    assert main(_quick_argv(quick_data, tmp_path)) == 0
    argv = _quick_argv(quick_data, tmp_path, "--resume", "--lr", "0.1", "--seed", "7")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "lr 0.001 -> 0.1" in err and "seed 0 -> 7" in err
    # more epochs is allowed; results record the config used and the time across resumes
    argv = _quick_argv(quick_data, tmp_path, "--resume")
    argv[argv.index("--epochs") + 1] = "2"
    assert main(argv) == 0
    res = json.loads((tmp_path / "baseconv" / "results_val.json").read_text())
    hist = json.loads((tmp_path / "baseconv" / "history.json").read_text())
    assert res["config"]["epochs"] == 2 and res["epochs_run"] == 2
    assert res["train_seconds"] == pytest.approx(sum(hist["seconds"]))


def test_bad_weights_and_checkpoints_name_the_file(tmp_path, quick_data, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02not a pickle" * 50)
    argv = [
        "train",
        "--model",
        "resnet18",
        "--weights",
        str(garbage),
        "--data-dir",
        str(quick_data),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(garbage) in err and "weights_only=False" not in err and "Traceback" not in err

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}}, run / "checkpoint.pt")  # no config
    assert main(["evaluate", str(run), "--data-dir", str(quick_data)]) == 2
    err = capsys.readouterr().err
    assert str(run / "checkpoint.pt") in err and "config" in err and "'config'" not in err[:20]

    # a checkpoint of another model: one short line, not a dump of state-dict keys
    from segkit.config import TrainConfig
    from segkit.models import create_model

    ck = {
        "model": create_model("baseconv").state_dict(),
        "config": TrainConfig(model="unet").to_dict(),
    }
    ck["config"]["model"] = "unet"
    torch.save(ck, run / "checkpoint.pt")
    assert main(["evaluate", str(run), "--data-dir", str(quick_data)]) == 2
    err = capsys.readouterr().err
    assert str(run / "checkpoint.pt") in err and len(err) < 400

    # an instance checkpoint given to `segkit evaluate`: today's (task) and an old one (no task,
    # but num_energy_levels)
    semantic = dict(ck["config"])
    for config in (
        {**semantic, "task": "watershed"},
        {**{k: v for k, v in semantic.items() if k != "task"}, "num_energy_levels": 16},
    ):
        torch.save({**ck, "config": config}, run / "checkpoint.pt")
        assert main(["evaluate", str(run), "--data-dir", str(quick_data)]) == 2
        err = capsys.readouterr().err
        assert "holds a watershed 'unet' checkpoint" in err and "expected a semantic run" in err


@pytest.mark.parametrize(
    "argv",
    [["study", "--lever"], ["reproduce", "--job", "2"], ["train", "--epoch", "3"],
     ["instance", "levers", "--seed", "0"], ["instance", "levers", "--epoch", "2"]],
)  # fmt: skip
def test_abbreviated_flags_are_refused(argv, capsys):
    # argparse would read --lever as --levers and start half an hour of training; parse only
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_a_misspelt_instance_subcommand_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["instance", "lever"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'lever'" in err and "'levers'" in err


@pytest.mark.parametrize(
    "argv", [["instance", "levers", "--epochs", "0"], ["study", "--epochs", "0"],
             ["study", "--sweep", "--epochs", "-2"]],
)  # fmt: skip
def test_study_epochs_below_one_are_refused_before_anything_runs(argv, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main([*argv, "--out", str(out), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segkit: error: epochs must be at least 1") and err.count("\n") == 1
    assert not out.exists() and not any(tmp_path.iterdir())  # no run folder, no JSON

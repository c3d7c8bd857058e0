"""The run skeleton (segkit.runner): one function runs every kind of run folder; a finished run is
reused without training, a changed config refused in one line naming the folder, an unfinished one
resumed; the three public run functions are thin calls of it; one loader for every task."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from segkit import runner
from segkit.checkpoint import CheckpointError, finished_results, save_checkpoint
from segkit.config import TASKS, InstanceConfig, MaskRCNNConfig, RunConfig, TrainConfig, task_field
from segkit.experiment import load_run_model, run_experiment
from segkit.instance import load_instance_run, train_instance
from segkit.maskrcnn import load_maskrcnn_run, train_maskrcnn
from segkit.runner import RUN_TASKS, Run, Task, load_run, postprocess_params, run_folder
from segkit.utils import SegkitError, write_json

HISTORY = {"epoch": [1, 2], "train_loss": [0.9, 0.5], "seconds": [1.5, 2.5], "best_epoch": 2}


@dataclass
class ToyConfig(RunConfig):
    """A config of a task that exists only in these tests."""

    task: str = task_field("toy")
    width: int = 3

    def default_name(self) -> str:
        return "toy"


def _spy_task(name: str, calls: list[str], fail_build: bool = False) -> Task:
    """A Task whose steps record their calls and return canned outputs (no training)."""

    def build_model(cfg: Any, init_weights: bool) -> nn.Module:
        calls.append(f"build_model init_weights={init_weights}")
        if fail_build:
            raise SegkitError("no such model")
        return nn.Linear(2, getattr(cfg, "width", 2))

    def load_data(run: Run) -> str:
        calls.append("load_data")
        assert run.run_dir.is_dir()  # the folder exists once the model is built
        return "data"

    def fit(run: Run, model: nn.Module, data: str) -> tuple[nn.Module, dict]:
        calls.append(f"fit resume_from={run.resume_from.name if run.resume_from else None}")
        save_checkpoint(run.best_path, model=model.state_dict(), config=run.cfg.to_dict())
        return model, dict(HISTORY)

    def evaluate(run: Run, model: nn.Module, data: str, history: dict) -> tuple[dict, str]:
        calls.append("evaluate")
        assert data == "data" and not (run.run_dir / "results_val.json").exists()
        return {**runner.run_summary(run, history), "metrics": {"ap": 0.5}}, "drawn"

    def figures(run: Run, history: dict, drawn: str) -> list[Path]:
        calls.append(f"figures {drawn}")
        return []

    return Task(
        name, build_model, load_data, fit, evaluate, figures,
        lambda d: TASKS[name].from_dict(d), f"a {name} run",
    )  # fmt: skip


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Register the toy task (config class and run); returns the list its steps append to."""
    calls: list[str] = []
    monkeypatch.setitem(TASKS, "toy", ToyConfig)
    monkeypatch.setitem(RUN_TASKS, "toy", _spy_task("toy", calls))
    return calls


def test_every_config_task_has_one_registered_run():
    assert set(RUN_TASKS) == set(TASKS) == {"semantic", "watershed", "maskrcnn"}
    assert all(task.name == name for name, task in RUN_TASKS.items())
    with pytest.raises(ValueError, match="already has a run"):
        runner.register_run_task(dataclasses.replace(RUN_TASKS["semantic"]))
    with pytest.raises(SegkitError, match="no run registered for task 'nope'"):
        runner.task_of("nope")


def test_a_run_goes_through_the_steps_in_order_and_writes_the_folder(tmp_path, toy):
    cfg = ToyConfig(out_dir=str(tmp_path))
    run_dir = tmp_path / "toy"
    run_dir.mkdir()
    stale = run_dir / "history.json.123.tmp"  # debris of a killed save
    stale.write_text("{")
    results, history = run_folder(cfg, progress=False)
    assert toy == ["build_model init_weights=True", "load_data", "fit resume_from=None",
                   "evaluate", "figures drawn"]  # fmt: skip
    assert not stale.exists()
    assert json.loads((run_dir / "history.json").read_text()) == history == HISTORY
    saved = json.loads((run_dir / "results_val.json").read_text())
    assert saved == results and saved["config"] == cfg.to_dict()
    assert (saved["run"], saved["split"], saved["epochs_run"], saved["best_epoch"]) == (
        "toy", "val", 2, 2,
    )  # fmt: skip
    assert saved["train_seconds"] == 4.0 and "hardware" in saved
    # the same loader serves every task: the config class, and a model without pretrained weights
    model, loaded = load_run(run_dir, "toy")
    assert loaded == cfg and not model.training and toy[-1] == "build_model init_weights=False"
    with pytest.raises(CheckpointError, match="holds a toy .*; expected a semantic run"):
        load_run_model(run_dir)


def test_a_finished_run_is_reused_without_training_and_a_changed_one_refused(tmp_path, toy):
    cfg = ToyConfig(out_dir=str(tmp_path))
    results, history = run_folder(cfg, progress=False, figures=False)
    del toy[:]
    # resume-safe fields (device, epochs, ...) may differ: still the same run
    again = run_folder(dataclasses.replace(cfg, device="cpu"), reuse=True)
    assert again == (results, history) and toy == []
    with pytest.raises(CheckpointError) as err:
        run_folder(dataclasses.replace(cfg, width=4, lr=0.5), reuse=True)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "toy") in message
    assert "lr, width differ" in message and toy == []


def test_an_unfinished_run_resumes_and_a_bad_model_makes_no_folder(tmp_path, toy, monkeypatch):
    cfg = ToyConfig(out_dir=str(tmp_path))
    run_dir = tmp_path / "toy"
    run_dir.mkdir()
    (run_dir / "checkpoint_last.pt").write_bytes(b"")  # an interrupted run: no results_val.json
    run_folder(cfg, progress=False, figures=False, reuse=True)
    assert "fit resume_from=checkpoint_last.pt" in toy
    calls: list[str] = []
    monkeypatch.setitem(RUN_TASKS, "toy", _spy_task("toy", calls, fail_build=True))
    with pytest.raises(SegkitError, match="no such model"):
        run_folder(ToyConfig(out_dir=str(tmp_path), run_name="never"), progress=False)
    assert not (tmp_path / "never").exists() and calls == ["build_model init_weights=True"]


@pytest.mark.parametrize(
    ("train", "cfg"),
    [(run_experiment, TrainConfig(model="baseconv")), (train_instance, InstanceConfig()),
     (train_maskrcnn, MaskRCNNConfig())],
)  # fmt: skip
def test_each_task_runs_through_the_one_skeleton(tmp_path, monkeypatch, train, cfg):
    """The public run functions only call run_folder: with the task's steps replaced by spies,
    they train nothing and return what the skeleton wrote."""
    calls: list[str] = []
    monkeypatch.setitem(RUN_TASKS, cfg.task, _spy_task(cfg.task, calls))
    cfg = dataclasses.replace(cfg, out_dir=str(tmp_path), device="cpu")
    out = train(cfg, progress=False, figures=True)
    assert calls == ["build_model init_weights=True", "load_data", "fit resume_from=None",
                     "evaluate", "figures drawn"]  # fmt: skip
    saved = json.loads((tmp_path / cfg.name / "results_val.json").read_text())
    returned = {k: v for k, v in out.items() if k != "history"}
    assert json.loads(json.dumps(returned)) == saved  # (JSON has lists for tuples)
    assert out.get("history", HISTORY) == HISTORY  # run_experiment also returns the history
    # and each refuses a changed finished run the same way, before anything is built
    del calls[:]
    with pytest.raises(CheckpointError, match=f"{tmp_path / cfg.name} holds a finished run"):
        train(dataclasses.replace(cfg, seed=1), progress=False, reuse=True)
    assert calls == []


def test_postprocess_params_read_the_file_else_the_defaults(tmp_path):
    defaults = {"score_threshold": 0.05, "mask_threshold": 0.5}
    assert postprocess_params(tmp_path, defaults) == defaults
    chosen = {"score_threshold": 0.3, "mask_threshold": 0.4}
    (tmp_path / "postprocess.json").write_text(json.dumps({"params": chosen}))
    assert postprocess_params(tmp_path, defaults) == chosen


def test_each_loader_refuses_a_run_of_another_task(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state = nn.Linear(2, 2).state_dict()
    save_checkpoint(run_dir / "checkpoint.pt", model=state, config=TrainConfig().to_dict())
    for load, expected in ((load_instance_run, "an instance run"),
                           (load_maskrcnn_run, "a Mask R-CNN run")):  # fmt: skip
        with pytest.raises(
            CheckpointError, match=f"semantic 'unet' checkpoint.*; expected {expected}"
        ):
            load(run_dir)
    with pytest.raises(CheckpointError, match="no such run folder"):
        load_run(tmp_path / "missing", "semantic")
    assert runner.run_task(run_dir) == "semantic"
    with pytest.raises(CheckpointError, match="does not fit a semantic 'unet' model"):
        load_run(run_dir, "semantic", torch.device("cpu"))


def test_a_finished_run_is_reused_only_for_its_own_epochs(tmp_path):
    cfg = {"task": "semantic", "model": "unet", "epochs": 4, "lr": 0.001}
    write_json({"config": cfg, "mean_ap": 0.5}, tmp_path / "results_val.json")
    assert finished_results(tmp_path, cfg)["mean_ap"] == 0.5
    assert finished_results(tmp_path, {**cfg, "device": "cpu"}) is not None  # resume-safe
    assert finished_results(tmp_path, {**cfg, "epochs": 6}) is None  # more: it resumes
    with pytest.raises(CheckpointError, match="finished at 4 epochs, more than the 2 asked"):
        finished_results(tmp_path, {**cfg, "epochs": 2})  # fewer: never the 4-epoch numbers
    with pytest.raises(CheckpointError, match="lr"):
        finished_results(tmp_path, {**cfg, "lr": 0.01})

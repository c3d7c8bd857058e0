"""segkit.config: every config names its task; configs saved before the ``task`` field still load,
are reused and resume; ``task`` is no flag; the shared defaults are segkit.constants'."""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass

import pytest

from segkit import constants
from segkit.checkpoint import CheckpointError, config_changes, describe_config, finished_results
from segkit.cli import build_parser
from segkit.config import (
    TASKS,
    InstanceConfig,
    MaskRCNNConfig,
    RunConfig,
    TrainConfig,
    config_class,
    config_task,
    field_defaults,
    load_config,
    recipe,
    register_task,
    task_field,
)
from segkit.pennfudan import PennFudanDataset, split_stems
from segkit.sources import sbd_geometry


def _without_task(cfg: RunConfig) -> dict:
    """``cfg`` as a run folder saved before the ``task`` field existed holds it."""
    return {k: v for k, v in cfg.to_dict().items() if k != "task"}


def test_every_config_names_its_task():
    assert TrainConfig().to_dict()["task"] == "semantic"
    assert InstanceConfig().to_dict()["task"] == "watershed"
    assert recipe("unet").task == "semantic"
    assert dataclasses.replace(InstanceConfig(), epochs=1).task == "watershed"
    assert config_class("semantic") is TrainConfig and config_class("watershed") is InstanceConfig
    for task, cls in TASKS.items():
        assert cls.task == task and config_class(task) is cls
    with pytest.raises(TypeError):
        TrainConfig(task="watershed")  # type: ignore[call-arg]  # fixed by the class
    with pytest.raises(ValueError, match="unknown task 'nope'; this segkit knows .*'semantic'"):
        config_class("nope")


def test_task_is_no_command_line_flag():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--task", "watershed"])
    with pytest.raises(SystemExit):
        parser.parse_args(["instance", "train", "--task", "semantic"])
    assert not hasattr(parser.parse_args(["train", "--epochs", "1"]), "task")


def test_register_task_refuses_a_taken_or_empty_task():
    @dataclass
    class Again(RunConfig):
        task: str = task_field("semantic")

    with pytest.raises(ValueError, match="taken"):
        register_task(Again)
    with pytest.raises(ValueError, match="empty"):
        register_task(RunConfig)
    assert TASKS["semantic"] is TrainConfig


def test_configs_saved_before_the_task_field_load_as_their_task():
    sem, inst = _without_task(recipe("unet")), _without_task(InstanceConfig(epochs=3))
    assert config_task(sem) == "semantic" and config_task(inst) == "watershed"
    assert config_task({"body": "unet", "scale": [0.5, 1.0]}) == "watershed"  # before the redesign
    assert config_task({}) == "semantic"
    assert config_task({**inst, "task": "maskrcnn"}) == "maskrcnn"  # a saved task always wins
    assert load_config(sem) == recipe("unet") and load_config(inst) == InstanceConfig(epochs=3)
    assert field_defaults(inst)["task"] == "watershed" and "num_energy_levels" in field_defaults(
        inst
    )
    assert field_defaults(sem)["task"] == "semantic" and "tta" in field_defaults(sem)
    assert describe_config(inst) == "a watershed 'effnet_unet' checkpoint"
    assert describe_config(sem) == "a semantic 'unet' checkpoint (9 classes)"
    with pytest.raises(ValueError, match="a 'watershed' config is not a TrainConfig"):
        TrainConfig.from_dict(inst)


def test_a_missing_task_is_no_config_change():
    """Resume and reuse compare a saved config lacking ``task`` as its inferred task."""
    sem, inst = recipe("unet"), InstanceConfig(epochs=3)
    assert config_changes(_without_task(sem), sem.to_dict()) == []
    assert config_changes(_without_task(inst), inst.to_dict()) == []
    assert "task" in config_changes(_without_task(inst), {**inst.to_dict(), "task": "maskrcnn"})
    assert "task" in config_changes(sem.to_dict(), {**sem.to_dict(), "task": "watershed"})


def test_a_finished_run_saved_before_the_task_field_is_reused(tmp_path):
    for cfg in (recipe("unet", out_dir=str(tmp_path)), InstanceConfig(out_dir=str(tmp_path))):
        run = tmp_path / cfg.name
        run.mkdir()
        saved = {"config": _without_task(cfg), "metrics": {"ap": 0.5}}
        (run / "results_val.json").write_text(json.dumps(saved))
        assert finished_results(run, cfg.to_dict()) == json.loads(json.dumps(saved))
        with pytest.raises(CheckpointError, match=r"\(seed differ\)"):
            finished_results(run, dataclasses.replace(cfg, seed=1).to_dict())


def test_shared_defaults_are_the_constants():
    cfg = InstanceConfig()
    split = (
        constants.PENNFUDAN_SPLIT_SEED,
        constants.PENNFUDAN_VAL_SIZE,
        constants.PENNFUDAN_TEST_SIZE,
    )
    assert (cfg.split_seed, cfg.val_size, cfg.test_size) == split == (0, 20, 50)
    stems = inspect.signature(split_stems).parameters
    assert tuple(stems[k].default for k in ("seed", "val_size", "test_size")) == split
    ds = inspect.signature(PennFudanDataset).parameters
    assert tuple(ds[k].default for k in ("split_seed", "val_size", "test_size")) == split
    assert cfg.num_energy_levels == ds["num_energy_levels"].default == constants.NUM_ENERGY_LEVELS
    # the course size (H, W) = (224, 288): an image already that size is kept as it is
    h, w = constants.IMAGE_SIZE
    assert sbd_geometry(w, h) == ((w, h), (0, 0, w, h)) and (h, w) == (224, 288)
    assert sbd_geometry(2 * w, h) == ((2 * w, h), (w // 2, 0, w // 2 + w, h))  # centre crop


@pytest.mark.parametrize("field", ["epochs", "batch_size"])
def test_counts_below_one_are_one_clear_error(field):
    for cls in (TrainConfig, MaskRCNNConfig):
        with pytest.raises(ValueError, match=rf"^{field} must be at least 1 \(got 0\)$"):
            cls(**{field: 0})
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(cls(), **{field: -1})

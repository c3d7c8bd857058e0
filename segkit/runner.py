"""One run skeleton for every kind of run (STYLE C16): :func:`run_folder` reuses or refuses a
finished run, resumes an unfinished one, seeds, makes the folder, trains, evaluates val and writes
history.json, results_val.json and the figures the same way whatever trains in it. Each task
plugs in what differs as a :class:`Task` (model builder, data, fit step, evaluator, figures),
registered under its config's ``task`` name; :func:`load_run` loads any task's best model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    describe_config,
    finished_results,
    last_checkpoint,
    load_checkpoint,
    load_model_state,
)
from .config import TASKS, RunConfig, config_task
from .utils import (
    SegkitError,
    get_device,
    hardware,
    remove_stale_temps,
    seed_everything,
    write_json,
)

BEST, HISTORY, POSTPROCESS = "checkpoint.pt", "history.json", "postprocess.json"
RESULTS_VAL = "results_val.json"  # written last: a folder holding it is a finished run
RUN_FILES = (BEST, "checkpoint_last.pt", HISTORY, RESULTS_VAL)  # saved atomically (temp + rename)
History = dict[str, list]  # per-epoch lists (epoch, train_loss, ..., seconds) and "best_epoch"


@dataclass
class Run:
    """One call of :func:`run_folder`: the config, its folder and device, how to train (resume,
    progress bar, one log line per epoch) and the task's own options (e.g. a threshold grid)."""

    cfg: Any  # the task's RunConfig subclass
    run_dir: Path
    device: torch.device
    resume: bool = False
    progress: bool = True
    log: Callable[[str], None] = print
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def best_path(self) -> Path:
        """checkpoint.pt: the selected epoch."""
        return self.run_dir / BEST

    @property
    def resume_from(self) -> Path | None:
        """checkpoint_last.pt when resuming, else ``None``."""
        return last_checkpoint(self.best_path) if self.resume else None


@dataclass(frozen=True)
class Task:
    """What one kind of run plugs into :func:`run_folder` and :func:`load_run`.

    Attributes:
        name: the config's ``task`` ("semantic", "watershed", "maskrcnn").
        build_model: ``(cfg, init_weights) -> model``; ``init_weights=False`` when a checkpoint
            will supply every weight (no pretrained weights are read).
        load_data: ``run -> data``: the task's train/val datasets and loaders (any object).
        fit: ``(run, model, data) -> (model, history)``: the epochs, saving checkpoint.pt and
            checkpoint_last.pt (resuming from ``run.resume_from``); the selected weights loaded.
        evaluate: ``(run, model, data, history) -> (results, drawn)``: the val results dict
            (results_val.json; :func:`run_summary` has the common keys) after any selection on
            val (postprocess.json), and what ``figures`` needs.
        figures: ``(run, history, drawn) -> paths``: the run's figures in its folder.
        config_from: a saved config dict -> the task's config (e.g. renaming legacy fields).
        expected: what a checkpoint of another task is told to be (error messages).
    """

    name: str
    build_model: Callable[[Any, bool], nn.Module]
    load_data: Callable[[Run], Any]
    fit: Callable[[Run, nn.Module, Any], tuple[nn.Module, History]]
    evaluate: Callable[[Run, nn.Module, Any, History], tuple[dict[str, Any], Any]]
    figures: Callable[[Run, History, Any], list[Path]]
    config_from: Callable[[dict[str, Any]], Any]
    expected: str


RUN_TASKS: dict[str, Task] = {}  # task name -> its Task (each run module registers its own)


def register_run_task(task: Task) -> Task:
    """Make ``task`` the one :func:`run_folder` uses for configs of ``task.name`` (a task of
    :data:`segkit.config.TASKS`); a name taken by another Task is refused (ValueError)."""
    if task.name not in TASKS or RUN_TASKS.get(task.name, task) is not task:
        raise ValueError(f"task {task.name!r} is not a config task or already has a run")
    RUN_TASKS[task.name] = task
    return task


def task_of(name: str) -> Task:
    """The registered :class:`Task` of ``name``; SegkitError naming the registered ones."""
    if name not in RUN_TASKS:
        raise SegkitError(f"no run registered for task {name!r}; registered: {sorted(RUN_TASKS)}")
    return RUN_TASKS[name]


def run_folder(
    cfg: RunConfig,
    *,
    progress: bool = True,
    figures: bool = True,
    resume: bool = False,
    reuse: bool = False,
    log: Callable[[str], None] | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], History]:
    """Run ``<cfg.out_dir>/<cfg.name>/`` with the :class:`Task` registered for ``cfg.task``.

    ``reuse``: a finished run (results_val.json) with the same config (up to the resume-safe
    fields) is returned without training, one with another config is refused
    (:class:`~segkit.checkpoint.CheckpointError` naming the folder and the fields), and an
    unfinished one resumes. ``resume``: continue from checkpoint_last.pt (exactly: weights,
    optimiser, schedule and RNG states). ``log`` gets one line per epoch (default ``tqdm.write``
    when ``progress``). ``options``: the task's own (see its run function).

    Returns:
        The val results (as in results_val.json) and the training history (history.json).

    Example:
        >>> results, history = run_folder(TrainConfig(epochs=1))   # into runs/unet/
    """
    task = task_of(cfg.task)
    run_dir = Path(cfg.out_dir) / cfg.name
    if reuse:
        done = finished_results(run_dir, cfg.to_dict())
        if done is not None:
            return done, read_history(run_dir)
        resume = last_checkpoint(run_dir / BEST).is_file()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    run = Run(cfg, run_dir, get_device(cfg.device), resume, progress,
              log or (tqdm.write if progress else _quiet), options or {})  # fmt: skip
    model = task.build_model(cfg, True)
    run_dir.mkdir(parents=True, exist_ok=True)  # only once the model is known to build
    for name in RUN_FILES:
        remove_stale_temps(run_dir / name)  # debris of a killed save
    data = task.load_data(run)
    model, history = task.fit(run, model, data)
    results, drawn = task.evaluate(run, model, data, history)
    write_json(history, run_dir / HISTORY)
    write_json(results, run_dir / RESULTS_VAL)
    if figures:
        task.figures(run, history, drawn)
    return results, history


def _quiet(line: str) -> None:
    pass


def read_history(run_dir: str | os.PathLike) -> History:
    """A run folder's history.json (``{}`` when it has none)."""
    path = Path(run_dir) / HISTORY
    return json.loads(path.read_text()) if path.is_file() else {}


def run_summary(run: Run, history: History) -> dict[str, Any]:
    """The keys every results_val.json has: ``run``, ``split``, ``config``, ``epochs_run``,
    ``best_epoch``, ``train_seconds`` (summed across resumes) and ``hardware``."""
    return {
        "run": run.cfg.name,
        "split": "val",
        "config": run.cfg.to_dict(),
        "epochs_run": len(history["epoch"]),
        "best_epoch": history["best_epoch"],
        "train_seconds": sum(history["seconds"]),
        "hardware": hardware(run.device),
    }


def write_postprocess(run: Run, params: dict[str, Any], table: list[dict[str, Any]]) -> Path:
    """postprocess.json: the post-processing chosen on val and the grid it was chosen from."""
    return write_json(
        {"selected_on": "val", "params": params, "grid": table}, run.run_dir / POSTPROCESS
    )


def postprocess_params(run_dir: str | os.PathLike, defaults: dict[str, Any]) -> dict[str, Any]:
    """The post-processing of a run folder: the ``params`` of its postprocess.json (chosen on
    val), else ``defaults`` (the config's)."""
    path = Path(run_dir) / POSTPROCESS
    return json.loads(path.read_text())["params"] if path.is_file() else dict(defaults)


def save_figures(run_dir: Path, figs: dict[str, Any], dpi: int = 100) -> list[Path]:
    """Save matplotlib figures by file name in ``run_dir``; returns their paths."""
    paths = []
    for name, fig in figs.items():
        fig.savefig(run_dir / name, dpi=dpi, bbox_inches="tight")
        paths.append(run_dir / name)
    return paths


def run_task(run_dir: str | os.PathLike) -> str:
    """The task of a run folder's checkpoint ("semantic", "watershed", "maskrcnn"; see
    :func:`segkit.config.config_task`)."""
    path = Path(run_dir) / BEST
    return config_task(load_checkpoint(path, require=("model", "config"))["config"])


def load_run(
    run_dir: str | os.PathLike, task: str, device: torch.device | str | None = None
) -> tuple[nn.Module, Any]:
    """The selected model of a run folder of ``task`` (in eval mode on ``device``, default CPU)
    and its config. A missing folder or a checkpoint of another task is a
    :class:`~segkit.checkpoint.CheckpointError` naming the file and what it holds."""
    spec = task_of(task)
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder (expected <out_dir>/<run name>)")
    path = Path(run_dir) / BEST
    ck = load_checkpoint(path, require=("model", "config"))
    if config_task(ck["config"]) != task:
        raise CheckpointError(
            f"{path}: holds {describe_config(ck['config'])}; expected {spec.expected}"
        )
    cfg = spec.config_from(ck["config"])
    model = spec.build_model(cfg, False)  # the checkpoint holds every weight
    name = getattr(cfg, "model", None)  # Mask R-CNN configs have no model field
    load_model_state(model, ck, path, f"a {task} {name!r} model" if name else f"a {task} model")
    return model.to(device or "cpu").eval(), cfg

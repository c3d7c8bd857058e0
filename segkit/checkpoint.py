"""Checkpoints: atomic save, ``weights_only`` load with errors that name the file and what it
holds, the RNG state that makes resume exact, and the rule for which config fields may change on
resume."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import config_task, field_defaults
from .utils import SegkitError, atomic_torch_save, load_torch_file

# Config fields a resumed run may change: they do not change what is computed, or (epochs)
# only extend it. Everything else must equal the checkpoint's config.
RESUME_SAFE_FIELDS = frozenset(
    {"epochs", "device", "num_threads", "amp", "channels_last", "data_dir", "out_dir", "run_name",
     "extra", "early_stop"}
)  # fmt: skip


class CheckpointError(SegkitError, ValueError):
    """A checkpoint that is missing, unreadable, or not the kind expected."""


def _rng_state(loader: Any) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    gen = getattr(loader, "generator", None)
    if gen is not None:
        state["loader"] = gen.get_state()
    return state


def _set_rng_state(state: dict, loader: Any) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_tuplify(state["python"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gen = getattr(loader, "generator", None)
    if gen is not None and "loader" in state:
        gen.set_state(state["loader"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: str | os.PathLike, **state: Any) -> Path:
    """Write a plain-dict checkpoint atomically (temporary file, fsync, rename)."""
    return atomic_torch_save(state, path)


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    require: tuple[str, ...] = ("model",),
) -> dict:
    """Load a checkpoint written by segkit with ``weights_only=True`` (no pickled code runs).

    Raises :class:`CheckpointError` naming the file when it is missing, unreadable, or lacks any
    of the ``require`` keys.
    """
    ck = load_torch_file(path, "checkpoint", CheckpointError)
    if not isinstance(ck, dict) or any(k not in ck for k in require):
        have = sorted(ck)[:6] if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(
            f"{path}: not a segkit checkpoint (it lacks {[k for k in require if k not in ck]}; "
            f"has {have}); expected a checkpoint.pt written by `segkit train`"
        )
    if map_location != "cpu":
        ck["model"] = {k: v.to(map_location) for k, v in ck["model"].items()}
    return ck


def describe_config(config: dict) -> str:
    """What a checkpoint holds, in words (for error messages)."""
    if not config:
        return "a checkpoint without a config"
    classes = f" ({config['num_classes']} classes)" if "num_classes" in config else ""
    return f"a {config_task(config)} {config.get('model', '?')!r} checkpoint{classes}"


def load_model_state(model: nn.Module, ck: dict, path: str | os.PathLike, expected: str) -> None:
    """``model.load_state_dict(ck["model"])`` with one short error naming the file and what it
    holds when the weights do not fit (instead of torch's list of every key)."""
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError:
        raise CheckpointError(
            f"{path}: holds {describe_config(ck.get('config') or {})}, which does not fit "
            f"{expected}"
        ) from None


def config_changes(old: dict, new: dict) -> list[str]:
    """Fields (outside :data:`RESUME_SAFE_FIELDS`) whose value differs between two configs; a
    field the ``old`` one lacks (saved before the field existed) counts as its default, and a
    ``task`` it lacks is the one :func:`~segkit.config.config_task` infers."""
    old, new = {**old, "task": config_task(old)}, {**new, "task": config_task(new)}
    keys = (set(old) | set(new)) - RESUME_SAFE_FIELDS
    defaults = field_defaults(new)
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  (JSON has no tuples)
    return sorted(k for k in keys if norm(old.get(k, defaults.get(k))) != norm(new.get(k)))


def finished_results(run_dir: str | os.PathLike, config: dict) -> dict | None:
    """A finished run's ``results_val.json`` when it was trained with ``config`` (up to
    :data:`RESUME_SAFE_FIELDS`), ``None`` when there is none or when it trained fewer epochs than
    asked (it resumes). A finished run with another config, or more epochs than asked, is an error
    naming the difference, never silently reused or overwritten."""
    path = Path(run_dir) / "results_val.json"
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    old = done.get("config") or {}
    asked, trained = config.get("epochs"), old.get("epochs")
    if asked is not None and trained is not None and asked != trained:
        if asked > trained:
            return None  # not finished for this config: it resumes from its last checkpoint
        raise CheckpointError(
            f"{run_dir} holds a run finished at {trained} epochs, more than the {asked} asked "
            "for; ask for its epochs, pick another run name, or retrain with force"
        )
    changed = config_changes(old, config)
    if changed:
        raise CheckpointError(
            f"{run_dir} holds a finished run with another config ({', '.join(changed)} differ); "
            "move it away, pick another run name, or retrain with force"
        )
    return done


def last_checkpoint(save_path: str | os.PathLike) -> Path:
    """The latest-epoch checkpoint beside the best one: ``checkpoint.pt`` ->
    ``checkpoint_last.pt`` (what a resume reads)."""
    save_path = Path(save_path)
    return save_path.with_name(save_path.stem + "_last.pt")


def save_training_state(
    save_path: str | os.PathLike,
    improved: bool,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    ema: Any,
    loader: Any,
    **info: Any,
) -> None:
    """Write one epoch's training state (the counterpart of :func:`restore_training_state`) to
    :func:`last_checkpoint`, and to ``save_path`` too when the epoch is the ``improved`` best.

    ``info``: ``epoch``, ``config``, ``history``, ``best``, ``best_epoch``. With ``ema`` the
    averaged weights are the checkpoint's "model" and the raw ones "raw_model".
    """
    state = dict(
        model=(model if ema is None else ema.module).state_dict(),
        raw_model=None if ema is None else model.state_dict(),
        ema=None if ema is None else ema.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict() if scheduler is not None else None,
        scaler=scaler.state_dict(),
        **info,
        rng=_rng_state(loader),
    )
    if improved:
        save_checkpoint(save_path, **state)
    save_checkpoint(last_checkpoint(save_path), **state)


def restore_training_state(
    path: str | os.PathLike,
    config: dict | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    ema: Any,
    loader: Any,
) -> tuple[dict, int, float | None, int]:
    """Load a ``*_last.pt`` checkpoint into the training objects for an exact resume.

    Refuses (:class:`CheckpointError`, naming the fields) a ``config`` that differs from the
    checkpoint's outside :data:`RESUME_SAFE_FIELDS`. Returns ``(history, start_epoch, best,
    best_epoch)``.
    """
    ck = load_checkpoint(path, require=("model", "optimizer", "history", "epoch"))
    if config is not None:
        old = ck.get("config") or {}
        changed = config_changes(old, config)
        if changed:
            diffs = ", ".join(f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in changed)
            raise CheckpointError(
                f"cannot resume {path} with a different config ({diffs}); only "
                f"{sorted(RESUME_SAFE_FIELDS)} may change on resume. Start a new run "
                "(another --run-name) or drop --resume"
            )
    expected = f"this run's {config.get('model') if config else 'model'}"
    if ema is not None and ck.get("ema") is not None:
        ema.load_state_dict(ck["ema"])  # the averaged weights and how many were averaged
        ck = {**ck, "model": ck["raw_model"]}
    load_model_state(model, ck, path, expected)
    optimizer.load_state_dict(ck["optimizer"])
    if scheduler is not None and ck.get("scheduler") is not None:
        scheduler.load_state_dict(ck["scheduler"])
    if ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    _set_rng_state(ck["rng"], loader)
    return ck["history"], ck["epoch"] + 1, ck.get("best"), ck.get("best_epoch", -1)


def last_good_note(last_path: Path | None) -> str:
    """What a diverged run left behind, for its error message: the last good checkpoint (the
    ``_last.pt`` of the epoch before) or that none was written."""
    if last_path is None:
        return ""
    if last_path.is_file():
        epoch_kept = load_checkpoint(last_path)["epoch"] + 1
        return f"; the last good checkpoint is {last_path} (epoch {epoch_kept})"
    return "; no epoch finished, so no checkpoint was written"

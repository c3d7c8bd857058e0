"""The training engine: one epoch, one streaming evaluator, the training loop (assignment Q5:
``train`` / ``validate_model``), checkpoints, resume and the shared optimiser builder.

``train`` steps non-plateau schedulers every batch (build them for ``epochs * len(loader)``
steps) and ``ReduceLROnPlateau`` once per epoch on the validation loss. A non-finite loss, weight
or validation output stops training with :class:`DivergenceError` before anything is saved, so
the last good checkpoint stays intact.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import (
    last_checkpoint,
    last_good_note,
    load_checkpoint,
    restore_training_state,
    save_training_state,
)
from .metrics import SegmentationEvaluator, SegmentationResults
from .optim import make_ema
from .utils import SegkitError, autocast_context

Criterion = Callable[[Any, Any], torch.Tensor]


class DivergenceError(SegkitError, FloatingPointError):
    """Training produced a non-finite loss, weight or output."""


def to_device(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move a tensor, or a dict / list / tuple of tensors, to ``device`` (non-blocking)."""
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.dim() == 4 and obj.is_floating_point():
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    criterion: Criterion,
    device: torch.device,
    *,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
    channels_last: bool = False,
    log_every: int = 10,
    bar: Any = None,
    where: str = "training",
    ema: Any = None,
    cpu_bf16: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``; returns ``{"loss": mean training loss}``.

    Every step's loss is checked for finiteness before the optimiser uses it (on CUDA the check
    is folded into a device flag read every ``log_every`` steps, so the GPU is not synchronised
    each step); the weights are checked at the end. ``bar``: an outer tqdm bar to advance.

    Raises:
        DivergenceError: naming ``where`` (e.g. the run and epoch), the step and the lr.
    """
    model.train()
    total = torch.zeros((), device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    seen = 0
    lazy = device.type == "cuda"
    step = -1
    for step, (images, targets) in enumerate(loader):
        images = to_device(images, device, channels_last)  # (N, 3, H, W)
        targets = to_device(targets, device)
        with autocast_context(device, amp, cpu_bf16):
            loss = criterion(model(images), targets)
        finite = torch.isfinite(loss.detach())
        if not lazy and not bool(finite):
            _diverged(where, step, optimizer, f"loss {loss.item()}")
        bad |= ~finite
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total += loss.detach().float() * len(images)
        seen += len(images)
        if (step + 1) % log_every == 0:
            if bool(bad):
                _diverged(where, step, optimizer, "non-finite loss")
            if bar is not None:
                bar.set_postfix(loss=f"{total.item() / seen:.4f}", refresh=False)
        if bar is not None:
            bar.update(1)
    if seen == 0:
        raise ValueError("the training loader yielded no batches")
    if bool(bad):
        _diverged(where, step, optimizer, "non-finite loss")
    if not _weights_finite(model):
        _diverged(where, step, optimizer, "non-finite weights after the update")
    return {"loss": total.item() / seen}


def _diverged(where: str, step: int, optimizer: torch.optim.Optimizer, what: str) -> None:
    lr = optimizer.param_groups[0]["lr"]
    raise DivergenceError(
        f"{where} diverged at step {step + 1} ({what}, lr {lr:.3g}): the learning rate is "
        "probably too high; lower --lr (or turn off AMP, or check the inputs for NaN)"
    )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    *,
    criterion: Criterion | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    amp: bool = True,
    channels_last: bool = False,
    tta: bool = False,
    cpu_bf16: bool = False,
) -> tuple[float, SegmentationResults]:
    """The one evaluator: mean loss and :class:`SegmentationResults` (AP both flavours, IoU,
    recall, precision, confusion, pixel accuracy), streamed batch by batch on the model's device
    (autocast when ``amp``; no split-sized score buffer; the model is not moved and its train/eval
    mode is restored). ``tta``: average the logits of the image and its horizontal mirror.

    Raises:
        DivergenceError: when the model outputs NaN or infinity (diverged weights).
    """
    device = _model_device(model)
    was_training = model.training
    model.eval()
    evaluator = SegmentationEvaluator(num_classes, class_names)
    total, seen = 0.0, 0
    try:
        for images, targets in loader:
            images = to_device(images, device, channels_last)  # (N, 3, H, W)
            targets = to_device(targets, device)  # (N, H, W)
            with autocast_context(device, amp, cpu_bf16):
                logits = model(images)  # (N, C, H, W)
                if tta:
                    logits = (logits + model(images.flip(-1)).flip(-1)) / 2  # (N, C, H, W)
            logits = logits.float()
            if not bool(torch.isfinite(logits).all()):
                raise DivergenceError(
                    "the model outputs NaN or infinity (its weights diverged): retrain with a "
                    "lower learning rate"
                )
            if criterion is not None:
                total += criterion(logits, targets).item() * len(images)
            seen += len(images)
            evaluator.update(logits, targets)
    finally:
        model.train(was_training)
    loss = total / max(seen, 1) if criterion is not None else float("nan")
    return loss, evaluator.compute()


def validate_model(
    model: nn.Module,
    loader: Iterable,
    criterion: Criterion | None,
    device: torch.device | None = None,
    num_classes: int | None = None,
    *,
    amp: bool = False,
    channels_last: bool = False,
    tta: bool = False,
    cpu_bf16: bool = False,
) -> dict[str, float]:
    """The assignment's ``validate_model``: mean loss over ``loader``; with ``num_classes`` also
    mean AP (course "voc" flavour and sklearn "step"), mIoU and pixel accuracy (via
    :func:`evaluate`). ``device`` is accepted for the assignment's signature; the model's own
    device is used."""
    if not num_classes:
        return {"loss": _loss_only(model, loader, criterion, amp, channels_last, cpu_bf16)}
    loss, res = evaluate(
        model, loader, num_classes, criterion=criterion, amp=amp, channels_last=channels_last,
        tta=tta, cpu_bf16=cpu_bf16,
    )  # fmt: skip
    return {
        "loss": loss,
        "miou": res.miou,
        "pixel_acc": res.pixel_acc,
        "map": res.mean_ap,
        "map_step": res.mean_ap_step,
    }


@torch.inference_mode()
def _loss_only(
    model: nn.Module,
    loader: Iterable,
    criterion: Criterion | None,
    amp: bool,
    channels_last: bool,
    cpu_bf16: bool,
) -> float:
    """Mean loss without metrics (models whose targets are not class maps, e.g. instances)."""
    if criterion is None:
        return float("nan")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    total, seen = 0.0, 0
    try:
        for images, targets in loader:
            images = to_device(images, device, channels_last)
            targets = to_device(targets, device)
            with autocast_context(device, amp, cpu_bf16):
                logits = model(images)
            loss = criterion(logits.float(), targets).item()
            if not math.isfinite(loss):
                raise DivergenceError(
                    f"validation loss is {loss} (the weights diverged): retrain with a lower "
                    "learning rate"
                )
            total += loss * len(images)
            seen += len(images)
    finally:
        model.train(was_training)
    return total / max(seen, 1)


def _better(metric: str, new: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(new)
    return new < best if metric.endswith("loss") else new > best


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Criterion,
    trainloader: Iterable,
    device: torch.device,
    scheduler: Any = None,
    epochs: int = 10,
    num_early_stop: int | None = None,
    valloader: Iterable | None = None,
    save_path: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    select_metric: str = "val_loss",
    config: dict | None = None,
    resume_from: str | os.PathLike | None = None,
    amp: bool = True,
    channels_last: bool = True,
    progress: bool = True,
    name: str = "run",
    cpu_bf16: bool = False,
    ema_decay: float | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, dict[str, list]]:
    """Train for ``epochs``; validate each epoch; keep the best-on-val checkpoint; stop early.

    Args:
        num_early_stop: stop after this many epochs without improvement of ``select_metric``.
        save_path: best checkpoint; ``<save_path stem>_last.pt`` beside it holds the latest
            epoch (used by ``resume_from`` to continue exactly where a run stopped).
        num_classes: when given, validation also reports mean AP, mIoU and pixel accuracy, and
            ``select_metric`` may be ``"val_map"`` or ``"val_miou"``.
        config: stored in checkpoints; on resume it must equal the checkpoint's except for
            :data:`RESUME_SAFE_FIELDS` (else :class:`CheckpointError` names the fields).
        amp / cpu_bf16: mixed precision on CUDA (``amp``) or bf16 autocast on the CPU
            (``cpu_bf16``); channels_last helps on CPU and GPU.
        ema_decay: keep an exponential moving average of the weights (e.g. 0.999), validate,
            select and save it (the checkpoint's "model"; the raw weights are "raw_model").
        progress: one tqdm bar for the whole run (left behind by nothing).
        name / log: the run's name in messages; ``log`` gets one line per epoch (epoch, losses,
            val AP, minutes left); default ``tqdm.write`` when ``progress``.

    Returns:
        The model (with the best weights loaded when a validation loader was given) and a
        history dict of per-epoch lists: epoch, train_loss, val_loss, lr, seconds, and the
        val metrics. ``sum(history["seconds"])`` is the training time across resumes.
    """
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    ema = make_ema(model, ema_decay) if ema_decay else None
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and valloader is None:
        raise ValueError("ReduceLROnPlateau steps on the validation loss: pass a valloader")
    if log is None:
        log = tqdm.write if progress else (lambda line: None)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "lr": [], "seconds": []}
    best, best_epoch, start = None, -1, 0
    last_path = None
    if save_path is not None:
        save_path = Path(save_path)
        last_path = last_checkpoint(save_path)
    if resume_from is not None:
        history, start, best, best_epoch = restore_training_state(
            resume_from, config, model, optimizer, scheduler, scaler, ema, trainloader
        )
        if num_early_stop is not None and start - 1 - best_epoch >= num_early_stop:
            start = epochs  # it had stopped early: resuming does not train on
    steps_per_epoch = len(trainloader)  # type: ignore[arg-type]
    bar = tqdm(
        total=max(0, epochs - start) * steps_per_epoch,
        desc=name,
        unit="step",
        leave=False,
        dynamic_ncols=True,
        disable=not progress,
    )
    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            where = f"run {name!r}, epoch {epoch + 1}"
            stats = train_one_epoch(
                model,
                trainloader,
                optimizer,
                criterion,
                device,
                scheduler=None if plateau else scheduler,
                scaler=scaler,
                ema=ema,
                cpu_bf16=cpu_bf16,
                amp=amp,
                channels_last=channels_last,
                bar=bar,
                where=where,
            )
            row = {
                "epoch": epoch + 1,
                "train_loss": stats["loss"],
                "lr": optimizer.param_groups[0]["lr"],
            }
            if valloader is not None:
                val = _validate_epoch(
                    model if ema is None else ema.module, valloader, criterion, num_classes,
                    where=f"{where} (lr {row['lr']:.3g})", amp=amp, channels_last=channels_last,
                    cpu_bf16=cpu_bf16,
                )  # fmt: skip
                row.update({f"val_{k}": v for k, v in val.items()})
                if plateau:
                    scheduler.step(val["loss"])
            row["seconds"] = time.perf_counter() - t0
            for k, v in row.items():
                history.setdefault(k, []).append(v)
            metric = _selection_metric(select_metric, row, valloader is not None)
            improved = _better(metric, row[metric], best)
            if improved:
                best, best_epoch = row[metric], epoch
            if save_path is not None:
                save_training_state(
                    save_path, improved, model, optimizer, scheduler, scaler, ema, trainloader,
                    epoch=epoch, config=config or {}, history=history, best=best,
                    best_epoch=best_epoch,
                )  # fmt: skip
            log(_epoch_line(name, row, epochs, history))
            if num_early_stop is not None and epoch - best_epoch >= num_early_stop:
                log(f"{name}: no improvement of {select_metric} for {num_early_stop} epochs; stop")
                break
    except DivergenceError as e:
        raise DivergenceError(f"{e}{last_good_note(last_path)}") from None
    finally:
        bar.close()
    if save_path is not None and valloader is not None and save_path.is_file():
        model.load_state_dict(load_checkpoint(save_path)["model"])
    history["best_epoch"] = best_epoch + 1
    return model, history


# fmt: off
def _validate_epoch(model: nn.Module, valloader: Iterable, criterion: Criterion,
                    num_classes: int | None, where: str, **precision: bool) -> dict[str, float]:
    """One epoch's validation (``precision``: amp, channels_last, cpu_bf16); a non-finite loss
    names the run, epoch and learning rate (``where``)."""
    try:
        return validate_model(model, valloader, criterion, None, num_classes, **precision)
    except DivergenceError as e:
        raise DivergenceError(f"{where}: {e}") from None
# fmt: on


def _selection_metric(select_metric: str, row: dict, validated: bool) -> str:
    """The key that picks the best epoch: ``select_metric``, else the training loss (no val)."""
    if select_metric in row:
        return select_metric
    if validated:
        raise ValueError(
            f"select_metric {select_metric!r} is not computed (have {sorted(row)}); pass "
            "num_classes for val_map/val_miou, or use 'val_loss'"
        )
    return "train_loss"


def _epoch_line(name: str, row: dict, epochs: int, history: dict) -> str:
    """``unet  epoch 3/20  loss 0.812/0.905  val AP 0.512  ~14.2 min left``."""
    secs = history["seconds"][-3:]
    left = (epochs - row["epoch"]) * sum(secs) / len(secs) / 60
    parts = [f"{name}  epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.3f}"]
    if "val_loss" in row:
        parts[-1] += f"/{row['val_loss']:.3f}"
    if "val_map" in row:
        parts.append(f"val AP {row['val_map']:.3f}")
    parts.append(f"~{left:.1f} min left")
    return "  ".join(parts)

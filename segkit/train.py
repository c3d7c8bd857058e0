"""The training loop (assignment Q5): ``train`` / ``validate_model``, checkpoints and resume.

``train`` steps non-plateau schedulers every batch (build them for ``epochs * len(loader)``
steps) and ``ReduceLROnPlateau`` once per epoch on the validation loss.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .utils import atomic_torch_save, autocast_context

Criterion = Callable[[Any, Any], torch.Tensor]


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
    """Write a plain-dict checkpoint atomically (temporary file, then rename)."""
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by segkit with ``weights_only=True`` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable segkit checkpoint ({e})") from e


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
    desc: str = "train",
    progress: bool = True,
) -> dict[str, float]:
    """One pass over ``loader``; returns ``{"loss": mean training loss}``.

    The loss is summed on the device and read back only every ``log_every`` steps (progress bar
    and the finiteness check), so the GPU is not synchronised every step.
    """
    model.train()
    total = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not progress)
    for step, (images, targets) in enumerate(bar):
        images = to_device(images, device, channels_last)  # (N, 3, H, W)
        targets = to_device(targets, device)
        with autocast_context(device, amp):
            loss = criterion(model(images), targets)
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
        total += loss.detach().float() * len(images)
        seen += len(images)
        if (step + 1) % log_every == 0 or step == 0:
            running = total.item() / seen
            if not math.isfinite(running):
                raise FloatingPointError(
                    f"non-finite training loss ({running}) at step {step + 1}: lower the learning "
                    "rate, check the inputs for NaN, or turn off AMP"
                )
            bar.set_postfix(loss=f"{running:.4f}")
    if seen == 0:
        raise ValueError("the training loader yielded no batches")
    mean = total.item() / seen
    if not math.isfinite(mean):
        raise FloatingPointError(f"non-finite training loss ({mean}) in this epoch")
    return {"loss": mean}


@torch.inference_mode()
def validate_model(
    model: nn.Module,
    loader: Iterable,
    criterion: Criterion | None,
    device: torch.device,
    num_classes: int | None = None,
    *,
    amp: bool = False,
    channels_last: bool = False,
    desc: str = "val",
    progress: bool = True,
) -> dict[str, float]:
    """Mean loss over ``loader``; with ``num_classes`` also mean AP (course "voc" flavour and
    sklearn "step"), mIoU and pixel accuracy. Restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    cm = ap = None
    if num_classes:
        from .metrics import APAccumulator, ConfusionMatrix

        cm, ap = ConfusionMatrix(num_classes), APAccumulator(num_classes)
    total, seen = 0.0, 0
    try:
        for images, targets in tqdm(
            loader, desc=desc, leave=False, dynamic_ncols=True, disable=not progress
        ):
            images = to_device(images, device, channels_last)
            targets = to_device(targets, device)
            with autocast_context(device, amp):
                logits = model(images)  # (N, C, H, W)
            if criterion is not None:
                total += criterion(logits.float(), targets).item() * len(images)
            seen += len(images)
            if cm is not None and ap is not None:
                cm.update(logits, targets)
                ap.update(logits.float().softmax(dim=1), targets)
    finally:
        model.train(was_training)
    out: dict[str, float] = {
        "loss": total / max(seen, 1) if criterion is not None else float("nan")
    }
    if cm is not None and ap is not None:
        res = cm.compute()
        out.update(
            miou=float(res["miou"]),
            pixel_acc=float(res["pixel_acc"]),
            map=float(np.nanmean(ap.compute("voc"))),
            map_step=float(np.nanmean(ap.compute("step"))),
        )
    return out


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
) -> tuple[nn.Module, dict[str, list]]:
    """Train for ``epochs``; validate each epoch; keep the best-on-val checkpoint; stop early.

    Args:
        num_early_stop: stop after this many epochs without improvement of ``select_metric``.
        save_path: best checkpoint; ``<save_path stem>_last.pt`` beside it holds the latest
            epoch (used by ``resume_from`` to continue exactly where a run stopped).
        num_classes: when given, validation also reports mean AP, mIoU and pixel accuracy, and
            ``select_metric`` may be ``"val_map"`` or ``"val_miou"``.
        amp / channels_last: AMP applies on CUDA only; channels_last helps on CPU and GPU.

    Returns:
        The model (with the best weights loaded when a validation loader was given) and a
        history dict of per-epoch lists: epoch, train_loss, val_loss, lr, seconds, and the
        val metrics.
    """
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and valloader is None:
        raise ValueError("ReduceLROnPlateau steps on the validation loss: pass a valloader")
    history: dict[str, list] = {"epoch": [], "train_loss": [], "lr": [], "seconds": []}
    best, best_epoch, start = None, -1, 0
    last_path = None
    if save_path is not None:
        save_path = Path(save_path)
        last_path = save_path.with_name(save_path.stem + "_last.pt")
    if resume_from is not None:
        ck = load_checkpoint(resume_from)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler") is not None:
            scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        history, start = ck["history"], ck["epoch"] + 1
        best, best_epoch = ck.get("best"), ck.get("best_epoch", -1)
        _set_rng_state(ck["rng"], trainloader)
    bar = tqdm(range(start, epochs), desc="epochs", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        t0 = time.perf_counter()
        stats = train_one_epoch(
            model,
            trainloader,
            optimizer,
            criterion,
            device,
            scheduler=None if plateau else scheduler,
            scaler=scaler,
            amp=amp,
            channels_last=channels_last,
            desc=f"epoch {epoch + 1}",
            progress=progress,
        )
        row = {
            "epoch": epoch + 1,
            "train_loss": stats["loss"],
            "lr": optimizer.param_groups[0]["lr"],
        }
        if valloader is not None:
            val = validate_model(
                model,
                valloader,
                criterion,
                device,
                num_classes,
                amp=amp,
                channels_last=channels_last,
                progress=progress,
            )
            row.update({f"val_{k}": v for k, v in val.items()})
            if plateau:
                scheduler.step(val["loss"])
        row["seconds"] = time.perf_counter() - t0
        for k, v in row.items():
            history.setdefault(k, []).append(v)
        metric = select_metric if select_metric in row else "train_loss"
        if metric != select_metric and valloader is not None:
            raise ValueError(
                f"select_metric {select_metric!r} is not computed (have {sorted(row)}); pass "
                "num_classes for val_map/val_miou, or use 'val_loss'"
            )
        score = row[metric]
        improved = _better(metric, score, best)
        if improved:
            best, best_epoch = score, epoch
        state = dict(
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            scaler=scaler.state_dict(),
            epoch=epoch,
            config=config or {},
            history=history,
            best=best,
            best_epoch=best_epoch,
            rng=_rng_state(trainloader),
        )
        if save_path is not None:
            if improved:
                save_checkpoint(save_path, **state)
            save_checkpoint(last_path, **state)
        bar.set_postfix(
            {
                k: f"{v:.3f}"
                for k, v in row.items()
                if k in ("train_loss", "val_loss", "val_map", "val_miou")
            }
        )
        if num_early_stop is not None and epoch - best_epoch >= num_early_stop:
            break
    if save_path is not None and valloader is not None and save_path.is_file():
        model.load_state_dict(load_checkpoint(save_path)["model"])
    history["best_epoch"] = best_epoch + 1
    return model, history

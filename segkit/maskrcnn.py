"""A Mask R-CNN run folder (Penn-Fudan, detection-based) from a
:class:`~segkit.config.MaskRCNNConfig`: train with torchvision's losses (each term logged per
epoch), keep the checkpoint of the best val mask AP (or the last), choose the score and mask
thresholds on val, evaluate a split at original resolution with the watershed run's COCO mask AP.

The run folder is ``<cfg.out_dir>/<cfg.name>/``: checkpoint.pt, checkpoint_last.pt,
history.json, postprocess.json, results_<split>.json, loss_curve.png and instances_<split>.png.
:func:`segkit.runner.run_folder` runs it with the Task ``MASKRCNN``.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import viz
from .checkpoint import load_checkpoint, restore_training_state, save_training_state
from .config import MaskRCNNConfig
from .data import make_loader
from .detection import DetectionAugment, DetectionDataset, collate_detection
from .detection import labels_from_detections as to_labels
from .engine import DivergenceError, to_device
from .instance import HEADLINE, MASK_RCNN_REFERENCE, PREVIEW_COUNT
from .metrics.mask_ap import InstanceEvaluator
from .models.maskrcnn import build_maskrcnn
from .optim import build_optimizer
from .pennfudan import PennFudanDataset
from .runner import (
    Run,
    Task,
    load_run,
    postprocess_params,
    read_history,
    register_run_task,
    run_folder,
    save_figures,
    write_postprocess,
)
from .runner import run_task as run_task  # re-exported: `segkit instance evaluate` dispatches on it
from .utils import autocast_context, get_device, hardware, write_json

LOSS_TERMS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")
POSTPROCESS_GRID: dict[str, tuple[float, ...]] = {
    "score_threshold": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "mask_threshold": (0.3, 0.4, 0.5, 0.6),
}
Params = dict[str, float]  # {"score_threshold", "mask_threshold"}


def make_base(
    cfg: MaskRCNNConfig, split: str, data_dir: str | os.PathLike | None = None
) -> PennFudanDataset:
    """The Penn-Fudan ``split`` as ``cfg`` defines it (working size, split, per-split limit)."""
    limit = {"train": cfg.limit_train, "val": cfg.limit_val, "test": cfg.limit_test}
    return PennFudanDataset(
        split, data_dir or cfg.data_dir, short_side=cfg.short_side, max_size=cfg.max_size,
        limit=limit.get(split), split_seed=cfg.split_seed, val_size=cfg.val_size,
        test_size=cfg.test_size,
    )  # fmt: skip


def model_for(cfg: MaskRCNNConfig, init_weights: bool = True) -> nn.Module:
    """The run's torchvision MaskRCNN (``init_weights=False``: no pretrained weights are read,
    the checkpoint holds them all)."""
    return build_maskrcnn(
        cfg.weights, min_size=cfg.short_side, max_size=cfg.max_size,
        fpn_channels=cfg.fpn_channels, rois_per_image=cfg.rois_per_image,
        frozen_stages=cfg.frozen_stages, anchor_size=cfg.anchor_size, init_weights=init_weights,
    )  # fmt: skip


def default_params(cfg: MaskRCNNConfig) -> Params:
    """The config's thresholds (used before postprocess.json is chosen on val)."""
    return {"score_threshold": cfg.score_threshold, "mask_threshold": cfg.mask_threshold}


# ------------------------------------------------------------------- inference, evaluation
@torch.inference_mode()
def predict_detections(model: nn.Module, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mask R-CNN on one original-size image (its transform resizes and normalises; boxes and
    masks come back at the input size), on the model's device, in eval mode.

    Shape: image (3, H, W) uint8 -> scores (P,) float32, masks (P, H, W) float32 probabilities.
    """
    device = next(model.parameters()).device
    out = model([image.to(device).float().div(255)])[0]
    return out["scores"].float().cpu().numpy(), out["masks"][:, 0].float().cpu().numpy()


def predict_instances(
    model: nn.Module, image: torch.Tensor, params: Params
) -> tuple[np.ndarray, np.ndarray]:
    """``segkit predict``'s Mask R-CNN: the forward pass of evaluation, the instance label map
    under the run's thresholds (ids by descending score) and the pedestrian probability, each
    pixel's highest kept mask probability.

    Shape: image (3, H, W) uint8 -> labels (H, W) int32, prob (H, W) float32."""
    scores, masks = predict_detections(model, image)  # (P,), (P, H, W)
    labels, _ = to_labels(scores, masks, params["score_threshold"], params["mask_threshold"])
    kept = masks[scores >= params["score_threshold"]]  # (K, H, W)
    return labels, kept.max(0) if len(kept) else np.zeros(image.shape[-2:], np.float32)


def evaluate_settings(
    model: nn.Module,
    dataset: PennFudanDataset,
    settings: list[Params],
    keep: int = 0,
    matches: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], list[np.ndarray], float]:
    """COCO mask AP (:class:`~segkit.metrics.mask_ap.InstanceEvaluator`, as the watershed run) of
    the label maps under each post-processing setting, one forward pass per image at original
    resolution. Returns the metrics per setting, the label maps of the first ``keep`` images
    under ``settings[0]``, and the model's milliseconds per image. ``matches``: also save the
    per-image matches under ``settings[0]`` there (:meth:`InstanceEvaluator.save`)."""
    was_training = model.training
    model.eval()
    evs = [InstanceEvaluator() for _ in settings]
    kept, seconds = [], 0.0
    try:
        for i in range(len(dataset)):
            image, gt = dataset.raw(i)  # (3, H, W) uint8, (H, W) uint8 at original size
            t0 = time.perf_counter()
            scores, masks = predict_detections(model, image)  # (P,), (P, H, W)
            seconds += time.perf_counter() - t0  # .cpu() above waits for CUDA
            for k, (ev, p) in enumerate(zip(evs, settings, strict=True)):
                labels, by_id = to_labels(scores, masks, p["score_threshold"], p["mask_threshold"])
                ev.update(labels, by_id, gt.numpy())
                if k == 0 and i < keep:
                    kept.append(labels)
    finally:
        model.train(was_training)
    if matches is not None:
        evs[0].save(matches)
    return [ev.compute() for ev in evs], kept, 1000 * seconds / max(1, len(dataset))


def tune_postprocessing(
    model: nn.Module, dataset: PennFudanDataset, grid: dict[str, tuple[float, ...]]
) -> tuple[Params, list[dict[str, Any]]]:
    """Grid search of the score and mask thresholds for the highest AP, then AP50, then the
    fewest detections (AP ranks by score, so low-scoring fragments rarely change it; of equal
    settings the one that keeps fewer is the cleaner label map); val only."""
    settings = [
        {"score_threshold": s, "mask_threshold": m}
        for s, m in itertools.product(grid["score_threshold"], grid["mask_threshold"])
    ]
    results, _, _ = evaluate_settings(model, dataset, settings)
    table = [{**p, **{k: r[k] for k in (*HEADLINE, "num_detections")}}
             for p, r in zip(settings, results, strict=True)]  # fmt: skip
    best = max(range(len(settings)), key=lambda k: (results[k]["ap"], results[k]["ap50"],
                                                    -results[k]["num_detections"]))  # fmt: skip
    return settings[best], table


# ---------------------------------------------------------------------------- training
def train_one_epoch_maskrcnn(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
    clip_grad: float | None = None,
    bar: Any = None,
    where: str = "training",
) -> dict[str, float]:
    """One pass: torchvision's loss terms summed, backward (scaled under AMP), gradient norm
    clipped, step, per-step schedule. Returns the mean of each term and of their sum ("loss").

    Shape: loader yields (list of (3, h, w) float images, list of detection targets).
    """
    model.train()
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, float] = {}
    seen = 0
    for step, (images, targets) in enumerate(loader):
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [to_device(t, device) for t in targets]
        with autocast_context(device, amp):
            losses = model(images, targets)  # the five terms of LOSS_TERMS
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            lr = optimizer.param_groups[0]["lr"]
            raise DivergenceError(
                f"{where} diverged at step {step + 1} (loss {loss.item()}, lr {lr:.3g}): lower "
                "--lr or --warmup-steps longer"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        for k, v in {**losses, "loss": loss}.items():
            sums[k] = sums.get(k, 0.0) + v.item() * len(images)
        seen += len(images)
        if bar is not None:
            bar.update(1)
    if seen == 0:
        raise ValueError("the training loader yielded no batches")
    return {k: v / seen for k, v in sums.items()}


def _epoch_line(name: str, row: dict[str, Any], epochs: int, seconds: list[float]) -> str:
    left = (epochs - row["epoch"]) * sum(seconds[-3:]) / len(seconds[-3:]) / 60
    return (
        f"{name}  epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.3f} "
        f"(mask {row['loss_mask']:.3f})  val AP {row['val_ap']:.3f} AP50 {row['val_ap50']:.3f} "
        f"AP75 {row['val_ap75']:.3f}  {row['seconds'] / 60:.1f} min  ~{left:.0f} min left"
    )


# ------------------------------------------------------------------------------ the run
@dataclass
class MaskRCNNData:
    """The train data (augmented detection samples, batched as lists) and val images."""

    loader: DataLoader
    val_set: PennFudanDataset


def _load_data(run: Run) -> MaskRCNNData:
    cfg = run.cfg
    train_set = DetectionDataset(
        make_base(cfg, "train"), DetectionAugment(cfg.aug_scale, cfg.flip_p)
    )
    loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed,
                         device=run.device, collate_fn=collate_detection)  # fmt: skip
    return MaskRCNNData(loader, make_base(cfg, "val"))


def _fit(run: Run, model: nn.Module, data: MaskRCNNData) -> tuple[nn.Module, dict[str, list]]:
    """Epochs of training; each validated and saved: checkpoint_last.pt always, checkpoint.pt
    when it is the selected one (whose weights the returned model has)."""
    cfg, loader = run.cfg, data.loader
    model.to(run.device)
    optimizer, scheduler = build_optimizer(cfg, model, cfg.epochs * len(loader))
    scaler = torch.amp.GradScaler(run.device.type, enabled=cfg.amp and run.device.type == "cuda")
    history: dict[str, list] = {"epoch": []}
    best, best_epoch, start = None, -1, 0
    if run.resume_from is not None:
        history, start, best, best_epoch = restore_training_state(
            run.resume_from, cfg.to_dict(), model, optimizer, scheduler, scaler, None, loader
        )
    steps = max(0, cfg.epochs - start) * len(loader)
    with tqdm(total=steps, desc=cfg.name, unit="step", leave=False,
              disable=not run.progress) as bar:  # fmt: skip
        for epoch in range(start, cfg.epochs):
            row = _epoch(run, model, data, optimizer, scheduler, scaler, bar, epoch)
            for k, v in row.items():
                history.setdefault(k, []).append(v)
            if cfg.select_metric == "last" or best is None or row["val_ap"] > best:
                best, best_epoch = row["val_ap"], epoch
            save_training_state(
                run.best_path, best_epoch == epoch, model, optimizer, scheduler, scaler, None,
                loader, epoch=epoch, config=cfg.to_dict(), history=history, best=best,
                best_epoch=best_epoch,
            )  # fmt: skip
            run.log(_epoch_line(cfg.name, row, cfg.epochs, history["seconds"]))
    history["best_epoch"] = best_epoch + 1
    model.load_state_dict(load_checkpoint(run.best_path)["model"])
    return model, history


def _epoch(
    run: Run,
    model: nn.Module,
    data: MaskRCNNData,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    bar: Any,
    epoch: int,
) -> dict[str, Any]:
    """One epoch and its validation (mask AP at the config's thresholds): a history row."""
    cfg, t0 = run.cfg, time.perf_counter()
    stats = train_one_epoch_maskrcnn(
        model, data.loader, optimizer, run.device, scheduler=scheduler, scaler=scaler,
        amp=scaler.is_enabled(), clip_grad=cfg.clip_grad, bar=bar,
        where=f"run {cfg.name!r}, epoch {epoch + 1}",
    )  # fmt: skip
    (val,), _, _ = evaluate_settings(model, data.val_set, [default_params(cfg)])
    return {"epoch": epoch + 1, "train_loss": stats.pop("loss"), **stats,
            "lr": optimizer.param_groups[0]["lr"],
            **{f"val_{k}": val[k] for k in ("ap", "ap50", "ap75")},
            "seconds": time.perf_counter() - t0}  # fmt: skip


def _evaluate(
    run: Run, model: nn.Module, data: MaskRCNNData, history: dict[str, list]
) -> tuple[dict[str, Any], tuple[PennFudanDataset, list[np.ndarray]]]:
    """Thresholds chosen on val (postprocess.json), then the val results with them."""
    params, table = tune_postprocessing(
        model, data.val_set, run.options.get("grid") or POSTPROCESS_GRID
    )
    write_postprocess(run, params, table)
    out, labels = _split_results(run, "val", model, data.val_set, params, history)
    return out, (data.val_set, labels)


def _figures(
    run: Run, history: dict[str, list], drawn: tuple[PennFudanDataset, list[np.ndarray]]
) -> list[Path]:
    loss = {
        "loss_curve.png": viz.plot_loss_terms(history, LOSS_TERMS, f"Mask R-CNN ({run.cfg.name})")
    }
    return save_figures(run.run_dir, loss) + _instances_figure(run.run_dir, "val", *drawn)


MASKRCNN = register_run_task(
    Task(
        "maskrcnn", model_for, _load_data, _fit, _evaluate, _figures, MaskRCNNConfig.from_dict,
        "a Mask R-CNN run (use `segkit evaluate` for semantic runs)",
    )
)  # fmt: skip


def train_maskrcnn(
    cfg: MaskRCNNConfig,
    *,
    progress: bool = True,
    figures: bool = True,
    grid: dict[str, tuple[float, ...]] | None = None,
    resume: bool = False,
    reuse: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train on train, keep the checkpoint of the best val mask AP (``select_metric``), choose
    the thresholds on val (``grid``, default :data:`POSTPROCESS_GRID`) and write
    ``<out_dir>/<name>/``: checkpoint.pt, checkpoint_last.pt, history.json, postprocess.json,
    results_val.json, loss_curve.png, instances_val.png. ``resume`` continues from
    checkpoint_last.pt; ``reuse`` returns a finished run's results (same config) without
    training and resumes an unfinished one. Returns the val results. The run itself is
    :func:`segkit.runner.run_folder`'s.

    Example:
        >>> out = train_maskrcnn(MaskRCNNConfig())   # the recipe, into runs/maskrcnn/
    """
    return run_folder(
        cfg, progress=progress, figures=figures, resume=resume, reuse=reuse, log=log,
        options={"grid": grid},
    )[0]  # fmt: skip


def _split_results(
    run: Run, split: str, model: nn.Module, dataset: PennFudanDataset, params: Params, history: dict
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The results of ``split`` with ``params`` (as in results_<split>.json) and the label maps
    of the first :data:`PREVIEW_COUNT` images."""
    matches = run.run_dir / f"matches_{split}.npz"  # per image: the paired comparison's input
    (metrics,), labels, ms = evaluate_settings(model, dataset, [params], PREVIEW_COUNT, matches)
    out = {
        "run": run.run_dir.name, "split": split, "task": run.cfg.task, "stems": dataset.stems,
        "config": run.cfg.to_dict(), "postprocess": params,
        "epochs_run": len(history.get("epoch", [])), "best_epoch": history.get("best_epoch"),
        "train_seconds": sum(history.get("seconds", [])), "hardware": hardware(run.device),
        "inference_ms_per_image": ms, "metrics": metrics,
        "reference": {**MASK_RCNN_REFERENCE, "ap_minus_reference": metrics["ap"]
                      - MASK_RCNN_REFERENCE["mask_ap"]},
    }  # fmt: skip
    return out, labels


def _instances_figure(
    run_dir: Path, split: str, dataset: PennFudanDataset, labels: list[np.ndarray]
) -> list[Path]:
    """instances_<split>.png: image / ground truth / prediction of the first images."""
    raws = [dataset.raw(i) for i in range(len(labels))]
    fig = viz.show_instances([r[0] for r in raws], [r[1] for r in raws], labels,
                             titles=dataset.stems[: len(labels)])  # fmt: skip
    return save_figures(run_dir, {f"instances_{split}.png": fig})


# ------------------------------------------------------------------------ a finished run
def load_maskrcnn_run(
    run_dir: str | os.PathLike, device: torch.device | str | None = None
) -> tuple[nn.Module, MaskRCNNConfig, Params]:
    """The selected model of a run folder (eval mode, on ``device``, default CPU), its config
    and its thresholds (postprocess.json, else the config's defaults)."""
    model, cfg = load_run(run_dir, MASKRCNN.name, device)
    return model, cfg, postprocess_params(run_dir, default_params(cfg))


def evaluate_maskrcnn_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    device: str = "auto",
    data_dir: str | None = None,
    *,
    figures: bool = True,
) -> dict[str, Any]:
    """Evaluate a run on ``split`` at original resolution (the config's ``limit_<split>``
    applies) with its val-chosen thresholds; writes results_<split>.json (the watershed run's
    metric keys, plus ``inference_ms_per_image``) and instances_<split>.png."""
    dev = get_device(device)
    model, cfg, params = load_maskrcnn_run(run_dir, dev)
    run, dataset = Run(cfg, Path(run_dir), dev), make_base(cfg, split, data_dir)
    out, labels = _split_results(run, split, model, dataset, params, read_history(run.run_dir))
    write_json(out, run.run_dir / f"results_{split}.json")
    if figures:
        _instances_figure(run.run_dir, split, dataset, labels)
    return out

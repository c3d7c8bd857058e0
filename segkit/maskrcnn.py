"""A Mask R-CNN run folder (Penn-Fudan, detection-based) from a
:class:`~segkit.config.MaskRCNNConfig`: train with torchvision's losses (each term logged per
epoch), keep the checkpoint of the best val mask AP (or the last), choose the score and mask
thresholds on val, evaluate a split at original resolution with the watershed run's COCO mask AP.

The run folder is ``<cfg.out_dir>/<cfg.name>/``: checkpoint.pt, checkpoint_last.pt,
history.json, postprocess.json, results_<split>.json, loss_curve.png and instances_<split>.png.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import viz
from .checkpoint import (
    CheckpointError,
    _rng_state,
    describe_config,
    finished_results,
    load_checkpoint,
    load_model_state,
    restore_training_state,
    save_checkpoint,
)
from .config import MaskRCNNConfig, config_task
from .data import make_loader
from .detection import DetectionAugment, DetectionDataset, collate_detection
from .detection import labels_from_detections as to_labels
from .engine import DivergenceError, to_device
from .instance import HEADLINE, MASK_RCNN_REFERENCE, PREVIEW_COUNT
from .metrics.mask_ap import InstanceEvaluator
from .models.maskrcnn import build_maskrcnn
from .optim import build_optimizer
from .pennfudan import PennFudanDataset
from .utils import (
    autocast_context,
    get_device,
    hardware,
    remove_stale_temps,
    seed_everything,
    write_json,
)

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
        frozen_stages=cfg.frozen_stages, init_weights=init_weights,
    )  # fmt: skip


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
) -> tuple[np.ndarray, dict[int, float]]:
    """The instance label map of one image (ids by descending score) and each id's score.

    Shape: image (3, H, W) uint8 -> labels (H, W) int32."""
    scores, masks = predict_detections(model, image)
    return to_labels(scores, masks, params["score_threshold"], params["mask_threshold"])


def evaluate_settings(
    model: nn.Module,
    dataset: PennFudanDataset,
    settings: list[Params],
    keep: int = 0,
) -> tuple[list[dict[str, Any]], list[np.ndarray], float]:
    """COCO mask AP (:class:`~segkit.metrics.mask_ap.InstanceEvaluator`, as the watershed run) of
    the label maps under each post-processing setting, one forward pass per image at original
    resolution. Returns the metrics per setting, the label maps of the first ``keep`` images
    under ``settings[0]``, and the model's milliseconds per image."""
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
    return [ev.compute() for ev in evs], kept, 1000 * seconds / max(1, len(dataset))


def tune_postprocessing(
    model: nn.Module, dataset: PennFudanDataset, grid: dict[str, tuple[float, ...]]
) -> tuple[Params, list[dict[str, Any]]]:
    """Grid search of the score and mask thresholds for the highest AP (then AP50); val only."""
    settings = [
        {"score_threshold": s, "mask_threshold": m}
        for s, m in itertools.product(grid["score_threshold"], grid["mask_threshold"])
    ]
    results, _, _ = evaluate_settings(model, dataset, settings)
    table = [{**p, **{k: r[k] for k in (*HEADLINE, "num_detections")}}
             for p, r in zip(settings, results, strict=True)]  # fmt: skip
    best = max(range(len(settings)), key=lambda k: (results[k]["ap"], results[k]["ap50"]))
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


def _fit(
    cfg: MaskRCNNConfig,
    model: nn.Module,
    loader: Any,
    val_set: PennFudanDataset,
    device: torch.device,
    run_dir: Path,
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
) -> dict[str, list]:
    """Epochs of training; each validated (mask AP at the config's thresholds) and saved:
    checkpoint_last.pt always, checkpoint.pt when it is the selected one."""
    optimizer, scheduler = build_optimizer(cfg, model, cfg.epochs * len(loader))
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    history: dict[str, list] = {"epoch": []}
    best, best_epoch, start = None, -1, 0
    last = run_dir / "checkpoint_last.pt"
    if resume:
        history, start, best, best_epoch = restore_training_state(
            last, cfg.to_dict(), model, optimizer, scheduler, scaler, None, loader
        )
    default = [{"score_threshold": cfg.score_threshold, "mask_threshold": cfg.mask_threshold}]
    steps = max(0, cfg.epochs - start) * len(loader)
    with tqdm(total=steps, desc=cfg.name, unit="step", leave=False, disable=not progress) as bar:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            stats = train_one_epoch_maskrcnn(
                model, loader, optimizer, device, scheduler=scheduler, scaler=scaler, amp=amp,
                clip_grad=cfg.clip_grad, bar=bar, where=f"run {cfg.name!r}, epoch {epoch + 1}",
            )  # fmt: skip
            (val,), _, _ = evaluate_settings(model, val_set, default)
            row = {"epoch": epoch + 1, "train_loss": stats.pop("loss"), **stats,
                   "lr": optimizer.param_groups[0]["lr"], "val_ap": val["ap"],
                   "val_ap50": val["ap50"], "val_ap75": val["ap75"],
                   "seconds": time.perf_counter() - t0}  # fmt: skip
            for k, v in row.items():
                history.setdefault(k, []).append(v)
            if cfg.select_metric == "last" or best is None or row["val_ap"] > best:
                best, best_epoch = row["val_ap"], epoch
            state = dict(
                model=model.state_dict(), raw_model=None, ema=None,
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(), epoch=epoch, config=cfg.to_dict(), history=history,
                best=best, best_epoch=best_epoch, rng=_rng_state(loader),
            )  # fmt: skip
            if best_epoch == epoch:
                save_checkpoint(run_dir / "checkpoint.pt", **state)
            save_checkpoint(last, **state)
            log(_epoch_line(cfg.name, row, cfg.epochs, history["seconds"]))
    history["best_epoch"] = best_epoch + 1
    return history


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
    training and resumes an unfinished one. Returns the val results.

    Example:
        >>> out = train_maskrcnn(MaskRCNNConfig())   # the recipe, into runs/maskrcnn/
    """
    run_dir = Path(cfg.out_dir) / cfg.name
    if reuse:
        done = finished_results(run_dir, cfg.to_dict())
        if done is not None:
            return done
        resume = (run_dir / "checkpoint_last.pt").is_file()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    log = log or (tqdm.write if progress else (lambda line: None))
    train_set = DetectionDataset(
        make_base(cfg, "train"), DetectionAugment(cfg.aug_scale, cfg.flip_p)
    )
    val_set = make_base(cfg, "val")
    loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, device=device,
                         collate_fn=collate_detection)  # fmt: skip
    model = model_for(cfg).to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "checkpoint_last.pt", "history.json", "results_val.json"):
        remove_stale_temps(run_dir / name)  # debris of a killed save
    history = _fit(cfg, model, loader, val_set, device, run_dir, resume, progress, log)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["model"])
    params, table = tune_postprocessing(model, val_set, grid or POSTPROCESS_GRID)
    write_json(
        {"selected_on": "val", "params": params, "grid": table}, run_dir / "postprocess.json"
    )
    write_json(history, run_dir / "history.json")
    if figures:
        fig = viz.plot_loss_terms(history, LOSS_TERMS, cfg.name)
        fig.savefig(run_dir / "loss_curve.png", dpi=100, bbox_inches="tight")
    return _results(run_dir, "val", cfg, model, val_set, params, device, figures)  # last: done


def _results(
    run_dir: Path,
    split: str,
    cfg: MaskRCNNConfig,
    model: nn.Module,
    dataset: PennFudanDataset,
    params: Params,
    device: torch.device,
    figures: bool,
) -> dict[str, Any]:
    """Evaluate ``split`` with ``params``; write results_<split>.json (and the figure)."""
    (metrics,), labels, ms = evaluate_settings(model, dataset, [params], keep=PREVIEW_COUNT)
    hist = run_dir / "history.json"
    history = json.loads(hist.read_text()) if hist.is_file() else {}
    out = {
        "run": run_dir.name, "split": split, "task": cfg.task, "stems": dataset.stems,
        "config": cfg.to_dict(), "postprocess": params,
        "epochs_run": len(history.get("epoch", [])), "best_epoch": history.get("best_epoch"),
        "train_seconds": sum(history.get("seconds", [])), "hardware": hardware(device),
        "inference_ms_per_image": ms, "metrics": metrics,
        "reference": {**MASK_RCNN_REFERENCE, "ap_minus_reference": metrics["ap"]
                      - MASK_RCNN_REFERENCE["mask_ap"]},
    }  # fmt: skip
    write_json(out, run_dir / f"results_{split}.json")
    if figures:
        raws = [dataset.raw(i) for i in range(len(labels))]
        fig = viz.show_instances([r[0] for r in raws], [r[1] for r in raws], labels,
                                 titles=dataset.stems[: len(labels)])  # fmt: skip
        fig.savefig(run_dir / f"instances_{split}.png", dpi=100, bbox_inches="tight")
    return out


# ------------------------------------------------------------------------ a finished run
def run_task(run_dir: str | os.PathLike) -> str:
    """The task of a run folder's checkpoint ("maskrcnn", "watershed", ...; see
    :func:`segkit.config.config_task`)."""
    path = Path(run_dir) / "checkpoint.pt"
    return config_task(load_checkpoint(path, require=("model", "config"))["config"])


def load_maskrcnn_run(
    run_dir: str | os.PathLike, device: torch.device | str | None = None
) -> tuple[nn.Module, MaskRCNNConfig, Params]:
    """The selected model of a run folder (eval mode, on ``device``, default CPU), its config
    and its thresholds (postprocess.json, else the config's defaults)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder (expected <out_dir>/<run name>)")
    path = run_dir / "checkpoint.pt"
    ck = load_checkpoint(path, require=("model", "config"))
    if config_task(ck["config"]) != "maskrcnn":
        raise CheckpointError(
            f"{path}: holds {describe_config(ck['config'])}, not a Mask R-CNN run"
        )
    cfg = MaskRCNNConfig.from_dict(ck["config"])
    model = model_for(cfg, init_weights=False)
    load_model_state(model, ck, path, "a Mask R-CNN model")
    params = {"score_threshold": cfg.score_threshold, "mask_threshold": cfg.mask_threshold}
    pp = run_dir / "postprocess.json"
    if pp.is_file():
        params = json.loads(pp.read_text())["params"]
    return model.to(device or "cpu").eval(), cfg, params


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
    dataset = make_base(cfg, split, data_dir)
    return _results(Path(run_dir), split, cfg, model, dataset, params, dev, figures)

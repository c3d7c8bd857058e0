"""An instance-segmentation run folder (Penn-Fudan, Deep-Watershed style) from an
:class:`~segkit.config.InstanceConfig`: train, pick the checkpoint (val loss) and the watershed
thresholds (val AP), evaluate a split at original resolution, and the run's figures.

The run folder is ``<cfg.out_dir>/<cfg.name>/``: checkpoint.pt, checkpoint_last.pt,
history.json, postprocess.json, results_<split>.json, loss_curve.png, instances_<split>.png and
energy_<split>.png. :func:`segkit.runner.run_folder` runs it with the Task ``WATERSHED``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from . import viz
from .config import InstanceConfig, config_task
from .data import make_loader
from .energy import expected_energy, remove_small, score_instances, watershed_from_maps
from .engine import train
from .losses import DWTLoss
from .metrics.mask_ap import InstanceEvaluator
from .models.instance_unet import InstanceUNet, split_logits
from .optim import build_optimizer
from .pennfudan import InstanceAugment, InstanceTransform, PennFudanDataset
from .runner import (
    Run,
    Task,
    load_run,
    postprocess_params,
    register_run_task,
    run_folder,
    run_summary,
    save_figures,
    write_postprocess,
)
from .utils import get_device, hardware, resolve_channels_last, write_json

MASK_RCNN_REFERENCE = {
    "model": "torchvision tutorial Mask R-CNN ResNet-50-FPN, COCO-pretrained, 10 epochs",
    "mask_ap": 0.761,
    "note": "its own random 50-image test split; COCO mask AP at original resolution",
}
HEADLINE = ("ap", "ap50", "ap75", "mean_best_iou")  # the metrics a one-line summary shows
PREVIEW_COUNT = 5  # images in instances_<split>.png / energy_<split>.png
POSTPROCESS_GRID: dict[str, tuple] = {
    "sem_threshold": (0.2, 0.3, 0.4, 0.5, 0.6),
    "core_level": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0),  # energy levels (0..K-1)
    "min_size": (0, 200, 800),  # pixels at original resolution (smallest GT: 77, 5%: ~2600)
}
# the watershed model keeps the epoch of the lowest val loss: its mask AP needs the post-processing,
# which is chosen on val after training (its config's select_metric is Mask R-CNN's)
SELECT_METRIC = "val_loss"
Maps = list[tuple[np.ndarray, np.ndarray]]  # per image: (prob (H, W), energy (H, W)) float32
LEGACY_FIELDS = {"body": "model", "scale": "aug_scale"}  # config names before the redesign


def make_dataset(
    cfg: InstanceConfig,
    split: str,
    transform: InstanceTransform | None = None,
    data_dir: str | os.PathLike | None = None,
) -> PennFudanDataset:
    """The Penn-Fudan ``split`` as ``cfg`` defines it (sizes, levels, split, per-split limit);
    ``data_dir`` overrides ``cfg.data_dir``."""
    limit = {"train": cfg.limit_train, "val": cfg.limit_val, "test": cfg.limit_test}
    return PennFudanDataset(
        split,
        data_dir or cfg.data_dir,
        transform,
        short_side=cfg.short_side,
        max_size=cfg.max_size,
        num_energy_levels=cfg.num_energy_levels,
        limit=limit.get(split),
        split_seed=cfg.split_seed,
        val_size=cfg.val_size,
        test_size=cfg.test_size,
    )


# ------------------------------------------------------------- maps, post-processing, AP
@torch.inference_mode()
def image_maps(
    model: torch.nn.Module, image: torch.Tensor, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The one forward pass of a watershed model, for evaluation and ``segkit predict`` alike:
    a working-size image, zero-padded bottom/right to a multiple of 32, through the model (on
    its own device, as it is); the padding cut off, both maps resized bilinearly to ``size``
    (semantic logits before the sigmoid).

    Shape: image (3, h, w) uint8 or float in [0, 1] -> prob (H, W) float32, energy (H, W)
    float32, (H, W) = ``size``.
    """
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    h, w = image.shape[-2:]
    x = image.float().div(255) if image.dtype == torch.uint8 else image.float().clamp(0, 1)
    x = F.pad(x.to(device)[None], (0, -w % 32, 0, -h % 32))  # (1, 3, h', w')
    logits = model(x)[..., :h, :w].float()  # (1, 1 + K, h, w)
    sem, energy = split_logits(logits)  # (1, 1, h, w), (1, K, h, w)
    maps = torch.cat([sem, expected_energy(energy)[:, None]], dim=1)  # (1, 2, h, w)
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[0].cpu()
    return torch.sigmoid(maps[0]).numpy(), maps[1].numpy()  # (H, W), (H, W)


@torch.inference_mode()
def predict_maps(
    model: torch.nn.Module, dataset: PennFudanDataset, indices: list[int] | None = None
) -> Maps:
    """:func:`image_maps` of each image of ``dataset`` at its *original* size (the model sees
    the working-size image; train/eval mode is restored).

    Shape: returns, per image, ``(prob (H, W) float32, energy (H, W) float32)``.
    """
    was_training = model.training
    model.eval()
    try:
        return [image_maps(model, dataset.resized(i)[0], dataset.sizes[i])
                for i in (range(len(dataset)) if indices is None else indices)]  # fmt: skip
    finally:
        model.train(was_training)


def evaluate_maps(
    maps: Maps,
    gts: list[np.ndarray],
    sem_threshold: float,
    core_level: float,
    min_size: int,
    labels: list[np.ndarray] | None = None,
    matches: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Watershed each image's maps, score instances, and return (metrics, predicted labels).

    ``labels`` (watershed results with ``min_size=0``) may be passed to skip the watershed;
    ``matches``: also save the per-image matches there (:meth:`InstanceEvaluator.save`).

    Shape: gts and the returned labels: per image (H, W) int label maps, 0 = background.
    """
    ev = InstanceEvaluator()
    preds = []
    for k, ((prob, energy), gt) in enumerate(zip(maps, gts, strict=True)):
        lab = (
            watershed_from_maps(prob, energy, sem_threshold, core_level)
            if labels is None
            else labels[k]
        )
        lab = remove_small(lab, min_size)  # (H, W)
        ev.update(lab, score_instances(lab, prob), gt)
        preds.append(lab)
    if matches is not None:
        ev.save(matches)
    return ev.compute(), preds


def tune_postprocessing(
    maps: Maps, gts: list[np.ndarray], grid: dict[str, tuple] = POSTPROCESS_GRID
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid search of the watershed thresholds for the highest AP@[.5:.95] (use val only).

    Returns the best ``{"sem_threshold", "core_level", "min_size"}`` and one row per setting.
    """
    table, best, best_key = [], {}, (-1.0, -1.0)
    for t in grid["sem_threshold"]:
        for c in grid["core_level"]:
            labels = [watershed_from_maps(p, e, t, c) for p, e in maps]
            for m in grid["min_size"]:
                res, _ = evaluate_maps(maps, gts, t, c, m, labels=labels)
                row = {
                    "sem_threshold": t,
                    "core_level": c,
                    "min_size": m,
                    "ap": res["ap"],
                    "ap50": res["ap50"],
                    "mean_best_iou": res["mean_best_iou"],
                }
                table.append(row)
                if (res["ap"], res["ap50"]) > best_key:
                    best_key = (res["ap"], res["ap50"])
                    best = {"sem_threshold": t, "core_level": c, "min_size": m}
    return best, table


def save_instance_figures(
    run_dir: str | os.PathLike,
    split: str,
    dataset: PennFudanDataset,
    maps: Maps,
    preds: list[np.ndarray],
) -> list[Path]:
    """instances_<split>.png (image / GT / prediction) and energy_<split>.png, first 5 images."""
    run_dir = Path(run_dir)
    ids = list(range(min(PREVIEW_COUNT, len(dataset))))
    raws = [dataset.raw(i) for i in ids]
    images, titles = [r[0] for r in raws], [dataset.stems[i] for i in ids]
    figs = {
        f"instances_{split}.png": viz.show_instances(
            images, [r[1] for r in raws], [preds[i] for i in ids], titles=titles
        ),
        f"energy_{split}.png": viz.show_energy(
            images,
            [maps[i][0] for i in ids],
            [maps[i][1] for i in ids],
            [preds[i] for i in ids],
            titles=titles,
        ),
    }
    return save_figures(run_dir, figs)


# ------------------------------------------------------------------------------ the run
def build_instance_model(cfg: InstanceConfig, init_weights: bool = True) -> InstanceUNet:
    """The run's two-head UNet (``init_weights=False``: no pretrained weights are read, the
    checkpoint holds them all)."""
    return InstanceUNet(cfg.model, cfg.num_energy_levels, cfg.weights if init_weights else None)


@dataclass
class InstanceData:
    """The train and val data of a watershed run."""

    train_set: PennFudanDataset
    val_set: PennFudanDataset
    train_loader: DataLoader
    val_loader: DataLoader  # batch 1: the images' sizes differ


def _load_data(run: Run) -> InstanceData:
    cfg = run.cfg
    train_set = make_dataset(
        cfg, "train", InstanceAugment(cfg.crop_size, cfg.aug_scale, cfg.flip_p)
    )
    val_set = make_dataset(cfg, "val")
    return InstanceData(
        train_set,
        val_set,
        make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, device=run.device),
        make_loader(val_set, 1, shuffle=False, device=run.device),
    )


def _fit(run: Run, model: nn.Module, data: InstanceData) -> tuple[nn.Module, dict[str, list]]:
    cfg, device = run.cfg, run.device
    optimizer, scheduler = build_optimizer(cfg, model, cfg.epochs * len(data.train_loader))
    return train(
        model, optimizer, DWTLoss(cfg.energy_weight), data.train_loader, device, scheduler,
        epochs=cfg.epochs, valloader=data.val_loader, save_path=run.best_path,
        select_metric=SELECT_METRIC, config=cfg.to_dict(), resume_from=run.resume_from,
        amp=cfg.amp, channels_last=resolve_channels_last(cfg.channels_last, device),
        progress=run.progress, name=cfg.name, log=run.log,
    )  # fmt: skip


def _evaluate(
    run: Run, model: nn.Module, data: InstanceData, history: dict[str, list]
) -> tuple[dict[str, Any], tuple[PennFudanDataset, Maps, list[np.ndarray]]]:
    """Thresholds chosen on val (postprocess.json), then the val results with them."""
    val_set = data.val_set
    maps = predict_maps(model, val_set)
    gts = [val_set.raw(i)[1].numpy() for i in range(len(val_set))]
    params, table = tune_postprocessing(maps, gts, run.options.get("grid") or POSTPROCESS_GRID)
    metrics, preds = evaluate_maps(maps, gts, **params)
    write_postprocess(run, params, table)
    out = {**run_summary(run, history), "stems": val_set.stems, "postprocess": params,
           "metrics": metrics}  # fmt: skip
    return out, (val_set, maps, preds)


def _figures(
    run: Run, history: dict[str, list], drawn: tuple[PennFudanDataset, Maps, list[np.ndarray]]
) -> list[Path]:
    loss = save_figures(run.run_dir, {"loss_curve.png": viz.plot_history(history)})
    return loss + save_instance_figures(run.run_dir, "val", *drawn)


def _config_from_checkpoint(config: dict[str, Any]) -> InstanceConfig:
    """The run's config; runs saved before the redesign name ``model`` ``body`` and
    ``aug_scale`` ``scale`` (their ``out_dir`` was the run folder itself: not used here)."""
    config = {"task": config_task(config), **config}  # inferred before the legacy names go
    for old, new in LEGACY_FIELDS.items():
        if old in config and new not in config:
            config[new] = config.pop(old)
    return InstanceConfig.from_dict(config)


WATERSHED = register_run_task(
    Task(
        "watershed", build_instance_model, _load_data, _fit, _evaluate, _figures,
        _config_from_checkpoint, "an instance run (use `segkit evaluate` for semantic runs)",
    )
)  # fmt: skip


def train_instance(
    cfg: InstanceConfig,
    *,
    progress: bool = True,
    figures: bool = True,
    grid: dict[str, tuple] | None = None,
    resume: bool = False,
    reuse: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train on train, pick the checkpoint (val loss) and watershed thresholds (val AP over
    ``grid``, default :data:`POSTPROCESS_GRID`), and write ``<out_dir>/<name>/``: checkpoint.pt,
    checkpoint_last.pt, history.json, postprocess.json, results_val.json, loss_curve.png,
    instances_val.png, energy_val.png. ``resume`` continues an interrupted run from its
    ``checkpoint_last.pt``; ``reuse`` returns a finished run's results (same config) without
    training and resumes an unfinished one. Returns the val results (as in results_val.json).
    The run itself is :func:`segkit.runner.run_folder`'s."""
    return run_folder(
        cfg, progress=progress, figures=figures, resume=resume, reuse=reuse, log=log,
        options={"grid": grid},
    )[0]  # fmt: skip


def load_instance_run(
    run_dir: str | os.PathLike, device: torch.device | str | None = None
) -> tuple[InstanceUNet, InstanceConfig, dict[str, Any]]:
    """The best model of a run folder (in eval mode on ``device``, default CPU), its
    :class:`InstanceConfig` and its post-processing thresholds (postprocess.json, else the
    config's defaults)."""
    model, cfg = load_run(run_dir, WATERSHED.name, device)
    defaults = {"sem_threshold": cfg.sem_threshold, "core_level": cfg.core_level,
                "min_size": cfg.min_size}  # fmt: skip
    return model, cfg, postprocess_params(run_dir, defaults)  # type: ignore[return-value]


def evaluate_instance_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    device: str = "auto",
    data_dir: str | None = None,
    *,
    figures: bool = True,
) -> dict[str, Any]:
    """Evaluate a run on ``split`` at original resolution (the config's ``limit_<split>``
    applies); writes results_<split>.json and instances_<split>.png / energy_<split>.png in
    the run folder. Returns the results dict."""
    dev = get_device(device)
    run_dir = Path(run_dir)
    model, cfg, params = load_instance_run(run_dir, dev)
    dataset = make_dataset(cfg, split, data_dir=data_dir)
    t0 = time.perf_counter()
    maps = predict_maps(model, dataset)  # .cpu() inside waits for CUDA
    labels = [watershed_from_maps(p, e, params["sem_threshold"], params["core_level"])
              for p, e in maps]  # fmt: skip
    ms = 1000 * (time.perf_counter() - t0) / max(1, len(dataset))  # forward + watershed
    gts = [dataset.raw(i)[1].numpy() for i in range(len(dataset))]
    matches = run_dir / f"matches_{split}.npz"  # per image: the paired comparison's input
    metrics, preds = evaluate_maps(maps, gts, **params, labels=labels, matches=matches)
    ref_ap = MASK_RCNN_REFERENCE["mask_ap"]
    val = run_dir / "results_val.json"
    train_info = json.loads(val.read_text()) if val.is_file() else {}
    out = {
        "run": run_dir.name,
        "split": split,
        "stems": dataset.stems,
        "config": cfg.to_dict(),
        "postprocess": params,
        "epochs_run": train_info.get("epochs_run"),
        "best_epoch": train_info.get("best_epoch"),
        "train_seconds": train_info.get("train_seconds"),
        "hardware": hardware(dev),
        "train_hardware": train_info.get("hardware"),
        "inference_ms_per_image": ms,
        "metrics": metrics,
        "reference": {**MASK_RCNN_REFERENCE, "ap_minus_reference": metrics["ap"] - ref_ap},
    }
    write_json(out, run_dir / f"results_{split}.json")
    if figures:
        save_instance_figures(run_dir, split, dataset, maps, preds)
    return out

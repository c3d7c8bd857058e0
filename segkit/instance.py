"""An instance-segmentation run folder (Penn-Fudan, Deep-Watershed style) from an
:class:`~segkit.config.InstanceConfig`: train, pick the checkpoint (val loss) and the watershed
thresholds (val AP), evaluate a split at original resolution, and the run's figures.

The run folder is ``<cfg.out_dir>/<cfg.name>/``: checkpoint.pt, checkpoint_last.pt,
history.json, postprocess.json, results_<split>.json, loss_curve.png, instances_<split>.png and
energy_<split>.png.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import viz
from .checkpoint import (
    CheckpointError,
    describe_config,
    finished_results,
    load_checkpoint,
    load_model_state,
)
from .config import InstanceConfig, config_task
from .data import make_loader
from .energy import expected_energy, remove_small, score_instances, watershed_from_maps
from .engine import train
from .losses import DWTLoss
from .metrics.mask_ap import InstanceEvaluator
from .models.instance_unet import InstanceUNet, split_logits
from .optim import build_optimizer
from .pennfudan import InstanceAugment, InstanceTransform, PennFudanDataset, pad_to_multiple
from .utils import (
    get_device,
    hardware,
    remove_stale_temps,
    resolve_channels_last,
    seed_everything,
    write_json,
)

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
def predict_maps(
    model: torch.nn.Module, dataset: PennFudanDataset, indices: list[int] | None = None
) -> Maps:
    """Foreground probability and expected energy of each image, at its *original* size, with
    the model on its own device (nothing is moved; train/eval mode is restored).

    The model sees the working-size image padded to a multiple of 32; the padding is cut off
    and both maps are resized bilinearly back (semantic logits before the sigmoid).

    Shape: returns, per image, ``(prob (H, W) float32, energy (H, W) float32)``.
    """
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(len(dataset)) if indices is None else indices:
            image, instances = dataset.resized(i)  # (3, h, w), (h, w) uint8
            h, w = instances.shape
            padded, _ = pad_to_multiple(image, instances)  # (3, h', w')
            logits = model(padded[None].float().div(255).to(device))[..., :h, :w].float()
            sem, energy = split_logits(logits)  # (1, 1, h, w), (1, K, h, w)
            maps = torch.cat([sem, expected_energy(energy)[:, None]], dim=1)  # (1, 2, h, w)
            maps = F.interpolate(maps, size=dataset.sizes[i], mode="bilinear", align_corners=False)
            maps = maps[0].cpu()  # (2, H, W)
            out.append((torch.sigmoid(maps[0]).numpy(), maps[1].numpy()))
    finally:
        model.train(was_training)
    return out


def evaluate_maps(
    maps: Maps,
    gts: list[np.ndarray],
    sem_threshold: float,
    core_level: float,
    min_size: int,
    labels: list[np.ndarray] | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Watershed each image's maps, score instances, and return (metrics, predicted labels).

    ``labels`` (watershed results with ``min_size=0``) may be passed to skip the watershed.

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
    paths = []
    for name, fig in figs.items():
        fig.savefig(run_dir / name, dpi=100, bbox_inches="tight")
        paths.append(run_dir / name)
    return paths


# ------------------------------------------------------------------------------ the run
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
    training and resumes an unfinished one. Returns the val results (as in results_val.json)."""
    if reuse:
        done = finished_results(Path(cfg.out_dir) / cfg.name, cfg.to_dict())
        if done is not None:
            return done
        resume = (Path(cfg.out_dir) / cfg.name / "checkpoint_last.pt").is_file()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    run_dir = Path(cfg.out_dir) / cfg.name
    aug = InstanceAugment(cfg.crop_size, cfg.aug_scale, cfg.flip_p)
    train_set = make_dataset(cfg, "train", aug)
    val_set = make_dataset(cfg, "val")
    train_loader = make_loader(
        train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, device=device
    )
    val_loader = make_loader(val_set, 1, shuffle=False, device=device)  # sizes differ
    model = InstanceUNet(cfg.model, cfg.num_energy_levels, cfg.weights)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "checkpoint_last.pt", "history.json", "results_val.json"):
        remove_stale_temps(run_dir / name)  # debris of a killed save
    optimizer, scheduler = build_optimizer(cfg, model, cfg.epochs * len(train_loader))
    model, history = train(
        model,
        optimizer,
        DWTLoss(cfg.energy_weight),
        train_loader,
        device,
        scheduler,
        epochs=cfg.epochs,
        valloader=val_loader,
        save_path=run_dir / "checkpoint.pt",
        select_metric="val_loss",
        config=cfg.to_dict(),
        resume_from=run_dir / "checkpoint_last.pt" if resume else None,
        amp=cfg.amp,
        channels_last=resolve_channels_last(cfg.channels_last, device),
        progress=progress,
        name=cfg.name,
        log=log,
    )
    maps = predict_maps(model, val_set)
    gts = [val_set.raw(i)[1].numpy() for i in range(len(val_set))]
    params, table = tune_postprocessing(maps, gts, grid or POSTPROCESS_GRID)
    metrics, preds = evaluate_maps(maps, gts, **params)
    write_json(
        {"selected_on": "val", "params": params, "grid": table}, run_dir / "postprocess.json"
    )
    out = {
        "run": cfg.name,
        "split": "val",
        "stems": val_set.stems,
        "config": cfg.to_dict(),
        "epochs_run": len(history["epoch"]),
        "best_epoch": history["best_epoch"],
        "train_seconds": sum(history["seconds"]),  # across resumes
        "hardware": hardware(device),
        "postprocess": params,
        "metrics": metrics,
    }
    write_json(history, run_dir / "history.json")
    write_json(out, run_dir / "results_val.json")
    if figures:
        fig = viz.plot_history(history)
        fig.savefig(run_dir / "loss_curve.png", dpi=100, bbox_inches="tight")
        save_instance_figures(run_dir, "val", val_set, maps, preds)
    return out


def _config_from_checkpoint(config: dict[str, Any]) -> InstanceConfig:
    """The run's config; runs saved before the redesign name ``model`` ``body`` and
    ``aug_scale`` ``scale`` (their ``out_dir`` was the run folder itself: not used here)."""
    config = {"task": config_task(config), **config}  # inferred before the legacy names go
    for old, new in LEGACY_FIELDS.items():
        if old in config and new not in config:
            config[new] = config.pop(old)
    return InstanceConfig.from_dict(config)


def load_instance_run(
    run_dir: str | os.PathLike, device: torch.device | str | None = None
) -> tuple[InstanceUNet, InstanceConfig, dict[str, Any]]:
    """The best model of a run folder (in eval mode on ``device``, default CPU), its
    :class:`InstanceConfig` and its post-processing thresholds (postprocess.json, else the
    config's defaults)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder (expected <out_dir>/<run name>)")
    path = run_dir / "checkpoint.pt"
    ck = load_checkpoint(path, require=("model", "config"))
    if config_task(ck["config"]) != InstanceConfig.task:
        raise CheckpointError(
            f"{path}: holds {describe_config(ck['config'])}; expected an instance run "
            "(use `segkit evaluate` for semantic runs)"
        )
    cfg = _config_from_checkpoint(ck["config"])
    # the checkpoint holds every weight: never load pretrained ones again
    model = InstanceUNet(cfg.model, cfg.num_energy_levels, weights=None)
    load_model_state(model, ck, path, f"an instance {cfg.model!r} model")
    params = {
        "sem_threshold": cfg.sem_threshold,
        "core_level": cfg.core_level,
        "min_size": cfg.min_size,
    }
    pp = run_dir / "postprocess.json"
    if pp.is_file():
        params = json.loads(pp.read_text())["params"]
    return model.to(device or "cpu").eval(), cfg, params


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
    maps = predict_maps(model, dataset)
    gts = [dataset.raw(i)[1].numpy() for i in range(len(dataset))]
    metrics, preds = evaluate_maps(maps, gts, **params)
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
        "metrics": metrics,
        "reference": {**MASK_RCNN_REFERENCE, "ap_minus_reference": metrics["ap"] - ref_ap},
    }
    write_json(out, run_dir / f"results_{split}.json")
    if figures:
        save_instance_figures(run_dir, split, dataset, maps, preds)
    return out

"""A semantic-segmentation run from a :class:`TrainConfig`: data, model, optimiser, training,
evaluation, and a run folder with checkpoint, history, results and figures. What is semantic
about it is the :class:`~segkit.runner.Task` ``SEMANTIC``; :func:`segkit.runner.run_folder` runs
the folder."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader

from . import viz
from .baseline import simple_predict, simple_train
from .checkpoint import load_checkpoint
from .config import TrainConfig, model_label
from .data import Augment, SegmentationDataset, make_loader, split_label_counts
from .engine import evaluate, train
from .losses import segmentation_loss, weighting
from .metrics import SegmentationResults, segmentation_eval
from .models import create_model
from .optim import build_optimizer
from .runner import Run, Task, load_run, register_run_task, run_folder, run_summary, save_figures
from .utils import get_device, hardware, resolve_channels_last, write_json

PREVIEW_IDS = (0, 10, 20, 30, 40)  # the fixed test images shown in every run's figure


def evaluate_split(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    batch_size: int = 8,
    amp: bool = True,
    tta: bool = False,
    cpu_bf16: bool = False,
) -> SegmentationResults:
    """:func:`segkit.engine.evaluate` of ``model`` (on its own device) over a whole split."""
    loader = make_loader(dataset, batch_size, shuffle=False)
    names = dataset.classes
    return evaluate(
        model, loader, len(names), class_names=names, amp=amp, tta=tta, cpu_bf16=cpu_bf16
    )[1]


def save_run_figures(
    run_dir: str | os.PathLike, device: str | torch.device = "cpu", data_dir: str | None = None
) -> list[Path]:
    """Figures of a finished run, from its folder: loss curve, val confusion matrix with AP and
    IoU columns, and image / ground truth / prediction for the fixed test images."""
    run_dir = Path(run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "results_val.json").read_text())["metrics"]
    model, cfg = load_run_model(run_dir, get_device(device))
    test = SegmentationDataset("test", data_dir or cfg.data_dir, preload=False)
    figs = {
        "loss_curve.png": viz.plot_history(history, model_label(cfg.model)),
        "confusion_val.png": viz.plot_confusion_matrix(
            np.array(metrics["confusion"]),
            metrics["class_names"],
            ap=metrics["ap"],
            iou=metrics["iou"],
        ),
        "predictions_test.png": viz.show_predictions(
            model, test, [i for i in PREVIEW_IDS if i < len(test)], next(model.parameters()).device
        ),
    }
    return save_figures(run_dir, figs, dpi=120)


def build_semantic_model(cfg: TrainConfig, init_weights: bool = True) -> nn.Module:
    """The run's model (``init_weights=False``: no pretrained weights are read, the checkpoint
    holds them all)."""
    if not init_weights:
        return create_model(cfg.model, cfg.num_classes, None)
    return create_model(cfg.model, cfg.num_classes, cfg.weights, freeze_encoder=cfg.freeze_encoder)


@dataclass
class SemanticData:
    """The train and val data of a semantic run, and the loss's class weights."""

    train_set: SegmentationDataset
    val_set: SegmentationDataset
    train_loader: DataLoader
    val_loader: DataLoader
    weights: torch.Tensor | None  # (num_classes,) on the run's device, or None


def _load_data(run: Run) -> SemanticData:
    cfg, device = run.cfg, run.device
    train_set = SegmentationDataset(
        "train", cfg.data_dir, limit=cfg.limit_train, progress=run.progress
    )
    # crops are resized back to the dataset's image size (224 x 288 for the course data)
    train_set.transform = Augment(
        cfg.aug_scale, cfg.aug_ratio, cfg.flip_p, size=train_set.image_size
    ).build()
    val_set = SegmentationDataset("val", cfg.data_dir, limit=cfg.limit_val, progress=run.progress)
    train_loader = make_loader(
        train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, device=device
    )
    val_loader = make_loader(val_set, cfg.batch_size, shuffle=False, device=device)
    weights = None
    if cfg.class_weighting != "none":
        # from the whole train split's labels, also in quick runs (a 16-image subset gives sky
        # weight 0 and misc 8): the loss is the same function of the model in every mode
        counts = split_label_counts("train", cfg.data_dir)
        weights = weighting(cfg.class_weighting, counts, cfg.weight_cap).to(device)  # type: ignore[union-attr]
    return SemanticData(train_set, val_set, train_loader, val_loader, weights)


def _fit(run: Run, model: nn.Module, data: SemanticData) -> tuple[nn.Module, dict[str, list]]:
    cfg, device = run.cfg, run.device
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed input size: tune the kernels
    criterion = partial(segmentation_loss, weights=data.weights, dice_weight=cfg.dice_weight)
    optimizer, scheduler = build_optimizer(cfg, model, cfg.epochs * len(data.train_loader))
    return train(
        model, optimizer, criterion, data.train_loader, device, scheduler, epochs=cfg.epochs,
        num_early_stop=cfg.early_stop, valloader=data.val_loader, save_path=run.best_path,
        num_classes=cfg.num_classes, select_metric=cfg.select_metric, config=cfg.to_dict(),
        amp=cfg.amp, channels_last=resolve_channels_last(cfg.channels_last, device),
        progress=run.progress, resume_from=run.resume_from, name=cfg.name,
        cpu_bf16=cfg.cpu_bf16, ema_decay=cfg.ema_decay, log=run.log,
    )  # fmt: skip


def _evaluate(
    run: Run, model: nn.Module, data: SemanticData, history: dict[str, list]
) -> tuple[dict, None]:
    cfg = run.cfg
    results = evaluate_split(model, data.val_set, cfg.batch_size, cfg.amp, cfg.tta, cfg.cpu_bf16)
    out = {
        **run_summary(run, history),
        "class_weights": None if data.weights is None else data.weights.cpu().tolist(),
        "metrics": results.to_dict(),
        "ablation": _lever_ablation(cfg, model, run.best_path, data.val_set),
    }
    return out, None


def _figures(run: Run, history: dict[str, list], drawn: None) -> list[Path]:
    return save_run_figures(run.run_dir, run.device, run.cfg.data_dir)


SEMANTIC = register_run_task(
    Task(
        "semantic", build_semantic_model, _load_data, _fit, _evaluate, _figures,
        TrainConfig.from_dict, "a semantic run (use `segkit instance evaluate` for instance runs)",
    )
)  # fmt: skip


def run_experiment(
    cfg: TrainConfig,
    *,
    progress: bool = True,
    figures: bool = True,
    resume: bool = False,
    reuse: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``cfg`` and write ``<out_dir>/<name>/``: checkpoint.pt, history.json, results_val.json,
    loss_curve.png, confusion_val.png, predictions_test.png. Returns the val results dict (as in
    results_val.json) plus the training ``history``. ``resume`` continues an interrupted run from
    its ``checkpoint_last.pt``; ``reuse`` returns a finished run's results (same config) without
    training, and resumes an unfinished one. ``log`` gets one line per epoch (see
    :func:`segkit.engine.train`). The run itself is :func:`segkit.runner.run_folder`'s."""
    out, history = run_folder(
        cfg, progress=progress, figures=figures, resume=resume, reuse=reuse, log=log
    )
    return {**out, "history": history}


def _lever_ablation(
    cfg: TrainConfig, model: torch.nn.Module, checkpoint: Path, val_set: SegmentationDataset
) -> dict[str, dict[str, float]]:
    """Val numbers of the selected checkpoint without each evaluation-side lever of the recipe:
    ``no_tta`` (plain forward pass) and ``no_ema`` (the raw weights saved beside the average).
    The reported numbers always use the recipe's setting, fixed before training."""
    keys = ("mean_ap", "miou", "pixel_acc")
    out: dict[str, dict[str, float]] = {}
    if cfg.tta:
        r = evaluate_split(model, val_set, cfg.batch_size, cfg.amp, False, cfg.cpu_bf16)
        out["no_tta"] = {k: getattr(r, k) for k in keys}
    ck = load_checkpoint(checkpoint) if cfg.ema_decay and checkpoint.is_file() else {}
    if ck.get("raw_model") is not None:
        raw = copy.deepcopy(model)
        raw.load_state_dict(ck["raw_model"])
        r = evaluate_split(raw, val_set, cfg.batch_size, cfg.amp, cfg.tta, cfg.cpu_bf16)
        out["no_ema"] = {k: getattr(r, k) for k in keys}
    return out


def load_run_model(
    run_dir: str | os.PathLike, device: torch.device | None = None
) -> tuple[nn.Module, TrainConfig]:
    """The best model of a run folder (eval mode, on ``device``, default CPU) and its
    :class:`TrainConfig`."""
    return load_run(run_dir, SEMANTIC.name, device)


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    device: str = "auto",
    data_dir: str | None = None,
    limit: int | None = None,
) -> dict:
    """Evaluate a finished run on ``split`` and write ``results_<split>.json`` in its folder
    (``limit``: first N images only, for smoke tests; recorded in the file)."""
    dev = get_device(device)
    model, cfg = load_run_model(run_dir, dev)
    dataset = SegmentationDataset(split, data_dir or cfg.data_dir, limit=limit)
    results = evaluate_split(model, dataset, cfg.batch_size, cfg.amp, cfg.tta, cfg.cpu_bf16)
    out = {
        "run": cfg.name,
        "split": split,
        "num_images": len(dataset),
        "config": cfg.to_dict(),
        "hardware": hardware(dev),
        "metrics": results.to_dict(),
    }
    # test results sit beside the training's results_val.json; other splits never overwrite it
    name = "results_test.json" if split == "test" else f"eval_{split}.json"
    write_json(out, Path(run_dir) / name)
    return out


def run_baseline(
    data_dir: str | None = None,
    split: str = "val",
    out: str | None = None,
    limit: int | None = None,
) -> dict:
    """Q2: fit the per-pixel class-frequency baseline on train, evaluate it on ``split``
    (``limit``: first N images of each split only, for smoke tests)."""
    train_set = SegmentationDataset("train", data_dir, limit=limit)
    eval_set = SegmentationDataset(split, data_dir, limit=limit)
    freq = simple_train(len(train_set.classes), make_loader(train_set, 32, shuffle=False))
    gts, preds = simple_predict(make_loader(eval_set, 32, shuffle=False), freq)
    results = segmentation_eval(
        torch.from_numpy(preds),
        torch.from_numpy(gts[:, 0]),
        len(eval_set.classes),
        class_names=eval_set.classes,
    )
    res = {"run": "baseline", "split": split, "hardware": hardware(), "metrics": results.to_dict()}
    if out is not None:
        write_json(res, Path(out) / f"results_{split}.json")
    return res


def baseline_predictions_figure(
    data_dir: str | None = None, split: str = "test", limit: int | None = None
) -> Figure:
    """Image / ground truth / the baseline's prediction (the arg-max of the per-pixel class
    frequencies of train, the same map for every image) for the fixed preview images."""
    train_set = SegmentationDataset("train", data_dir, limit=limit, progress=False)
    freq = simple_train(len(train_set.classes), make_loader(train_set, 32, shuffle=False))
    dataset = SegmentationDataset(split, data_dir, preload=False)
    ids = [i for i in PREVIEW_IDS if i < len(dataset)]
    pairs = [dataset[i] for i in ids]
    pred = freq.argmax(0)  # (H, W): one prediction for every image
    return viz.show_segmentations(
        [p[0] for p in pairs], [p[1] for p in pairs], [pred] * len(pairs), dataset.classes
    )


def results_table(runs: dict[str, dict]) -> str:
    """A plain-text table of results dicts (as returned by ``run_experiment``/``evaluate_run``)."""
    lines = [f"{'run':16s} {'split':5s} {'mean AP':>8s} {'AP step':>8s} {'mIoU':>6s} {'acc':>6s}"]
    for name, r in runs.items():
        m = r["metrics"]
        lines.append(
            f"{name:16s} {r['split']:5s} {m['mean_ap']:8.3f} {m['mean_ap_step']:8.3f} "
            f"{m['miou']:6.3f} {m['pixel_acc']:6.3f}"
        )
    return "\n".join(lines)

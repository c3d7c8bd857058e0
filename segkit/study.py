"""Q1 augmentation study: one model, several paired crop/flip settings, the same budget."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .config import TrainConfig, recipe
from .data import Augment
from .experiment import run_experiment

AUGMENT_MODEL = "effnet_unet"  # the fastest model to train here; every setting gets the same budget
AUGMENT_EPOCHS = 2

# label -> augmentation; every setting trains the same model for the same number of epochs
AUGMENT_SETTINGS: dict[str, Augment] = {
    "none": Augment(scale=None, flip_p=0.0),
    "flip": Augment(scale=None, flip_p=0.5),
    "crop(0.8,1)+flip": Augment(scale=(0.8, 1.0), flip_p=0.5),
    "crop(0.08,1)+flip": Augment(scale=(0.08, 1.0), flip_p=0.5),
}


def study_config(base: TrainConfig, label: str, aug: Augment) -> TrainConfig:
    slug = label.replace("(", "").replace(")", "").replace(",", "-").replace("+", "_")
    return dataclasses.replace(
        base,
        aug_scale=aug.scale,
        aug_ratio=aug.ratio,
        flip_p=aug.flip_p,
        run_name=f"aug_{slug}",
        extra={**base.extra, "augment": label},
    )


def augmentation_study(
    base: TrainConfig | None = None,
    settings: dict[str, Augment] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train ``base`` once per setting; returns one row per setting (val mean AP, mIoU, ...).

    Runs whose ``results_val.json`` already exists are read back instead of retrained unless
    ``force``.
    """
    base = base or recipe(AUGMENT_MODEL, epochs=AUGMENT_EPOCHS)
    rows = []
    for label, aug in (settings or AUGMENT_SETTINGS).items():
        cfg = study_config(base, label, aug)
        done = Path(cfg.out_dir) / cfg.name / "results_val.json"
        out = (
            json.loads(done.read_text())
            if done.is_file() and not force
            else run_experiment(cfg, progress=progress)
        )
        m = out["metrics"]
        rows.append(
            {
                "augment": label,
                "run": cfg.name,
                "epochs": cfg.epochs,
                "mean_ap": m["mean_ap"],
                "mean_ap_step": m["mean_ap_step"],
                "miou": m["miou"],
                "pixel_acc": m["pixel_acc"],
                "train_seconds": out.get("train_seconds"),
            }
        )
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'augmentation':20s} {'mean AP':>8s} {'mIoU':>6s} {'pix acc':>8s}"]
    lines += [
        f"{r['augment']:20s} {r['mean_ap']:8.3f} {r['miou']:6.3f} {r['pixel_acc']:8.3f}"
        for r in rows
    ]
    return "\n".join(lines)

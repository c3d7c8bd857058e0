"""Studies: Q1 augmentation (one model, several paired crop/flip settings, the same budget)
and the seed study (run-to-run noise of a configuration)."""

from __future__ import annotations

import dataclasses
import statistics

from .config import LEVERS, TrainConfig, recipe
from .data import Augment
from .experiment import run_experiment
from .parallel import resolve_jobs, train_side_by_side

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


def augmentation_configs(
    base: TrainConfig | None = None, settings: dict[str, Augment] | None = None
) -> list[TrainConfig]:
    """One config per augmentation setting (run folders ``aug_<setting>``)."""
    base = base or recipe(AUGMENT_MODEL, epochs=AUGMENT_EPOCHS)
    return [study_config(base, k, a) for k, a in (settings or AUGMENT_SETTINGS).items()]


# The quality levers (config.LEVERS), measured at a short budget on val: inverse weights alone
# (the recipe before the levers), all three levers, and EMA + TTA with inverse weights. A run with
# flip TTA and EMA also reports itself without each (results_val.json "ablation").
LEVER_EPOCHS = 3
# key -> (label, overrides of the recipe); each setting pins every lever, whatever the recipe uses
LEVER_SETTINGS: dict[str, tuple[str, dict]] = {
    "inverse": ("inverse weights only", dict(class_weighting="inverse", ema_decay=None, tta=False)),
    "levers": ("sqrt weights + EMA + flip TTA", dict(LEVERS)),
    "levers_inverse": ("inverse weights + EMA + flip TTA", dict(LEVERS, class_weighting="inverse")),
}


def lever_configs(base: TrainConfig | None = None) -> list[TrainConfig]:
    """One config per :data:`LEVER_SETTINGS` row (run folders ``lever_<key>``)."""
    base = base or recipe(AUGMENT_MODEL, epochs=LEVER_EPOCHS)
    return [
        dataclasses.replace(
            base,
            **over,
            run_name=f"lever_{key}",
            extra={**base.extra, "setting": label, "setting_key": key},
        )  # fmt: skip
        for key, (label, over) in LEVER_SETTINGS.items()
    ]


def study_rows(configs: list[TrainConfig], *, force: bool = False, progress: bool = True) -> list:
    """Train (or read back) each config; one row per run: val mean AP, mIoU, pixel accuracy.

    A finished run with the same config is read back unless ``force``; an unfinished one resumes
    from its last checkpoint; a finished run with another config is an error."""
    rows = []
    for cfg in configs:
        # reuse: a finished run with the same config is read back, an unfinished one resumes
        out = run_experiment(cfg, progress=progress, figures=False, reuse=not force)
        m = out["metrics"]
        rows.append(
            {
                "augment": cfg.extra.get("augment"),
                "setting": cfg.extra.get("setting", cfg.extra.get("augment")),
                "key": cfg.extra.get("setting_key"),
                "model": cfg.model,
                "ema_decay": cfg.ema_decay,
                "run": cfg.name,
                "epochs": cfg.epochs,
                "mean_ap": m["mean_ap"],
                "mean_ap_step": m["mean_ap_step"],
                "miou": m["miou"],
                "pixel_acc": m["pixel_acc"],
                "train_seconds": out.get("train_seconds"),
                "ablation": out.get("ablation") or {},
            }
        )
    return rows


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
    return study_rows(augmentation_configs(base, settings), force=force, progress=progress)


def format_rows(rows: list[dict]) -> str:
    """A study's rows as a plain-text table (setting, val mean AP, mIoU, pixel accuracy)."""
    names = [r.get("setting") or r.get("augment") or "" for r in rows]  # older rows: "augment"
    width = max([20, *map(len, names)])
    lines = [f"{'setting':{width}s} {'mean AP':>8s} {'mIoU':>6s} {'pix acc':>8s}"]
    lines += [
        f"{n:{width}s} {r['mean_ap']:8.3f} {r['miou']:6.3f} {r['pixel_acc']:8.3f}"
        for n, r in zip(names, rows, strict=True)
    ]
    return "\n".join(lines)


SEED_MODELS = ("effnet_unet", "unet")  # the best model and the scratch UNet
SEEDS = (0, 1, 2)
SEED_EPOCHS = 2  # a short budget: the spread of a configuration, not its best number


def seed_configs(
    models: tuple[str, ...] = SEED_MODELS,
    seeds: tuple[int, ...] = SEEDS,
    epochs: int = SEED_EPOCHS,
    **overrides: object,
) -> dict[tuple[str, int], TrainConfig]:
    """The seed study's configs (run folders ``seed_<model>_<seed>``), keyed by (model, seed)."""
    return {
        (model, seed): dataclasses.replace(
            recipe(model, epochs=epochs, seed=seed, run_name=f"seed_{model}_{seed}"),
            **overrides,  # type: ignore[arg-type]
        )
        for model in models
        for seed in seeds
    }


def seed_study(
    models: tuple[str, ...] = SEED_MODELS,
    seeds: tuple[int, ...] = SEEDS,
    epochs: int = SEED_EPOCHS,
    *,
    force: bool = False,
    jobs: int | None = 1,
    **overrides: object,
) -> list[dict]:
    """Train each model's recipe with each seed at a short budget (``epochs``); one entry per
    model ``{"model", "epochs", "levers", "runs": [{"seed", "mean_ap", "miou", "pixel_acc"}],
    "spread", "std"}`` (``levers``: the recipe's :data:`~segkit.config.LEVERS` fields): the
    run-to-run noise that a comparison of two numbers has to exceed. ``jobs``:
    trainings side by side (``None``: 2 on a multi-core CPU; see :mod:`segkit.parallel`)."""
    configs = seed_configs(models, seeds, epochs, **overrides)
    device = str(next(iter(configs.values())).device) if configs else "auto"
    jobs = resolve_jobs(jobs, device)
    if jobs > 1:
        train_side_by_side(list(configs.values()), jobs, force)
        force = False  # just trained
    out = []
    for model in models:
        runs = []
        for seed in seeds:
            res = run_experiment(configs[model, seed], figures=False, reuse=not force)
            m = res["metrics"]
            runs.append(
                {"seed": seed, **{k: m[k] for k in ("mean_ap", "miou", "pixel_acc")},
                 "train_seconds": res["train_seconds"], "hardware": res["hardware"]}
            )  # fmt: skip
        aps = [r["mean_ap"] for r in runs]
        out.append(
            {"model": model, "epochs": epochs, "split": "val", "runs": runs,
             "levers": {k: getattr(configs[model, seeds[0]], k) for k in LEVERS},
             "spread": max(aps) - min(aps), "std": statistics.stdev(aps) if len(aps) > 1 else None}
        )  # fmt: skip
    return out

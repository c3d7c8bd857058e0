"""Studies: Q1 augmentation (one model, several paired crop/flip settings, the same budget),
the Q1 sweep (each factor on a grid, the seed spread of the same configuration) and the seed
study (run-to-run noise of a configuration)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from pathlib import Path

from .config import LEVERS, MaskRCNNConfig, TrainConfig, recipe
from .data import Augment
from .experiment import run_experiment
from .maskrcnn import evaluate_settings, load_maskrcnn_run, make_base, train_maskrcnn
from .metrics.mask_ap import InstanceEvaluator, bootstrap_ci, paired_bootstrap
from .parallel import resolve_jobs, train_side_by_side
from .utils import get_device

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


# The Q1 sweep: one factor at a time around the recipe's augmentation (crop area (0.5, 1), flip
# 0.5), the same model and budget for every point, and the seed spread of the centre point under
# that same configuration. 12 runs of 2 epochs: about 1.5 h of two workers on the 2-core CPU.
SWEEP_MODEL = AUGMENT_MODEL
SWEEP_EPOCHS = AUGMENT_EPOCHS  # the Q1 study's budget
SWEEP_JSON = "augment_sweep.json"  # in report/generated
SWEEP_CENTRE = Augment(scale=(0.5, 1.0), flip_p=0.5)  # the recipe's augmentation
SWEEP_FLIP_P: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
SWEEP_CROP_MIN: tuple[float, ...] = (0.08, 0.3, 0.5, 0.8, 1.0)  # lower bound of the crop's area
SWEEP_SEEDS: tuple[int, ...] = (0, 1, 2, 3)  # of the centre point; the other points use seed 0


def sweep_point(base: TrainConfig, crop_min: float, flip_p: float, seed: int) -> TrainConfig:
    """One point of the sweep: crop area (``crop_min``, 1), flip probability ``flip_p``."""
    return dataclasses.replace(
        base,
        aug_scale=(crop_min, 1.0),
        flip_p=flip_p,
        seed=seed,
        run_name=f"sweep_crop{crop_min:g}_flip{flip_p:g}_seed{seed}",
        extra={**base.extra, "crop_min": crop_min, "flip_p": flip_p},
    )


def sweep_configs(
    base: TrainConfig | None = None, seeds: tuple[int, ...] = SWEEP_SEEDS
) -> dict[str, list[TrainConfig]]:
    """The sweep's configs by factor: ``flip`` (crop fixed), ``crop`` (flip fixed), ``seeds``
    (the centre point with each seed). A config shared by two factors appears in both."""
    base = base or recipe(SWEEP_MODEL, epochs=SWEEP_EPOCHS)
    crop0, flip0 = SWEEP_CENTRE.scale[0], SWEEP_CENTRE.flip_p  # type: ignore[index]
    return {
        "flip": [sweep_point(base, crop0, p, seeds[0]) for p in SWEEP_FLIP_P],
        "crop": [sweep_point(base, c, flip0, seeds[0]) for c in SWEEP_CROP_MIN],
        "seeds": [sweep_point(base, crop0, flip0, s) for s in seeds],
    }


def _sweep_row(cfg: TrainConfig, res: dict) -> dict:
    m = res["metrics"]
    return {
        "crop_min": cfg.extra["crop_min"], "flip_p": cfg.extra["flip_p"], "seed": cfg.seed,
        **{k: m[k] for k in ("mean_ap", "miou", "pixel_acc")},
        "train_seconds": res["train_seconds"], "hardware": res["hardware"],
    }  # fmt: skip


def augmentation_sweep(
    base: TrainConfig | None = None,
    seeds: tuple[int, ...] = SWEEP_SEEDS,
    *,
    force: bool = False,
    jobs: int | None = 1,
) -> dict:
    """Train (or read back) every point of :func:`sweep_configs`; returns ``{"model", "epochs",
    "split", "levers", "flip": rows, "crop": rows, "seeds": rows, "spread", "std",
    "train_seconds"}``, one row ``{"crop_min", "flip_p", "seed", "mean_ap", ...}`` per run.
    ``spread`` (max - min val AP over the seeds) is what a factor's effect has to exceed."""
    by_factor = sweep_configs(base, seeds)
    unique = {c.name: c for cs in by_factor.values() for c in cs}
    device = str(next(iter(unique.values())).device)
    jobs = resolve_jobs(jobs, device)
    if jobs > 1:
        train_side_by_side(list(unique.values()), jobs, force)
        force = False  # just trained
    results = {n: run_experiment(c, figures=False, reuse=not force) for n, c in unique.items()}
    out: dict = {"model": next(iter(unique.values())).model, "split": "val"}
    first = next(iter(unique.values()))
    out |= {"epochs": first.epochs, "levers": {k: getattr(first, k) for k in LEVERS}}
    for factor, cs in by_factor.items():
        out[factor] = [_sweep_row(c, results[c.name]) for c in cs]
    aps = [r["mean_ap"] for r in out["seeds"]]
    out["spread"] = max(aps) - min(aps)
    out["std"] = statistics.stdev(aps) if len(aps) > 1 else None
    out["train_seconds"] = sum(r["train_seconds"] for r in results.values())
    return out


def format_sweep(sweep: dict) -> str:
    """The sweep as plain text: val mean AP per point, then the seed spread."""
    lines = [f"{sweep['model']}, {sweep['epochs']} epochs, val mean AP"]
    lines += [f"  flip p {r['flip_p']:<4g} at crop area ({r['crop_min']:g}, 1): {r['mean_ap']:.3f}"
              for r in sweep["flip"]]  # fmt: skip
    lines += [f"  crop area ({r['crop_min']:g}, 1) at flip p {r['flip_p']:g}: {r['mean_ap']:.3f}"
              for r in sweep["crop"]]  # fmt: skip
    seeds = ", ".join(f"{r['mean_ap']:.3f}" for r in sweep["seeds"])
    lines.append(f"  seeds of the centre point: {seeds}; spread {sweep['spread']:.3f}")
    return "\n".join(lines)


# ------------------------------------------------------------------ the bonus's two methods
def compare_instance_runs(
    a: str | os.PathLike, b: str | os.PathLike, split: str = "test", resamples: int = 2000
) -> dict:
    """How sure the bonus's comparison is: from the per-image matches each run's evaluation
    saved (``matches_<split>.npz``), the bootstrap interval of each run's AP, AP50 and AP75 over
    the images (``ci["a"]``, ``ci["b"]``) and, when both runs have them, the paired bootstrap
    of ``b`` against ``a`` on the same draws (``paired``). A missing file is said in one line."""
    runs = {"a": Path(a), "b": Path(b)}
    out: dict = {"split": split, "resamples": resamples, "ci": {}}
    out |= {role: run.name for role, run in runs.items()}
    evs = {}
    for role, run in runs.items():
        path = run / f"matches_{split}.npz"
        if not path.is_file():
            print(f"{path} is missing: no interval for {run.name} (evaluate it on {split} again)")
            continue
        evs[role] = InstanceEvaluator.load(path)
        out["ci"][role] = bootstrap_ci(evs[role], resamples)
    if len(evs) == 2:
        out["paired"] = paired_bootstrap(evs["a"], evs["b"], resamples)
    return out


# inference resolutions tried on val, as multiples of the trained short side (400: 320 to 640)
ABLATION_SIDE_SCALES = (0.8, 1.0, 1.28, 1.6)


def _grid_rows(grid: list[dict], fixed: str, value: float) -> list[dict]:
    return [r for r in grid if r[fixed] == value]


def maskrcnn_ablation(
    run_dir: str | os.PathLike, device: str = "auto", data_dir: str | None = None
) -> dict:
    """What the levers a finished Mask R-CNN run can vary without retraining did, on val: the
    number of epochs (val mask AP after each, history.json), the mask and score thresholds (the
    val grid of postprocess.json, the other threshold at its chosen value) and the inference
    resolution (short side; the long side scaled alike). Levers that need retraining (training
    resolution, anchor sizes, schedule, frozen stages) are :func:`maskrcnn_levers`."""
    run_dir = Path(run_dir)
    model, cfg, params = load_maskrcnn_run(run_dir, get_device(device))
    history = json.loads((run_dir / "history.json").read_text())
    grid = json.loads((run_dir / "postprocess.json").read_text())["grid"]
    val = make_base(cfg, "val", data_dir)
    resolution = []
    for side in (round(cfg.short_side * scale) for scale in ABLATION_SIDE_SCALES):
        long = round(side * cfg.max_size / cfg.short_side)
        model.transform.min_size, model.transform.max_size = (side,), long
        (m,), _, ms = evaluate_settings(model, val, [params])
        resolution.append({"short_side": side, "max_size": long, "ap": m["ap"],
                           "ap50": m["ap50"], "ap75": m["ap75"], "ms_per_image": ms})  # fmt: skip
    keys = ("epoch", "val_ap", "val_ap50", "val_ap75")
    return {
        "run": run_dir.name, "split": "val", "params": params,
        "trained_short_side": cfg.short_side, "trained_max_size": cfg.max_size,
        "epochs": [dict(zip(keys, row, strict=True))
                   for row in zip(*(history[k] for k in keys), strict=True)],
        "mask_threshold": _grid_rows(grid, "score_threshold", params["score_threshold"]),
        "score_threshold": _grid_rows(grid, "mask_threshold", params["mask_threshold"]),
        "inference_short_side": resolution,
    }  # fmt: skip


# The Mask R-CNN levers that need retraining: each changed alone from the recipe, all on a
# shorter schedule; the recipe itself at two seeds gives the spread an effect has to exceed.
MASKRCNN_LEVER_EPOCHS = 4
MASKRCNN_LEVER_SEEDS: tuple[int, ...] = (0, 1)
MASKRCNN_LEVERS_JSON = "maskrcnn_levers.json"  # in report/generated
MASKRCNN_RECIPE = "recipe"  # the label of the unchanged runs
MASKRCNN_LEVERS: dict[str, dict] = {  # label -> the config fields it changes
    MASKRCNN_RECIPE: {},
    "constant learning rate": {"scheduler": "none"},
    "4 frozen stages": {"frozen_stages": 4},
    "anchors 16 to 256": {"anchor_size": 16},
    "training short side 320": {"short_side": 320, "max_size": 576},
}


def maskrcnn_lever_configs(
    base: MaskRCNNConfig | None = None,
    epochs: int = MASKRCNN_LEVER_EPOCHS,
    seeds: tuple[int, ...] = MASKRCNN_LEVER_SEEDS,
) -> list[tuple[str, MaskRCNNConfig]]:
    """``(label, config)`` per run of :data:`MASKRCNN_LEVERS`: the recipe at every seed, each
    lever at the first, all for ``epochs`` into ``runs/mrl_<lever>_seed<seed>``."""
    base = base or MaskRCNNConfig()
    out = []
    for label, change in MASKRCNN_LEVERS.items():
        for seed in seeds if not change else seeds[:1]:
            name = f"mrl_{label.replace(' ', '_')}_seed{seed}"
            cfg = dataclasses.replace(base, epochs=epochs, seed=seed, run_name=name, **change)
            out.append((label, cfg))
    return out


def maskrcnn_levers(
    base: MaskRCNNConfig | None = None,
    seeds: tuple[int, ...] = MASKRCNN_LEVER_SEEDS,
    *,
    epochs: int = MASKRCNN_LEVER_EPOCHS,
    force: bool = False,
    jobs: int | None = 1,
) -> dict:
    """Train (or read back) :func:`maskrcnn_lever_configs`; returns ``{"epochs", "split",
    "rows", "spread", "train_seconds"}``, one row ``{"lever", "seed", "ap", "ap50", "ap75",
    "best_epoch", "train_seconds", "hardware"}`` per run (val, thresholds chosen on val, as
    every Mask R-CNN run). ``spread``: max - min val AP over the recipe's seeds."""
    runs = maskrcnn_lever_configs(base, epochs, seeds)
    jobs = resolve_jobs(jobs, str(runs[0][1].device))
    if jobs > 1:
        train_side_by_side([c for _, c in runs], jobs, force)
        force = False  # just trained
    rows = []
    for label, cfg in runs:
        res = train_maskrcnn(cfg, figures=False, reuse=not force)
        m = res["metrics"]
        rows.append({"lever": label, "seed": cfg.seed, **{k: m[k] for k in ("ap", "ap50", "ap75")},
                     "best_epoch": res["best_epoch"], "train_seconds": res["train_seconds"],
                     "hardware": res["hardware"]})  # fmt: skip
    recipe_aps = [r["ap"] for r in rows if r["lever"] == MASKRCNN_RECIPE]
    return {
        "epochs": epochs, "split": "val", "rows": rows,
        "spread": max(recipe_aps) - min(recipe_aps),
        "train_seconds": sum(r["train_seconds"] for r in rows),
    }  # fmt: skip


def maskrcnn_recipe_mean(levers: dict) -> float:
    """The lever study's recipe val AP, averaged over its seeds."""
    aps = [r["ap"] for r in levers["rows"] if r["lever"] == MASKRCNN_RECIPE]
    return sum(aps) / len(aps)


def format_maskrcnn_levers(levers: dict) -> str:
    """The lever study as plain text: val mask AP per run, each lever's change from the recipe's
    mean, marked as an effect only where it exceeds the recipe's seed spread."""
    mean, spread = maskrcnn_recipe_mean(levers), levers["spread"]
    seeds = sum(r["lever"] == MASKRCNN_RECIPE for r in levers["rows"])
    lines = [f"Mask R-CNN, {levers['epochs']} epochs each, val mask AP / AP50 / AP75"]
    for r in levers["rows"]:
        line = f"  {r['lever']} (seed {r['seed']}): " + " / ".join(
            f"{r[k]:.3f}" for k in ("ap", "ap50", "ap75")
        )
        if r["lever"] != MASKRCNN_RECIPE:
            change = r["ap"] - mean
            beyond = abs(change) > spread
            effect = "beyond the spread" if beyond else "within the spread: seed noise"
            line += f"  change {change:+.3f} ({effect})"
        lines.append(line)
    lines.append(f"  recipe: mean {mean:.3f} over {seeds} seeds, spread {spread:.3f}")
    return "\n".join(lines)

"""``segkit reproduce``: every experiment of the assignment, then ``report/generated/``.

Steps (one progress bar): baseline (Q2), augmentation study (Q1), the lever study (class
weighting, EMA, flip TTA), the five semantic models (Q6, Q7: train on train, select on val,
evaluate test once), instance segmentation (bonus), then tables, figures and ``results.json``.
On a multi-core CPU every training runs first, two side by side (:mod:`segkit.parallel`). Runs
whose results already exist are reused unless ``force``; ``quick`` shrinks everything to a smoke
test (tiny subsets, few epochs: ``config.QUICK_SEMANTIC``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image
from tqdm.auto import tqdm

from . import viz
from .checkpoint import finished_results
from .config import (
    QUICK_SEMANTIC,
    REPORT_GENERATED,
    SEMANTIC_MODELS,
    RunConfig,
    recipe,
)
from .data import SegmentationDataset
from .experiment import (
    baseline_predictions_figure,
    evaluate_run,
    run_baseline,
    run_experiment,
    save_run_figures,
)
from .instance import evaluate_instance_run, train_instance
from .maskrcnn import LOSS_TERMS, evaluate_maskrcnn_run, train_maskrcnn
from .models.maskrcnn import body_label
from .parallel import resolve_jobs, train_side_by_side
from .plan import instance_config, maskrcnn_config, protocol_recipe
from .plan import trainings as plan_trainings
from .report import load_results, update_readme, write_tables
from .study import (
    AUGMENT_EPOCHS,
    AUGMENT_MODEL,
    AUGMENT_SETTINGS,
    LEVER_EPOCHS,
    augmentation_configs,
    compare_instance_runs,
    lever_configs,
    maskrcnn_ablation,
    study_rows,
)
from .utils import SegkitError, WallClock, hardware, write_json

QUICK_BASELINE_LIMIT = 16  # images per split for the quick baseline
QUICK_TEST_LIMIT = 8  # test images evaluated per model in quick mode


def _reusable(run_dir: Path, config: dict, force: bool) -> dict | None:
    return None if force else finished_results(run_dir, config)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _copy(src: Path, dst: Path) -> None:
    """Copy a run's figure into the report; photo panels become JPEG (a tenth of the size)."""
    if not src.is_file():
        return
    if dst.suffix == ".jpg":
        with Image.open(src) as im:
            im.convert("RGB").save(dst, quality=85, optimize=True)
    else:
        shutil.copyfile(src, dst)


def reproduce(
    out: str = REPORT_GENERATED,
    runs: str = "runs",
    *,
    quick: bool = False,
    device: str = "auto",
    force: bool = False,
    data_dir: str | None = None,
    readme: str | None = None,
    instance: bool = True,
    jobs: int | None = None,
    only: list[str] | None = None,
) -> dict:
    """Run (or reuse) every experiment and write tables, figures and results.json to ``out``.

    Resumable: finished runs (``results_val.json``) are reused when their config matches,
    interrupted ones continue from ``checkpoint_last.pt``. The wall time, summed over the calls
    that one reproduction took (:class:`WallClock`), is printed and recorded as
    ``reproduce_wall_minutes`` (each call in ``reproduce_calls``). ``jobs``: trainings run side
    by side, one torch thread each (default: 2 on a CPU with at least 2 cores, else 1);
    evaluation, figures and tables follow in this process. ``only``: just these steps (names of
    :func:`steps`), merged into the existing results.json (see :func:`_update`)."""
    out_dir, runs_dir = Path(out), Path(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    common = dict(
        device=device, out_dir=str(runs_dir), data_dir=data_dir, **(QUICK_SEMANTIC if quick else {})
    )
    ctx = Context(out_dir, runs_dir, common, quick, force, force)
    if only:
        return _update(ctx, only, readme)
    trainings = plan_trainings(common, quick, instance)
    jobs = resolve_jobs(jobs, device)  # a bad --jobs fails before the clock starts
    with WallClock(runs_dir, fresh=force) as clock:
        results = _run_steps(ctx, trainings, jobs, instance)
    results["reproduce_calls"] = clock.calls
    results["reproduce_wall_minutes"] = clock.minutes
    results["reproduce_reused_runs"] = clock.reused([runs_dir / cfg.name for cfg in trainings])
    tqdm.write(
        f"reproduce: {clock.minutes:.1f} min wall"
        + (f" over {len(clock.calls)} calls (resumed)" if len(clock.calls) > 1 else "")
        + f" ({hardware()})"
    )
    return _write(results, out_dir, readme)


def _write(results: dict, out_dir: Path, readme: str | None) -> dict:
    """results.json, then the tables (and README) from it as `segkit report` reads it: with the
    separately run studies beside it (seeds.json from `segkit seeds`, outside this budget)."""
    write_json(results, out_dir / "results.json")
    written = load_results(out_dir / "results.json")
    write_tables(written, out_dir)
    if readme:
        update_readme(written, readme)
    return results


def _update(ctx: Context, only: list[str], readme: str | None) -> dict:
    """``--only``: rerun (or reuse) the named steps and merge their entries into the existing
    results.json; the other entries stay as the reproduction that wrote them left them, and
    ``partial_updates`` records which steps were updated, when, where and in how long."""
    unknown = sorted(set(only) - set(steps()))
    if unknown:
        raise SegkitError(f"--only: unknown step(s) {unknown}; the steps are {list(steps())}")
    path = ctx.out_dir / "results.json"
    results = _read(path)
    if results is None:
        raise SegkitError(f"--only updates {path}, which does not exist: run `segkit reproduce`")
    t0 = time.perf_counter()
    fresh = _run_steps(ctx, [], 1, instance=True, only=only)
    for key in ("date", "hardware", "quick"):
        fresh.pop(key)
    _merge(results, fresh)
    minutes = (time.perf_counter() - t0) / 60
    update = dict(
        date=dt.date.today().isoformat(), steps=only, hardware=hardware(), minutes=minutes
    )
    results.setdefault("partial_updates", []).append(update)
    tqdm.write(f"reproduce --only {','.join(only)}: {minutes:.1f} min wall ({hardware()})")
    return _write(results, ctx.out_dir, readme)


@dataclass(frozen=True)
class Context:
    """What every step of a reproduction needs."""

    out_dir: Path
    runs_dir: Path
    common: dict  # device, out_dir, data_dir (and the quick sizes)
    quick: bool
    force: bool  # re-evaluate and redraw, not only retrain
    force_train: bool  # retrain (False when the trainings just ran side by side)

    @property
    def device(self) -> str:
        return self.common["device"]

    @property
    def data_dir(self) -> str | None:
        return self.common["data_dir"]


def _save(fig: Figure, out_dir: Path, name: str, dpi: int) -> None:
    """A figure of the report; photo panels (``.jpg``) go through PNG to a compact JPEG."""
    png = out_dir / (Path(name).stem + ".png")
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    if name.endswith(".jpg"):
        _copy(png, out_dir / name)
        png.unlink()


def _step_baseline(ctx: Context) -> dict:
    """Q2: the per-pixel frequency baseline on val and test, its confusion and its map."""
    base = {}
    limit = QUICK_BASELINE_LIMIT if ctx.quick else None
    for split in ("val", "test"):
        path = ctx.runs_dir / "baseline" / f"results_{split}.json"
        r = None if ctx.force else _read(path)
        if r is None:
            r = run_baseline(ctx.data_dir, split, str(ctx.runs_dir / "baseline"), limit=limit)
        base[split] = r["metrics"]
    val = base["val"]
    fig = viz.plot_confusion_matrix(
        val["confusion"], val["class_names"], ap=val["ap"], iou=val["iou"]
    )
    _save(fig, ctx.out_dir, "fig_baseline_confusion.png", 130)
    fig = baseline_predictions_figure(ctx.data_dir, "test", limit)
    _save(fig, ctx.out_dir, "fig_baseline_predictions.jpg", 110)
    return {"baseline": base, "class_names": val["class_names"]}


def _step_augmentation(ctx: Context) -> dict:
    """Q1: the augmentation study (one model, one budget, each setting) and its figure."""
    cfg = recipe(AUGMENT_MODEL, **{"epochs": AUGMENT_EPOCHS, **ctx.common})
    rows = study_rows(augmentation_configs(cfg), force=ctx.force_train, progress=False)
    train = SegmentationDataset("train", ctx.data_dir, limit=2)
    fig = viz.show_augmentations(train, 0, AUGMENT_SETTINGS, n=2)
    _save(fig, ctx.out_dir, "fig_augment.jpg", 110)
    return {"augmentation": rows, "augmentation_model": cfg.model}


def _step_levers(ctx: Context) -> dict:
    """The lever study (class weighting, EMA, flip TTA) at a short budget, on val."""
    cfg = recipe(AUGMENT_MODEL, **{"epochs": LEVER_EPOCHS, **ctx.common})
    return {"levers": study_rows(lever_configs(cfg), force=ctx.force_train, progress=False)}


def _step_model(ctx: Context, name: str) -> dict:
    """Q6/Q7: one semantic model: train on train, select on val, evaluate test once."""
    cfg = protocol_recipe(name, **ctx.common)
    run_dir = ctx.runs_dir / cfg.name
    val = _reusable(run_dir, cfg.to_dict(), ctx.force_train)
    if val is None:
        resume = not ctx.force_train and (run_dir / "checkpoint_last.pt").is_file()
        val = run_experiment(cfg, figures=False, resume=resume)
    test = None if ctx.force else _read(run_dir / "results_test.json")
    if test is None:  # the one evaluation on test, after selection on val
        limit = QUICK_TEST_LIMIT if ctx.quick else None
        test = evaluate_run(run_dir, "test", ctx.device, ctx.data_dir, limit=limit)
    if ctx.force or not (run_dir / "predictions_test.png").is_file():
        save_run_figures(run_dir, ctx.device, ctx.data_dir)
    for fig, ext in (("loss_curve", "png"), ("confusion_val", "png"), ("predictions_test", "jpg")):
        _copy(run_dir / f"{fig}.png", ctx.out_dir / f"fig_{name}_{fig}.{ext}")
    entry = {
        "config": val["config"],
        "epochs": val["epochs_run"],
        "best_epoch": val["best_epoch"],
        "train_seconds": val["train_seconds"],
        "hardware": val["hardware"],
        "val": val["metrics"],
        "val_ablation": val.get("ablation", {}),
        "test": test["metrics"],
    }
    return {"models": {name: entry}}


def steps(instance: bool = True) -> dict[str, Callable[[Context], dict]]:
    """The steps of a reproduction, in order: name -> function returning its results entries."""
    table: dict[str, Callable[[Context], dict]] = {
        "baseline": _step_baseline,
        "augmentation": _step_augmentation,
        "levers": _step_levers,
    }
    table.update({m: functools.partial(_step_model, name=m) for m in SEMANTIC_MODELS})
    if instance:
        table["instance"] = _step_instance
        table["maskrcnn"] = _step_maskrcnn
    return table


def _merge(results: dict, entries: dict) -> None:
    """Add one step's entries; the per-model ones go under ``models``."""
    for key, value in entries.items():
        if key == "models":
            results.setdefault("models", {}).update(value)
        else:
            results[key] = value


def _run_steps(
    ctx: Context,
    trainings: list[RunConfig],
    jobs: int,
    instance: bool = True,
    only: list[str] | None = None,
) -> dict:
    """The steps of :func:`reproduce`: every training (side by side when ``jobs`` > 1), then each
    step's evaluation, figures and results (only the ``only`` steps, when given)."""
    if jobs > 1:
        train_side_by_side(trainings, jobs, ctx.force)
        ctx = dataclasses.replace(ctx, force_train=False)  # just (re)trained above
    table = steps(instance)
    names = [n for n in table if only is None or n in only]
    results: dict = {"date": dt.date.today().isoformat(), "hardware": hardware()}
    results.update(quick=ctx.quick, models={})
    bar = tqdm(names, desc="reproduce", dynamic_ncols=True)
    for name in bar:
        bar.set_postfix(step=name)
        _merge(results, table[name](ctx))
    return results


def _instance_run(ctx: Context, cfg: RunConfig, train: Callable, evaluate: Callable) -> tuple:
    """An instance run folder of the reproduction: reused, resumed or trained; its test split
    evaluated once (results_test.json is read back unless ``force``). Returns the folder and
    its val and test results."""
    run_dir = ctx.runs_dir / cfg.name
    val = _reusable(run_dir, cfg.to_dict(), ctx.force_train)
    if val is None:
        resume = not ctx.force_train and (run_dir / "checkpoint_last.pt").is_file()
        val = train(cfg, resume=resume)
    test = None if ctx.force else _read(run_dir / "results_test.json")
    if test is None:
        test = evaluate(run_dir, "test", cfg.device, cfg.data_dir)
    return run_dir, val, test


def _instance_entry(val: dict, test: dict) -> dict:
    """One instance method's entry of results.json (the same keys for both methods)."""
    return {
        "model": val["config"].get("model"),
        "body": val["config"].get("model") or body_label(val["config"].get("weights")),
        "task": val["config"].get("task"),
        "epochs": val["epochs_run"],
        "best_epoch": val.get("best_epoch"),
        "train_seconds": val["train_seconds"],
        "hardware": val["hardware"],
        "config": val["config"],
        "postprocess": val.get("postprocess"),
        "val": val["metrics"],
        "test": test["metrics"],
        "inference_ms": test.get("inference_ms_per_image"),
        "reference": test.get("reference"),
    }


def _step_instance(ctx: Context) -> dict:
    """The bonus, detection-free: the two-head UNet and the watershed."""
    cfg = instance_config(ctx.common, ctx.quick)
    run_dir, val, test = _instance_run(ctx, cfg, train_instance, evaluate_instance_run)
    for name, ext in (("loss_curve", "png"), ("instances_test", "jpg"), ("energy_test", "jpg")):
        _copy(run_dir / f"{name}.png", ctx.out_dir / f"fig_instance_{name}.{ext}")
    return {"instance": _instance_entry(val, test)}


def _step_maskrcnn(ctx: Context) -> dict:
    """The bonus, detection-based: Mask R-CNN; its loss terms and test images, the paired
    comparison with the watershed run on the same test images, the ablation on val."""
    cfg = maskrcnn_config(ctx.common, ctx.quick)
    run_dir, val, test = _instance_run(ctx, cfg, train_maskrcnn, evaluate_maskrcnn_run)
    _copy(run_dir / "instances_test.png", ctx.out_dir / "fig_maskrcnn_instances_test.jpg")
    history = json.loads((run_dir / "history.json").read_text())
    fig = viz.plot_loss_terms(history, LOSS_TERMS, "Mask R-CNN")  # titled for the report
    _save(fig, ctx.out_dir, "fig_maskrcnn_loss_curve.png", 100)
    watershed = ctx.runs_dir / instance_config(ctx.common, ctx.quick).name
    ablation = None if ctx.force else _read(run_dir / "ablation_val.json")
    if ablation is None:
        ablation = maskrcnn_ablation(run_dir, ctx.device, ctx.data_dir)
        write_json(ablation, run_dir / "ablation_val.json")
    return {
        "instance_maskrcnn": _instance_entry(val, test),
        "instance_comparison": compare_instance_runs(watershed, run_dir, "test"),
        "maskrcnn_ablation": ablation,
    }

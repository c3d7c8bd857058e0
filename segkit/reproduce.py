"""``segkit reproduce``: every experiment of the assignment, then ``report/generated/``.

Steps (one progress bar): baseline (Q2), augmentation study (Q1), the five semantic models (Q6,
Q7: train on train, select on val, evaluate test once), instance segmentation (bonus), then
tables, figures and ``results.json``. Runs whose results already exist are reused unless
``force``; ``quick`` shrinks everything to a smoke test (tiny subsets, one epoch).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from .config import recipe
from .report import MODEL_ORDER, update_readme, write_tables

QUICK = dict(epochs=1, limit_train=8, limit_val=4, batch_size=4)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _copy(src: Path, dst: Path) -> None:
    """Copy a run's figure into the report; photo panels become JPEG (a tenth of the size)."""
    if not src.is_file():
        return
    if dst.suffix == ".jpg":
        from PIL import Image

        with Image.open(src) as im:
            im.convert("RGB").save(dst, quality=85, optimize=True)
    else:
        shutil.copyfile(src, dst)


def reproduce(
    out: str = "report/generated",
    runs: str = "runs",
    *,
    quick: bool = False,
    device: str = "auto",
    force: bool = False,
    data_dir: str | None = None,
    readme: str | None = None,
    instance: bool = True,
) -> dict:
    """Run (or reuse) every experiment and write tables, figures and results.json to ``out``."""
    import matplotlib.pyplot as plt

    from . import viz
    from .data import SegmentationDataset
    from .experiment import (
        evaluate_run,
        hardware,
        run_baseline,
        run_experiment,
        save_run_figures,
        write_json,
    )
    from .study import AUGMENT_EPOCHS, AUGMENT_MODEL, AUGMENT_SETTINGS, augmentation_study

    out_dir, runs_dir = Path(out), Path(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(
        device=device, out_dir=str(runs_dir), data_dir=data_dir, **(QUICK if quick else {})
    )
    steps = ["baseline", "augmentation", *MODEL_ORDER] + (["instance"] if instance else [])
    bar = tqdm(steps, desc="reproduce", dynamic_ncols=True)
    results: dict = {
        "date": dt.date.today().isoformat(),
        "hardware": hardware(),
        "quick": quick,
        "models": {},
    }
    for step in bar:
        bar.set_postfix(step=step)
        if step == "baseline":
            base = {}
            for split in ("val", "test"):
                path = runs_dir / "baseline" / f"results_{split}.json"
                r = None if force else _read(path)
                if r is None:
                    r = run_baseline(
                        data_dir, split, str(runs_dir / "baseline"), limit=16 if quick else None
                    )
                base[split] = r["metrics"]
            results["baseline"] = base
            results["class_names"] = base["val"]["class_names"]
            fig = viz.plot_confusion_matrix(
                base["val"]["confusion"],
                base["val"]["class_names"],
                ap=base["val"]["ap"],
                iou=base["val"]["iou"],
            )
            fig.savefig(out_dir / "fig_baseline_confusion.png", dpi=130, bbox_inches="tight")
        elif step == "augmentation":
            cfg = recipe(AUGMENT_MODEL, **{"epochs": AUGMENT_EPOCHS, **common})
            results["augmentation"] = augmentation_study(cfg, force=force, progress=False)
            results["augmentation_model"] = cfg.model
            train = SegmentationDataset("train", data_dir, limit=2)
            fig = viz.show_augmentations(train, 0, AUGMENT_SETTINGS, n=2)
            fig.savefig(out_dir / "fig_augment.png", dpi=110, bbox_inches="tight")
            _copy(out_dir / "fig_augment.png", out_dir / "fig_augment.jpg")
            (out_dir / "fig_augment.png").unlink()
        elif step == "instance":
            results["instance"] = _instance(runs_dir, out_dir, quick, device, force, data_dir)
        else:
            cfg = recipe(step, **common)
            run_dir = runs_dir / cfg.name
            val = None if force else _read(run_dir / "results_val.json")
            if val is None:
                val = run_experiment(cfg, progress=False, figures=False)
            test = None if force else _read(run_dir / "results_test.json")
            if test is None:  # the one evaluation on test, after selection on val
                test = evaluate_run(run_dir, "test", device, data_dir, limit=8 if quick else None)
            if force or not (run_dir / "predictions_test.png").is_file():
                save_run_figures(run_dir, device, data_dir)
            for name, ext in (
                ("loss_curve", "png"),
                ("confusion_val", "png"),
                ("predictions_test", "jpg"),
            ):
                _copy(run_dir / f"{name}.png", out_dir / f"fig_{step}_{name}.{ext}")
            results["models"][step] = {
                "config": val["config"],
                "epochs": val["epochs_run"],
                "best_epoch": val["best_epoch"],
                "train_seconds": val["train_seconds"],
                "hardware": val["hardware"],
                "val": val["metrics"],
                "test": test["metrics"],
            }
        plt.close("all")
    write_json(results, out_dir / "results.json")
    write_tables(json.loads((out_dir / "results.json").read_text()), out_dir)
    if readme:
        update_readme(json.loads((out_dir / "results.json").read_text()), readme)
    return results


def _instance(
    runs_dir: Path, out_dir: Path, quick: bool, device: str, force: bool, data_dir: str | None
) -> dict:
    from .instance import InstanceConfig, evaluate_instance_run, train_instance

    run_dir = runs_dir / "instance"
    over = dict(device=device, out_dir=str(run_dir), data_dir=data_dir)
    if quick:
        over.update(epochs=1, limit_train=8, limit_val=4, limit_test=4)
    cfg = InstanceConfig(**over)
    val = None if force else _read(run_dir / "results_val.json")
    if val is None:
        val = train_instance(cfg, progress=False)
    test = None if force else _read(run_dir / "results_test.json")
    if test is None:
        test = evaluate_instance_run(run_dir, "test", device, data_dir)
    for name, ext in (("loss_curve", "png"), ("instances_test", "jpg"), ("energy_test", "jpg")):
        _copy(run_dir / f"{name}.png", out_dir / f"fig_instance_{name}.{ext}")
    return {
        "body": val["config"]["body"],
        "epochs": val["epochs_run"],
        "train_seconds": val["train_seconds"],
        "hardware": val["hardware"],
        "config": val["config"],
        "postprocess": val.get("postprocess"),
        "val": val["metrics"],
        "test": test["metrics"],
        "reference": test.get("reference"),
    }


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.quick:  # never mix smoke-test runs with the real ones or the committed report
        args.out = args.out or "runs/quick/generated"
        args.runs = args.runs or "runs/quick"
    res = reproduce(
        args.out or "report/generated",
        args.runs or "runs",
        quick=args.quick,
        device=args.device,
        force=args.force,
        data_dir=args.data_dir,
        readme=args.readme,
    )
    for name, r in res["models"].items():
        print(
            f"{name:14s} val AP {r['val']['mean_ap']:.3f}  test AP {r['test']['mean_ap']:.3f}  "
            f"test mIoU {r['test']['miou']:.3f}"
        )
    print(
        f"wrote {args.out or 'report/generated'}/results.json and tables; "
        "build the PDF with `segkit report`"
    )
    return 0


def add_reproduce_subparser(sub) -> None:
    p = sub.add_parser("reproduce", help="run every experiment and write report/generated/")
    p.add_argument("--quick", action="store_true", help="tiny subsets, one epoch (smoke test)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--out",
        default=None,
        help="tables/figures/results.json (default report/generated; quick: runs/quick/generated)",
    )
    p.add_argument(
        "--runs",
        default=None,
        help="run folders, reused if present (default runs; quick: runs/quick)",
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true", help="retrain even if results exist")
    p.add_argument("--readme", default=None, help="refresh this README's results table")
    p.set_defaults(func=cmd_reproduce)

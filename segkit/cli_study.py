"""The study subcommands: ``segkit study`` (Q1 augmentation, the Q1 sweep, the lever study),
``segkit seeds`` (run-to-run noise) and ``segkit instance levers`` (the Mask R-CNN levers that
need retraining). Each writes its rows as JSON, the report's under report/generated."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from . import study
from .cli_flags import add_command, add_data_dir, add_device, add_jobs
from .config import (
    QUICK_MASKRCNN,
    QUICK_OUT_DIR,
    QUICK_SEMANTIC,
    RECIPES,
    REPORT_GENERATED,
    MaskRCNNConfig,
    TrainConfig,
    recipe,
)
from .parallel import resolve_jobs, train_side_by_side
from .utils import SegkitError, write_json


def _overrides(args: argparse.Namespace, quick: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config fields the study flags set; ``quick`` (with ``--quick``): the quick budget, in
    runs/quick, never beside the real runs that reproduce reuses."""
    overrides: dict[str, Any] = {"out_dir": args.out_dir, "device": args.device}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if quick is not None and args.quick:
        overrides.update(quick, out_dir=QUICK_OUT_DIR)
    return overrides


def _report_json(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else ``name`` in report/generated (the report reads it), or in runs/quick
    with ``--quick``: quick numbers never land in the report."""
    return Path(args.out or Path(QUICK_OUT_DIR if args.quick else REPORT_GENERATED) / name)


def _write(result: Any, out: Path, text: str) -> int:
    """Write a study's JSON, print its text and where it went."""
    write_json(result, out)
    print(text)
    print(f"wrote {out}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    overrides = _overrides(args, QUICK_SEMANTIC)
    if args.levers and args.sweep:
        raise SegkitError("--levers and --sweep are two studies: pick one")
    default_epochs = study.LEVER_EPOCHS if args.levers else study.AUGMENT_EPOCHS  # = SWEEP_EPOCHS
    # an explicit --epochs wins, also over quick mode's
    base = recipe(args.model, **{"epochs": default_epochs, **overrides})
    if args.epochs is not None:  # 0 or less: the config's one-line error
        base = dataclasses.replace(base, epochs=args.epochs)
    if args.sweep:
        return _sweep(args, base)
    if args.levers:
        configs = study.lever_configs(base)
        out = _report_json(args, "levers.json")
    else:
        settings = study.AUGMENT_SETTINGS
        if args.only:
            settings = {k: v for k, v in settings.items() if k in args.only}
        configs = study.augmentation_configs(base, settings)
        out = Path(args.out or Path(overrides["out_dir"]) / "augmentation_study.json")
    jobs = resolve_jobs(args.jobs, args.device)
    if jobs > 1:
        train_side_by_side(configs, jobs, args.force)
    rows = study.study_rows(configs, force=args.force and jobs == 1)
    return _write(rows, out, study.format_rows(rows))


def _sweep(args: argparse.Namespace, base: TrainConfig) -> int:
    """``segkit study --sweep``: the Q1 sweep into report/generated (quick: never there)."""
    seeds = tuple(args.seeds or study.SWEEP_SEEDS)
    sweep = study.augmentation_sweep(base, seeds, force=args.force, jobs=args.jobs)
    return _write(sweep, _report_json(args, study.SWEEP_JSON), study.format_sweep(sweep))


def cmd_seeds(args: argparse.Namespace) -> int:
    rows = study.seed_study(
        tuple(args.models), tuple(args.seeds), args.epochs, force=args.force, jobs=args.jobs,
        **_overrides(args),
    )  # fmt: skip
    lines = []
    for r in rows:
        aps = ", ".join(f"{x['mean_ap']:.3f}" for x in r["runs"])
        lines.append(f"{r['model']}: val AP {aps} (seeds {args.seeds}); spread {r['spread']:.3f}")
    text = "\n".join(lines)
    return _write(rows, Path(args.out), text)


def cmd_maskrcnn_levers(args: argparse.Namespace) -> int:
    """``segkit instance levers``: the Mask R-CNN lever study (quick: never in report/generated)."""
    epochs = args.epochs
    if epochs is None:
        epochs = QUICK_MASKRCNN["epochs"] if args.quick else study.MASKRCNN_LEVER_EPOCHS
    levers = study.maskrcnn_levers(
        MaskRCNNConfig(**_overrides(args, QUICK_MASKRCNN)), tuple(args.seeds), epochs=epochs,
        force=args.force, jobs=args.jobs,
    )  # fmt: skip
    out = _report_json(args, study.MASKRCNN_LEVERS_JSON)
    return _write(levers, out, study.format_maskrcnn_levers(levers))


def add_study_commands(sub: Any) -> None:
    """``segkit study`` and ``segkit seeds``."""
    p = add_command(
        sub, "study", "Q1 augmentation study, --sweep: the Q1 sweep, or --levers: the lever study "
        "(same model and budget per setting)", cmd_study,
    )  # fmt: skip
    p.add_argument("--levers", action="store_true",
                   help="the lever study (class weights, EMA, flip TTA) instead of Q1")  # fmt: skip
    p.add_argument("--sweep", action="store_true", help="the Q1 sweep: flip probability and "
                   "crop area one at a time, and the seed spread of the centre point")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=list(study.SWEEP_SEEDS),
                   help="--sweep: the centre point's seeds (default: %(default)s)")  # fmt: skip
    p.add_argument("--model", default=study.AUGMENT_MODEL, choices=tuple(RECIPES),
                   help=f"(default: {study.AUGMENT_MODEL})")  # fmt: skip
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per setting (default: {study.AUGMENT_EPOCHS}, "
                        f"with --levers {study.LEVER_EPOCHS})")  # fmt: skip
    p.add_argument("--out", default=None,
                   help="rows as JSON (default: <out-dir>/augmentation_study.json; with "
                        f"--levers {REPORT_GENERATED}/levers.json, or {QUICK_OUT_DIR}/ "
                        "with --quick)")  # fmt: skip
    add_device(p)
    add_data_dir(p)
    p.add_argument("--out-dir", default="runs", help="(default: runs)")
    p.add_argument("--force", action="store_true", help="retrain runs that already have results")
    add_jobs(p)
    p.add_argument("--quick", action="store_true", help="quick mode")
    settings = tuple(study.AUGMENT_SETTINGS)
    p.add_argument(
        "--only", nargs="+", default=None, choices=settings, metavar="SETTING",
        help=f"only these settings: {', '.join(settings)}",
    )  # fmt: skip

    p = add_command(
        sub, "seeds", "run-to-run noise: recipes with several seeds, short budget", cmd_seeds
    )
    p.add_argument("--models", nargs="+", default=list(study.SEED_MODELS), choices=tuple(RECIPES),
                   help=f"(default: {' '.join(study.SEED_MODELS)})")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=list(study.SEEDS),
                   help=f"(default: {' '.join(map(str, study.SEEDS))})")  # fmt: skip
    p.add_argument("--epochs", type=int, default=study.SEED_EPOCHS,
                   help=f"epochs per run (default: {study.SEED_EPOCHS})")  # fmt: skip
    add_device(p)
    add_data_dir(p)
    p.add_argument("--out-dir", default="runs", help="run folders (default: runs)")
    p.add_argument("--out", default=f"{REPORT_GENERATED}/seeds.json", help="(default: %(default)s)")
    p.add_argument("--force", action="store_true", help="retrain runs that already have results")
    add_jobs(p)


def add_levers_command(isub: Any) -> None:
    """``segkit instance levers``."""
    p = add_command(
        isub, "levers", "the Mask R-CNN levers that need retraining (frozen stages, anchors, "
        "schedule, training resolution), each alone on a short schedule, on val",
        cmd_maskrcnn_levers,
    )  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=list(study.MASKRCNN_LEVER_SEEDS),
                   help="the recipe's seeds (its spread; default: %(default)s)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per run (default: {study.MASKRCNN_LEVER_EPOCHS})")  # fmt: skip
    p.add_argument("--out", default=None, help="the rows as JSON (default: "
                   f"{REPORT_GENERATED}/{study.MASKRCNN_LEVERS_JSON}, or {QUICK_OUT_DIR}/ with "
                   "--quick)")  # fmt: skip
    add_device(p)
    add_data_dir(p)
    p.add_argument("--out-dir", default="runs", help="run folders (default: runs)")
    p.add_argument("--force", action="store_true", help="retrain runs that already have results")
    add_jobs(p)
    p.add_argument("--quick", action="store_true", help="quick mode (a smoke run)")

"""``segkit`` command line: train / evaluate semantic runs, the augmentation study, data, instance
segmentation and the full reproduction. Flags of ``train`` come from :class:`TrainConfig`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence

from .config import RECIPES, TrainConfig, recipe
from .instance import add_instance_subparser
from .report import add_report_subparsers
from .reproduce import add_reproduce_subparser
from .sources import add_data_subparser
from .study import add_study_subparser


def _field_type(f: dataclasses.Field):
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        hint, origin = args[0], typing.get_origin(args[0])
    return hint, origin


def add_config_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per TrainConfig field (defaults stay in the dataclass / recipe)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip or f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        hint, origin = _field_type(f)
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif origin is tuple:
            parser.add_argument(
                flag,
                type=_tuple_or_none,
                default=None,
                metavar="A,B",
                help="two numbers, or 'none'",
            )
        else:
            parser.add_argument(flag, type=_none_or(hint), default=None)


def _none_or(kind):
    def parse(s: str):
        return None if s.lower() == "none" else kind(s)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _tuple_or_none(s: str):
    if s.lower() == "none":
        return None
    a, b = (float(x) for x in s.split(","))
    return (a, b)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    if args.quick:
        # quick runs never land beside real ones (reproduce reuses runs/<name>)
        overrides = {
            "epochs": 1,
            "limit_train": 16,
            "limit_val": 8,
            "out_dir": "runs/quick",
            **overrides,
        }
    return recipe(overrides.pop("model", "unet"), **overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from .experiment import run_experiment

    cfg = config_from_args(args)
    out = run_experiment(cfg, figures=args.figures, resume=args.resume)
    m = out["metrics"]
    print(
        f"{cfg.name}: val mean AP {m['mean_ap']:.3f}  mIoU {m['miou']:.3f}  "
        f"pixel acc {m['pixel_acc']:.3f}  ({out['train_seconds'] / 60:.1f} min, "
        f"{out['hardware']}) -> {cfg.out_dir}/{cfg.name}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .experiment import evaluate_run

    out = evaluate_run(args.run, args.split, args.device, args.data_dir, limit=args.limit)
    m = out["metrics"]
    print(
        f"{out['run']} on {args.split}: mean AP {m['mean_ap']:.3f}  mIoU {m['miou']:.3f}  "
        f"pixel acc {m['pixel_acc']:.3f}"
    )
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from .experiment import run_baseline

    out = run_baseline(args.data_dir, args.split, args.out)
    print(
        json.dumps(
            {k: out["metrics"][k] for k in ("mean_ap", "mean_ap_step", "miou", "pixel_acc")},
            indent=2,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model (recipes: " + ", ".join(RECIPES) + ")")
    add_config_flags(p)
    p.add_argument("--quick", action="store_true", help="1 epoch on 16 images (smoke test)")
    p.add_argument(
        "--figures",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the run's figures (needs the test split for the preview)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run (checkpoint_last.pt)"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run folder on a split")
    p.add_argument("run", help="run folder holding checkpoint.pt")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="first N images only (smoke tests)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("baseline", help="the per-pixel class-frequency baseline (Q2)")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="runs/baseline")
    p.set_defaults(func=cmd_baseline)

    add_data_subparser(sub)
    add_study_subparser(sub)
    add_instance_subparser(sub)
    add_reproduce_subparser(sub)
    add_report_subparsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"segkit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``segkit`` command line: every subcommand, with the train flags generated from the config
dataclasses (help, default and valid values come from each field's metadata).

Run ``segkit COMMAND --help`` for the flags of one command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import experiment, instance, maskrcnn, plan, predict, report, reproduce, sources
from .cli_flags import (
    add_command,
    add_config_flags,
    add_data_dir,
    add_device,
    add_jobs,
    add_method_flags,
    method_overrides,
    overrides_from_args,
)
from .cli_study import add_levers_command, add_study_commands
from .config import (
    QUICK_INSTANCE,
    QUICK_MASKRCNN,
    QUICK_OUT_DIR,
    QUICK_SEMANTIC,
    RECIPES,
    REPORT_GENERATED,
    InstanceConfig,
    MaskRCNNConfig,
    TrainConfig,
    recipe,
)
from .constants import SPLITS
from .utils import SegkitError

DESCRIPTION = """\
segkit: semantic segmentation (Stanford Background, 9 classes) and instance segmentation
(Penn-Fudan) for the MP4 assignment.

Typical use:
  segkit data verify sbd                 check the dataset ($SEGKIT_DATA or ./data)
  segkit train --model unet              train one model's recipe into runs/unet/
  segkit evaluate runs/unet --split test
  segkit predict runs/unet photo.jpg --out preds/
  segkit reproduce                       every experiment, tables and figures of the report
"""


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = overrides_from_args(args, TrainConfig)
    if args.quick:  # quick runs never land beside real ones (reproduce reuses runs/<name>)
        overrides = {**QUICK_SEMANTIC, "out_dir": QUICK_OUT_DIR, **overrides}
    return recipe(overrides.pop("model", "unet"), **overrides)


INSTANCE_METHODS = {"watershed": InstanceConfig, "maskrcnn": MaskRCNNConfig}
INSTANCE_QUICK = {"watershed": QUICK_INSTANCE, "maskrcnn": QUICK_MASKRCNN}


def instance_config_from_args(args: argparse.Namespace) -> InstanceConfig | MaskRCNNConfig:
    method = getattr(args, "method", "watershed")
    overrides = method_overrides(args, INSTANCE_METHODS, method)
    if args.quick:
        overrides = {**INSTANCE_QUICK[method], "out_dir": QUICK_OUT_DIR, **overrides}
    return INSTANCE_METHODS[method](**overrides)


# ------------------------------------------------------------------------------------ commands
def _quick_help(quick: dict[str, Any]) -> str:
    return "quick mode: " + ", ".join(f"{k}={v}" for k, v in quick.items())


def _metrics_line(m: dict) -> str:
    return f"mean AP {m['mean_ap']:.3f}  mIoU {m['miou']:.3f}  pixel acc {m['pixel_acc']:.3f}"


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = experiment.run_experiment(cfg, figures=args.figures, resume=args.resume)
    print(
        f"{cfg.name}: val {_metrics_line(out['metrics'])}  ({out['train_seconds'] / 60:.1f} min, "
        f"{out['hardware']}) -> {Path(cfg.out_dir) / cfg.name}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    out = experiment.evaluate_run(args.run, args.split, args.device, args.data_dir, args.limit)
    print(f"{out['run']} on {args.split}: {_metrics_line(out['metrics'])}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    out = experiment.run_baseline(args.data_dir, args.split, args.out)
    keys = ("mean_ap", "mean_ap_step", "miou", "pixel_acc")
    print(json.dumps({k: out["metrics"][k] for k in keys}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    return predict.main_predict(args.run, args.inputs, args.out, args.probs, args.device)


def cmd_instance_train(args: argparse.Namespace) -> int:
    cfg = instance_config_from_args(args)
    if isinstance(cfg, MaskRCNNConfig):
        out = maskrcnn.train_maskrcnn(cfg, resume=args.resume)
    else:
        out = instance.train_instance(cfg, resume=args.resume)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, (dict, list))}, indent=2))
    return 0


def cmd_instance_evaluate(args: argparse.Namespace) -> int:
    is_maskrcnn = maskrcnn.run_task(args.run) == "maskrcnn"
    evaluate = maskrcnn.evaluate_maskrcnn_run if is_maskrcnn else instance.evaluate_instance_run
    out = evaluate(args.run, args.split, args.device, args.data_dir)
    m = out["metrics"]
    print(f"{args.run} on {args.split}: " + "  ".join(f"{k} {m[k]:.3f}" for k in instance.HEADLINE))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.plan:  # what would train, and its estimated cost; nothing runs
        print(plan.format_plan(plan.plan(args.device, args.quick), args.device))
        return 0
    out = args.out or (f"{QUICK_OUT_DIR}/generated" if args.quick else REPORT_GENERATED)
    runs = args.runs or (QUICK_OUT_DIR if args.quick else "runs")
    res = reproduce.reproduce(
        out, runs, quick=args.quick, device=args.device, force=args.force,
        data_dir=args.data_dir, readme=args.readme, jobs=args.jobs, only=args.only,
    )  # fmt: skip
    for name, r in res["models"].items():
        print(
            f"{name:14s} val AP {r['val']['mean_ap']:.3f}  test AP {r['test']['mean_ap']:.3f}  "
            f"test mIoU {r['test']['miou']:.3f}"
        )
    print(f"wrote {out}/results.json and tables; build the PDF with `segkit report`")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    results = report.load_results(Path(args.generated) / "results.json")
    report.write_tables(results, args.generated)
    if args.readme:
        report.update_readme(results, args.readme)
    if not args.no_pdf:
        print(f"wrote {report.build_pdf(args.report_dir)}")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    fn = sources.prepare_sbd if args.data_command == "prepare-sbd" else sources.prepare_pennfudan
    fn(args.source, args.data_dir, download=args.download, archive_sha256=args.sha256)
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    print(sources.verify_dataset(args.name, args.data_dir))
    return 0


# ------------------------------------------------------------------------------------- parser
def _data_parser(sub: Any) -> None:
    parser = sub.add_parser("data", help="prepare and verify the datasets")
    dsub = parser.add_subparsers(
        dest="data_command", required=True, metavar="{prepare-sbd,prepare-pennfudan,verify}"
    )
    for cmd, name, what in (
        ("prepare-sbd", "iccv09Data", "rebuild the course layout sbd/ from"),
        ("prepare-pennfudan", "PennFudanPed", "unpack and verify PennFudanPed/ from"),
    ):
        info = sources.SOURCES[name]
        p = add_command(dsub, cmd, f"{what} {info.archive} or a folder", cmd_data_prepare)
        p.add_argument("--source", default=None, help=f"{info.archive} or an extracted folder")
        add_data_dir(p)
        p.add_argument("--download", action="store_true", help=f"download {info.url}")
        p.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    p = add_command(
        dsub, "verify", "check a dataset folder against the shipped checksums", cmd_data_verify
    )
    p.add_argument("name", choices=sorted(sources.SOURCES), help="which dataset")
    add_data_dir(p)


class _Parser(argparse.ArgumentParser):
    """No abbreviated flags: a typo such as ``--lever`` is an error, never another command's
    flag (``--levers`` starts half an hour of training). Subcommand parsers share the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="segkit", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = add_command(
        sub, "train", f"train one model from its recipe ({', '.join(RECIPES)})", cmd_train
    )
    add_config_flags(p, TrainConfig)
    p.add_argument(
        "--quick",
        action="store_true",
        help=_quick_help(QUICK_SEMANTIC) + f", into {QUICK_OUT_DIR}/",
    )
    p.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                   help="write the run's figures (default: yes)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from checkpoint_last.pt")

    p = add_command(sub, "evaluate", "evaluate a semantic run folder on a split", cmd_evaluate)
    p.add_argument("run", help="run folder holding checkpoint.pt (e.g. runs/unet)")
    p.add_argument("--split", default="test", choices=SPLITS, help="(default: test)")
    add_device(p)
    add_data_dir(p)
    p.add_argument("--limit", type=int, default=None, help="first N images only (smoke tests)")

    p = add_command(sub, "predict", "label your own images with a trained run", cmd_predict)
    p.add_argument("run", help="run folder (semantic, watershed or Mask R-CNN)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="images or folders")
    p.add_argument("--out", required=True, help="folder for the label PNGs and overlays")
    p.add_argument("--probs", action="store_true", help="also save per-class probabilities (.npy)")
    add_device(p)

    p = add_command(sub, "baseline", "the per-pixel class-frequency baseline (Q2)", cmd_baseline)
    p.add_argument("--split", default="val", choices=("val", "test"), help="(default: val)")
    add_data_dir(p)
    p.add_argument("--out", default="runs/baseline", help="(default: runs/baseline)")

    add_study_commands(sub)

    inst = sub.add_parser("instance", help="Penn-Fudan instance segmentation (train, evaluate, "
                          "the Mask R-CNN lever study)")  # fmt: skip
    isub = inst.add_subparsers(
        dest="instance_command", required=True, metavar="{train,evaluate,levers}"
    )
    p = add_command(
        isub, "train", "train the two-head UNet + watershed (--method watershed) or Mask R-CNN "
        "(--method maskrcnn), tune post-processing on val", cmd_instance_train,
    )  # fmt: skip
    add_method_flags(p, INSTANCE_METHODS)
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{_quick_help(QUICK_INSTANCE)}; maskrcnn {_quick_help(QUICK_MASKRCNN)}; into "
        f"{QUICK_OUT_DIR}/",
    )
    p.add_argument("--resume", action="store_true", help="continue from checkpoint_last.pt")
    p = add_command(
        isub, "evaluate", "COCO mask AP of an instance run on a split", cmd_instance_evaluate
    )
    p.add_argument("run", help="instance run folder (e.g. runs/instance, runs/maskrcnn)")
    p.add_argument("--split", default="test", choices=SPLITS, help="(default: test)")
    add_device(p)
    add_data_dir(p)
    add_levers_command(isub)

    p = add_command(
        sub, "reproduce", "every experiment, then report/generated/ (resumable)", cmd_reproduce
    )
    p.add_argument("--quick", action="store_true", help=f"quick mode into {QUICK_OUT_DIR}")
    p.add_argument(
        "--plan", action="store_true",
        help="print the runs (epochs, weights, estimated minutes) for --device; train nothing",
    )  # fmt: skip
    p.add_argument(
        "--only", nargs="+", default=None, choices=tuple(reproduce.steps()), metavar="STEP",
        help="rerun (or reuse) just these steps and merge them into the existing results.json "
        f"(recorded in its partial_updates); steps: {', '.join(reproduce.steps())}",
    )  # fmt: skip
    add_device(p)
    p.add_argument(
        "--out", default=None, help="results.json, tables, figures (default: report/generated)"
    )
    p.add_argument("--runs", default=None, help="run folders, reused when finished (default: runs)")
    add_data_dir(p)
    p.add_argument("--force", action="store_true", help="retrain even if results exist")
    p.add_argument("--readme", default=None, help="also refresh this README's results table")
    add_jobs(p)

    p = add_command(
        sub, "report", "tables from results.json, then build report/main.pdf", cmd_report
    )
    p.add_argument("--generated", default=REPORT_GENERATED, help="(default: %(default)s)")
    p.add_argument("--report-dir", default="report", help="(default: report)")
    p.add_argument("--readme", default=None, help="also refresh this README's results table")
    p.add_argument("--no-pdf", action="store_true", help="tables only")

    _data_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print one ``segkit: error:`` line and return 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except SegkitError as e:
        print(f"segkit: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"segkit: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "segkit: interrupted (finished epochs are in checkpoint_last.pt; --resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())

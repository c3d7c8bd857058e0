"""What a notebook shows beside its own runs: the committed full-run numbers, side by side.

``mp4.ipynb`` calls these so that none of its cells defines a function; any other notebook can
call them too.

Example:
    >>> full = load_full_results()                      # report/generated/results.json
    >>> print(compare_runs({"unet": run}, full, "val", mode="quick"))
    >>> show_test_predictions("runs/unet", test_set, [0, 14, 28], label="UNet")
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from matplotlib.figure import Figure

from .experiment import load_run_model
from .report import load_results
from .report_tables import lever_text
from .utils import SegkitError
from .viz import show_predictions

FULL_RESULTS = Path("report") / "generated" / "results.json"  # the committed full run
LEVER_KEYS = ("class_weighting", "ema_decay", "tta")


def load_full_results(home: str | os.PathLike = ".") -> dict:
    """The committed full run's results (``<home>/report/generated/results.json``) with the
    studies run beside it (seeds, levers, the Q1 sweep; :func:`segkit.report.load_results`)."""
    path = Path(home) / FULL_RESULTS
    if not path.is_file():
        raise SegkitError(
            f"{path}: no committed results; run the notebook from the repository folder "
            "(or pass home=...), or make them with `segkit reproduce`"
        )
    return load_results(path)


def _levers(config: dict) -> str:
    return lever_text({k: config[k] for k in LEVER_KEYS if k in config})


def compare_runs(runs: dict[str, dict], full: dict, split: str = "val", mode: str = "quick") -> str:
    """A table of this notebook's runs (``run_experiment``/``evaluate_run`` results, by model
    name) beside the committed full run's ``split`` numbers: mean AP, mIoU, pixel accuracy, and
    how long the full run trained. Notes when the two used other levers."""
    first = next(iter(runs.values()))["config"]
    size = (
        f"first {first['limit_train']} train images, {first['epochs']} epochs"
        if first.get("limit_train")
        else "all train images, the recipes' epochs"
    )
    lines = [f"{split} split; {mode} run: {size}; full run: committed results ({full['date']})"]
    ours, theirs = _levers(first), _levers(full["models"][next(iter(runs))]["config"])
    if ours != theirs:
        lines.append(f"note: this notebook's runs use {ours}; the full run used {theirs}")
    head = f"{'mean AP':>9s}{'mIoU':>7s}{'acc':>7s}   "
    lines.append(f"{'':14s}{'--- ' + mode + ' run ---':^24s}   {'--- full run ---':^24s}")
    lines.append(f"{'model':14s}{head * 2}full run trained")
    for name, r in runs.items():
        f = full["models"][name]
        cells = "".join(
            f"{m['mean_ap']:9.3f}{m['miou']:7.3f}{m['pixel_acc']:7.3f}   "
            for m in (r["metrics"], f[split])
        )
        lines.append(f"{name:14s}{cells}{f['epochs']} epochs, {f['train_seconds'] / 60:.0f} min")
    return "\n".join(lines)


METRIC_NAMES = {"ap": "AP", "iou": "IoU"}


def per_class_table(full: dict, models: list[str], metric: str = "ap", split: str = "test") -> str:
    """The committed full run's per-class ``metric`` ("ap" or "iou") on ``split`` for ``models``
    (one column each, the report's per-class tables), with the mean and the best model per class."""
    names = full["class_names"]
    cols = {m: full["models"][m][split][metric] for m in models}
    width = max(12, *(len(m) + 2 for m in models))
    lines = [f"full run, {split} split, per-class {METRIC_NAMES[metric]}"]
    lines.append(f"{'class':12s}" + "".join(f"{m:>{width}s}" for m in models) + "   best")
    for i, name in enumerate(names):
        vals = [math.nan if cols[m][i] is None else cols[m][i] for m in models]  # None: absent
        seen = [k for k, v in enumerate(vals) if not math.isnan(v)]
        top = [k for k in seen if vals[k] == max(vals[j] for j in seen)]
        best = models[top[0]] if len(top) == 1 else "tie" if top else "--"
        cells = "".join(f"{'--':>{width}s}" if math.isnan(v) else f"{v:{width}.3f}" for v in vals)
        lines.append(f"{name:12s}{cells}   {best}")
    key = "mean_ap" if metric == "ap" else "miou"
    means = "".join(f"{full['models'][m][split][key]:{width}.3f}" for m in models)
    lines.append(f"{'mean':12s}{means}")
    return "\n".join(lines)


def show_test_predictions(
    run_dir: str | os.PathLike,
    dataset: torch.utils.data.Dataset,
    ids: list[int],
    device: torch.device | str | None = None,
    *,
    label: str | None = None,
) -> Figure:
    """image / ground truth / prediction of a run's best model on ``dataset[i]``, i in ``ids``,
    titled with ``label`` (default: the run folder's name)."""
    model, _ = load_run_model(run_dir, torch.device(device or "cpu"))
    fig = show_predictions(model, dataset, ids, device)
    fig.suptitle(f"{label or Path(run_dir).name}: images {ids}", y=1.01)
    return fig

"""Q1's macros for ``generated/numbers.tex`` (:mod:`segkit.report_numbers`): the augmentation
study of the reproduction and the sweep of ``segkit study --sweep`` (``augment_sweep.json``),
with the verdicts that depend on the data (a factor's range against the seed spread measured
under the same configuration)."""

from __future__ import annotations

import re
import statistics

from .config import model_label as _config_label
from .report_tables import distinct, fmt, tex_escape

Macros = dict[str, str]


def augmentation_macros(results: dict) -> Macros:
    """Q1: the augmentation study (best and worst setting, range, model, budget)."""
    aug = results.get("augmentation") or []
    if not aug:
        return {}
    best = max(aug, key=lambda r: r["mean_ap"])
    worst = min(aug, key=lambda r: r["mean_ap"])
    model = results.get("augmentation_model", "effnet_unet")
    return {
        "AugBest": tex_escape(best["augment"]),
        "AugBestAP": fmt(best["mean_ap"]),
        "AugWorst": tex_escape(worst["augment"]),
        "AugWorstAP": fmt(worst["mean_ap"]),
        "AugRuns": str(len(aug)),
        "AugEpochs": "/".join(str(e) for e in distinct(r["epochs"] for r in aug)),
        "AugAPRange": fmt(best["mean_ap"] - worst["mean_ap"]),
        "AugModel": tex_escape(_config_label(model)),
    }


def _where(hardware: str) -> str:
    """``CPU x86_64 (2 cores, 1 torch threads), torch ...`` -> "the 2-core CPU, one torch
    thread per run" (the GPU's name on CUDA)."""
    m = re.search(r"\((\d+) cores?, (\d+) torch threads?\)", hardware)
    if not hardware.startswith("CPU") or not m:
        return tex_escape(hardware.split(",")[0])
    threads = "one torch thread" if m[2] == "1" else f"{m[2]} torch threads"
    return f"the {m[1]}-core CPU, {threads} per run"


def _verdict(span: float, spread: float) -> str:
    """A factor's range in words against the seed spread of the same configuration."""
    return "larger than" if span > spread else "within"


def _factor(rows: list[dict], key: str, spread: float, prefix: str) -> Macros:
    aps = [r["mean_ap"] for r in rows]
    best = max(rows, key=lambda r: r["mean_ap"])
    worst = min(rows, key=lambda r: r["mean_ap"])
    span = max(aps) - min(aps)
    return {
        f"{prefix}Values": ", ".join(f"{r[key]:g}" for r in rows),
        f"{prefix}Best": f"{best[key]:g}",
        f"{prefix}BestAP": fmt(best["mean_ap"]),
        f"{prefix}Worst": f"{worst[key]:g}",
        f"{prefix}WorstAP": fmt(worst["mean_ap"]),
        f"{prefix}Range": fmt(span),
        f"{prefix}Verdict": _verdict(span, spread),
    }


def sweep_macros(results: dict) -> Macros:
    """Q1: the sweep (flip probability and crop area one at a time), its seed spread under the
    same configuration, each factor's range and whether it exceeds that spread."""
    sweep = results.get("augment_sweep")
    if not sweep:
        return {}
    seeds = [r["mean_ap"] for r in sweep["seeds"]]
    spread = max(seeds) - min(seeds)
    centre = sweep["seeds"][0]
    runs = {(r["crop_min"], r["flip_p"], r["seed"]) for f in ("flip", "crop", "seeds")
            for r in sweep[f]}  # fmt: skip
    hardware = centre.get("hardware", "")
    out: Macros = {
        "SweepModel": tex_escape(_config_label(sweep["model"])),
        "SweepEpochs": str(sweep["epochs"]),
        "SweepRuns": str(len(runs)),
        "SweepSeeds": str(len(seeds)),
        "SweepSpread": fmt(spread),
        "SweepStd": fmt(statistics.stdev(seeds)) if len(seeds) > 1 else "--",
        "SweepSeedMin": fmt(min(seeds)),
        "SweepSeedMax": fmt(max(seeds)),
        "SweepCentreCrop": f"{centre['crop_min']:g}",
        "SweepCentreFlip": f"{centre['flip_p']:g}",
        "SweepMinutesSentence": f"{fmt(sweep['train_seconds'] / 60, 0)} training minutes summed "
        f"over runs on {_where(hardware)}",
    }
    out |= _factor(sweep["flip"], "flip_p", spread, "SweepFlip")
    out |= _factor(sweep["crop"], "crop_min", spread, "SweepCrop")
    out["SweepConclusion"] = _conclusion(out["SweepFlipVerdict"], out["SweepCropVerdict"])
    aug = results.get("augmentation") or []
    if aug:
        aps = [r["mean_ap"] for r in aug]
        out["SweepAugVerdict"] = _verdict(max(aps) - min(aps), spread)
    return out


def _conclusion(flip: str, crop: str) -> str:
    """What the sweep supports, from the two verdicts (so the claim follows the numbers)."""
    beyond = [w for w, v in (("the flip probability", flip), ("the crop area", crop))
              if v != "within"]  # fmt: skip
    if not beyond:
        return (
            "At this budget neither factor moves val AP by more than the seed spread, so the "
            "sweep cannot rank these settings; the recipes' choice rests on common practice, "
            "not on a gain measured here."
        )
    return (
        f"Only {' and '.join(beyond)} moved val AP by more than the seed spread; with one seed "
        "per point that is one measurement per setting, a lead to repeat, not a ranking."
    )

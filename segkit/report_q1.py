"""The macros that read results against seed noise, for ``generated/numbers.tex``
(:mod:`segkit.report_numbers`): Q1's augmentation study and the sweep of ``segkit study --sweep``
(``augment_sweep.json``), with a factor's range against the seed spread measured under the same
configuration; Q4's class weighting and Q6's UNet-over-BaseConv lead, each a difference of two
single runs, against that difference's standard deviation under the seed studies."""

from __future__ import annotations

import math
import re
import statistics

from .config import model_label as _config_label
from .report_tables import distinct, fmt, join_words, lever_text, seed_entries, tex_escape

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


# a range over several single-seed settings is read as clearly beyond seed noise only past this
# multiple of the seeds' spread: five runs with no effect at all span about as much as four seeds
CLEAR_FACTOR = 1.5


def _verdict(span: float, spread: float) -> str:
    """A factor's range in words against the seed spread of the same configuration."""
    if span <= spread:
        return "within"
    return "well beyond" if span > CLEAR_FACTOR * spread else "about the size of"


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
        "SweepSettings": str(len({(c, f) for c, f, _ in runs})),
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
    if _has_metrics(sweep["seeds"]):  # Q4 reads mIoU and accuracy against these
        out["SweepIoUSpread"] = fmt(_spread(sweep["seeds"], "miou"))
        out["SweepAccSpread"] = fmt(_spread(sweep["seeds"], "pixel_acc"))
    out |= _factor(sweep["flip"], "flip_p", spread, "SweepFlip")
    out |= _factor(sweep["crop"], "crop_min", spread, "SweepCrop")
    out["SweepConclusion"] = _conclusion(out["SweepFlipVerdict"], out["SweepCropVerdict"])
    points = sweep["flip"] + sweep["crop"]
    if max(r["mean_ap"] for r in points) <= max(seeds):  # no single run above the seeds' range
        out["SweepNoneAboveSeeds"] = ""
    below = [r for r in points if r["mean_ap"] < min(seeds)]  # under every seed of the centre
    if below:
        out["SweepBelowSeeds"] = join_words([_setting(r, centre) for r in below])
    aug = results.get("augmentation") or []
    if aug:
        aps = [r["mean_ap"] for r in aug]
        out["SweepAugVerdict"] = _verdict(max(aps) - min(aps), spread)
    return out


def _setting(row: dict, centre: dict) -> str:
    """A sweep point in words: the factor it changes from the centre, and its val AP."""
    if row["crop_min"] != centre["crop_min"]:
        return f"$s={row['crop_min']:g}$ ({fmt(row['mean_ap'])})"
    return f"$p={row['flip_p']:g}$ ({fmt(row['mean_ap'])})"


def _spread(runs: list[dict], metric: str) -> float:
    values = [r[metric] for r in runs]
    return max(values) - min(values)


def _has_metrics(runs: list[dict]) -> bool:
    return all(r.get(key) is not None for r in runs for key, _ in WEIGHTING_METRICS)


def _noise_runs(results: dict) -> list[tuple[str, list[dict]]]:
    """The repeated-seed runs of a short configuration: the seed study (before the levers) and
    the sweep's centre point (with them), as (description, runs) with two runs or more."""
    out = []
    seeds = next(iter(seed_entries(results)), None)
    if seeds and len(seeds.get("runs") or []) >= 2 and _has_metrics(seeds["runs"]):
        out.append(("without the levers", seeds["runs"]))
    sweep = results.get("augment_sweep")
    if sweep and len(sweep["seeds"]) >= 2 and _has_metrics(sweep["seeds"]):
        out.append(("with the levers", sweep["seeds"]))
    return out


WEIGHTING_METRICS = (("mean_ap", "AP"), ("miou", "mIoU"), ("pixel_acc", "pixel accuracy"))


def _diff_sd(runs: list[dict], metric: str) -> float:
    """The standard deviation of the difference between two single runs of one configuration:
    sqrt(2) times the seeds' standard deviation."""
    return math.sqrt(2) * statistics.stdev(r[metric] for r in runs)


def _against(diff: float, sds: list[tuple[str, float]]) -> str:
    """Where a difference of two single runs lies against two standard deviations of that
    difference (``sds``: one per noise source, labelled), in words."""
    beyond = [label for label, sd in sds if diff > 2 * sd]
    if len(sds) == 1:
        return f"{'beyond' if beyond else 'within'} two of those standard deviations"
    if len(beyond) in (0, len(sds)):
        return f"{'beyond' if beyond else 'within'} two of those standard deviations for both"
    return f"beyond two of those standard deviations only {beyond[0]}"


def weighting_macros(results: dict) -> Macros:
    """Q4: the square root against inverse weights (the lever study, EMA and TTA on in both),
    each metric's difference read against the noise of a difference of two single runs under
    each seed study (\\WeightingVerdict), and whether the AP difference stays within it."""
    runs = {r.get("key"): r for r in results.get("levers") or []}
    sqrt, inverse = runs.get("levers"), runs.get("levers_inverse")
    noise = _noise_runs(results)
    if not (sqrt and inverse and noise):
        return {}
    sds, groups = [], {}
    for key, word in WEIGHTING_METRICS:
        sd = [(label, _diff_sd(seeds, key)) for label, seeds in noise]
        sds.append(f"{word} {' and '.join(fmt(v) for _, v in sd)}")
        diff = abs(round(sqrt[key], 3) - round(inverse[key], 3))  # as the prose's numbers show
        groups.setdefault(_against(diff, sd), []).append(f"{word} ({fmt(diff)})")
    which = ", then ".join(label for label, _ in noise)
    text = (
        "Two single runs of one configuration differ with a standard deviation of $\\sqrt2$ "
        f"times the seeds' ({which}: {'; '.join(sds)}). "
    )
    parts = []
    for where, words in groups.items():
        many = len(words) > 1
        parts.append(
            f"the difference{'s' * many} in {join_words(words)} {'are' if many else 'is'} {where}"
        )
    said = "; ".join(parts)
    text += f"{said[0].upper()}{said[1:]}. "
    if all(w.startswith("within") for w in groups):
        text += "With one run per setting, none of these differences is established."
    else:
        text += (
            "Each setting is one run, so a difference beyond the seed noise measured here is a "
            "lead for more seeds to confirm, not an established gain."
        )
    ap = next(w for w, words in groups.items() if any(x.startswith("AP ") for x in words))
    return {
        "WeightingVerdict": text,
        **({"WeightingAPWithin": ""} if ap.startswith("within") else {}),
    }


def _conclusion(flip: str, crop: str) -> str:
    """What the sweep supports, from the two verdicts (so the claim follows the numbers)."""
    factors = (("the flip probability", flip), ("the crop area", crop))
    beyond = [w for w, v in factors if v == "well beyond"]
    if beyond:
        return (
            f"Only {' and '.join(beyond)} moved val AP well beyond the seed spread; with one seed "
            "per point that is one measurement per setting, a lead to repeat, not a ranking."
        )
    sized = [w for w, v in factors if v == "about the size of"]
    if sized:
        return (
            f"Neither factor's range clearly exceeds the seed noise ({' and '.join(sized)} "
            "moved val AP by about the seed spread), so the sweep cannot rank these settings."
        )
    return (
        "At this budget neither factor moves val AP by more than the seed spread, so the "
        "sweep cannot rank these settings; the recipes' choice rests on common practice, "
        "not on a gain measured here."
    )


def skips_noise_macros(results: dict) -> Macros:
    """Q6: UNet's lead over BaseConv in mean AP (val and test) in standard deviations of the
    difference between two single runs, from the seed study's UNet runs (\\UNetLeadSentence)."""
    unet = next((e for e in seed_entries(results) if e.get("model") == "unet"), None)
    models = results.get("models", {})
    runs = (unet or {}).get("runs") or []
    if len(runs) < 2 or not (models.get("unet") and models.get("baseconv")):
        return {}
    sd = _diff_sd(runs, "mean_ap")
    val, test = (
        models["unet"][s]["mean_ap"] - models["baseconv"][s]["mean_ap"] for s in ("val", "test")
    )
    recipe = f" with {lever_text(unet['levers'])}" if unet.get("levers") else ""
    text = (
        f"UNet's lead over BaseConv in mean AP ({fmt(val)} on val, {fmt(test)} on test) is "
        f"{val / sd:.1f} and {test / sd:.1f} times the standard deviation of a difference between "
        f"two single runs, {fmt(sd)} ($\\sqrt2$ times that of {len(runs)} seeds of a "
        f"{unet.get('epochs', '?')}-epoch UNet run{recipe}, the seed study). "
    )
    text += _lead_verdict({"val": val / sd, "test": test / sd})
    return {"UNetLeadSentence": text}


def _lead_verdict(ratios: dict[str, float]) -> str:
    """Each split's lead in standard deviations of a two-run difference, judged on its own: past
    two is a lead to confirm, past three one that such noise would rarely produce."""
    if min(ratios.values()) >= 3:
        return (
            "Both leads are beyond three of those standard deviations: noise of that size would "
            "rarely produce them, though it was measured on another recipe."
        )
    beyond = [split for split, r in ratios.items() if r >= 2]
    caveat = (
        "suggestive, not established, with noise from few seeds of a shorter run of another recipe."
    )
    if len(beyond) == len(ratios):
        return f"Both leads are beyond two of those standard deviations: {caveat}"
    if beyond:
        within = [split for split in ratios if split not in beyond]
        return (
            f"The {' and '.join(beyond)} lead is beyond two of those standard deviations and the "
            f"{' and '.join(within)} lead within: {caveat}"
        )
    return "Both leads are within two of those standard deviations: seed noise could produce them."

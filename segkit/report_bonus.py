"""The bonus section's macros for ``generated/numbers.tex`` (:mod:`segkit.report_numbers`): each
instance method's numbers, the post-processing chosen on val, the Penn-Fudan split sizes and the
weights of the DWT loss as :mod:`segkit.losses` applies them."""

from __future__ import annotations

import re

from .config import field_defaults
from .config import model_label as _config_label
from .instance import POSTPROCESS_GRID as WATERSHED_GRID
from .instance import SELECT_METRIC as WATERSHED_SELECT
from .losses import default_level_weights
from .maskrcnn import POSTPROCESS_GRID as MASKRCNN_GRID
from .metrics.mask_ap import CI_LEVEL
from .optim import SGD_MOMENTUM, run_warmup_steps
from .report_tables import (
    INSTANCE_METHODS,
    fmt,
    instance_body,
    join_words,
    signed,
    tex_escape,
)
from .sources import load_checksums
from .study import MASKRCNN_LEVERS, MASKRCNN_RECIPE, maskrcnn_recipe_mean

# the macro prefix of each instance method (results.json key -> prefix)
INSTANCE_PREFIXES = {"instance": "Inst", "instance_maskrcnn": "Mrcnn"}


def _camel(s: str) -> str:
    """``sem_threshold`` -> ``SemThreshold`` (a field name as part of a macro name)."""
    return "".join(w.capitalize() for w in re.split(r"[^A-Za-z]+", s) if w)


def _level_weights_text(weights: list[float]) -> str:
    """Runs of equal level weights in words: "$w_k=3$ for $k\\le 2$, $w_3=2$ and $w_k=1$ for
    $4\\le k\\le 15$"."""
    runs: list[tuple[int, int, float]] = []
    for k, w in enumerate(weights):
        if runs and runs[-1][2] == w:
            runs[-1] = (runs[-1][0], k, w)
        else:
            runs.append((k, k, w))
    last = len(weights) - 1
    parts = []
    for a, b, w in runs:
        if a == b:
            parts.append(f"$w_{{{a}}}={w:g}$")
        elif a == 0:
            parts.append(f"$w_k={w:g}$ for $k\\le {b}$")
        elif b == last:
            parts.append(f"$w_k={w:g}$ for $k\\ge {a}$")
        else:
            parts.append(f"$w_k={w:g}$ for ${a}\\le k\\le {b}$")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def pennfudan_size() -> int:
    """The number of Penn-Fudan images (those of the official archive's checksum list)."""
    return sum(
        p.startswith("PNGImages/") and p.endswith(".png") for p in load_checksums("PennFudanPed")
    )


def instance_macros(results: dict) -> dict[str, str]:
    """Bonus: each instance method's numbers (``\\InstTestAP``, ``\\MrcnnTestAP`` ...), its
    post-processing chosen on val, the split sizes and the DWT loss's weights."""
    out: dict[str, str] = {}
    for key, _ in INSTANCE_METHODS:
        inst, p = results.get(key), INSTANCE_PREFIXES.get(key)
        if not inst or not p:
            continue
        for split in ("val", "test"):
            m = inst[split]
            s = split.capitalize()
            out[f"{p}{s}AP"] = fmt(m["ap"])
            out[f"{p}{s}APfifty"] = fmt(m["ap50"])
            out[f"{p}{s}APseventyfive"] = fmt(m["ap75"])
            out[f"{p}{s}IoU"] = fmt(m.get("mean_best_iou"))
            if len(m.get("ap_per_threshold") or []) == 10:  # 0.50:0.05:0.95; [8] is IoU 0.90
                out[f"{p}{s}APninety"] = fmt(m["ap_per_threshold"][8])
            if m.get("num_images") is not None:
                out[f"{p}{s}Images"] = str(m["num_images"])
            if m.get("num_gt") is not None:
                out[f"{p}{s}People"] = str(m["num_gt"])
        out[f"{p}Minutes"] = fmt(inst["train_seconds"] / 60, 0)
        out[f"{p}Epochs"] = str(inst["epochs"])
        out[f"{p}Body"] = tex_escape(_config_label(instance_body(inst)))
        if inst.get("inference_ms") is not None:
            out[f"{p}InferenceMs"] = fmt(inst["inference_ms"], 0)
        for field, value in (inst.get("postprocess") or {}).items():  # chosen on val
            out[f"{p}{_camel(field)}"] = f"{value:g}" if isinstance(value, float) else str(value)
        edge = _grid_edge(inst.get("postprocess") or {}, POSTPROCESS_GRIDS[key])
        if edge:
            out[f"{p}GridEdge"] = edge
        val, test = inst["val"].get("num_images"), inst["test"].get("num_images")
        total = pennfudan_size()
        train = total - val - test if val is not None and test is not None else 0
        if train > 0:
            out[f"{p}TrainImages"] = str(train)
            out[f"{p}AllImages"] = str(total)
        out |= _config_macros(p, inst.get("config") or {}, train)
        if inst.get("best_epoch") is not None:
            out[f"{p}BestEpoch"] = str(inst["best_epoch"])
        ref = inst.get("reference")
        if ref:
            out[f"{p}RefAP"] = fmt(ref["mask_ap"])
            out[f"{p}RefModel"] = tex_escape(ref.get("model", ""))
    out |= {"TargetAP": fmt(TARGET_AP, 2), "TargetAPfifty": fmt(TARGET_AP50, 2),
            "StrictIoU": fmt(STRICT_IOU, 2), "LooseIoU": fmt(LOOSE_IOU, 2)}  # fmt: skip
    tests = [results[k]["test"]["ap"] for k, _ in INSTANCE_METHODS if results.get(k)]
    if tests and max(tests) < TARGET_AP:
        out["TargetMissed"] = ""  # a flag: no method reaches the target mask AP on test
    return (
        out
        | comparison_macros(results)
        | ablation_macros(results.get("maskrcnn_ablation"))
        | levers_macros(results.get("maskrcnn_levers"))
    )


def _config_macros(p: str, saved: dict, train_images: int) -> dict[str, str]:
    """An instance run's config as the prose quotes it: its fields (``CONFIG_FIELDS``), the DWT
    energy levels and weights, the warm-up it got, the metric its checkpoint was chosen on."""
    cfg = {**field_defaults(saved), **saved} if saved else {}  # a later field: its default
    out: dict[str, str] = {}
    levels = cfg.get("num_energy_levels")
    if levels is not None:
        out[f"{p}EnergyLevels"] = str(levels)
        out[f"{p}LevelWeights"] = _level_weights_text(default_level_weights(levels).tolist())
    if cfg.get("energy_weight") is not None:
        out[f"{p}EnergyWeight"] = f"{cfg['energy_weight']:g}"
    for field in CONFIG_FIELDS:
        if isinstance(cfg.get(field), (int, float)):
            out[f"{p}{_camel(field)}"] = f"{cfg[field]:g}"
    if cfg.get("optimizer") in OPTIMIZER_WORDS:
        out[f"{p}Optimizer"] = OPTIMIZER_WORDS[cfg["optimizer"]]
    if cfg.get("aug_scale"):
        lo, hi = cfg["aug_scale"]
        out[f"{p}AugScale"] = f"{lo:g} to {hi:g}"
    if train_images and {"epochs", "batch_size", "warmup_steps"} <= cfg.keys():
        out[f"{p}WarmupSteps"] = str(run_warmup_steps(cfg, train_images))  # as capped
    metric = WATERSHED_SELECT if cfg.get("task") == "watershed" else cfg.get("select_metric")
    if metric in SELECT_WORDS:
        out[f"{p}SelectedOn"] = SELECT_WORDS[metric]
    return out


# the post-processing each method chooses on val, and the words the prose uses for each value
POSTPROCESS_GRIDS = {"instance": WATERSHED_GRID, "instance_maskrcnn": MASKRCNN_GRID}
GRID_WORDS = {"sem_threshold": "mask threshold", "core_level": "core level",
              "min_size": "minimum size", "score_threshold": "score threshold",
              "mask_threshold": "mask threshold"}  # fmt: skip


def _grid_edge(chosen: dict, grid: dict[str, tuple]) -> str | None:
    """The values chosen at an end of their grid (a better one may lie beyond it), in words;
    zero is a natural floor, not an edge."""
    edges = []
    for field, value in chosen.items():
        values = grid.get(field) or ()
        if len(values) > 1 and value != 0 and value in (min(values), max(values)):
            end = "largest" if value == max(values) else "smallest"
            edges.append(f"the {GRID_WORDS.get(field, field)} ({value:g}) is the {end} in its grid")
    return join_words(edges) if edges else None


# config fields the bonus's prose quotes (as \MrcnnShortSide, \InstShortSide, ...)
CONFIG_FIELDS = ("short_side", "max_size", "fpn_channels", "frozen_stages", "lr", "batch_size",
                 "rois_per_image", "warmup_steps", "anchor_size", "crop_size", "flip_p",
                 "weight_decay")  # fmt: skip
OPTIMIZER_WORDS = {"adamw": "AdamW", "sgd": f"SGD with momentum {SGD_MOMENTUM:g}"}
SELECT_WORDS = {"val_loss": "the lowest val loss", "val_ap": "the highest val mask AP",
                "last": "the last epoch"}  # fmt: skip
EPOCH_GAIN = 0.01  # val AP gained over the second half of training that reads as a rise
METRIC_WORDS = {"ap": "mask AP", "ap50": "AP50", "ap75": "AP75"}
METRIC_MACROS = {"ap": "AP", "ap50": "APfifty", "ap75": "APseventyfive"}  # as in \\MrcnnTestAPfifty
TARGET_AP, TARGET_AP50 = 0.60, 0.90  # the bonus's quality targets for the better method (test)
LOOSE_IOU = 0.50  # the loosest COCO threshold (AP50)
STRICT_IOU = 0.90  # the strict overlap the prose quotes (ap_per_threshold[8], APninety)


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _interval(ci: list[float]) -> str:
    return f"[{signed(ci[0])}, {signed(ci[1])}]"


def comparison_macros(results: dict) -> dict[str, str]:
    """How sure the comparison of the two instance methods is (``instance_comparison``): each
    run's bootstrap interval over the test images and, per metric, whether the other method's
    number lies inside it (a sentence); the paired difference when both runs have matches."""
    comp, inst, mrcnn = (results.get(k) for k in ("instance_comparison", "instance",
                                                   "instance_maskrcnn"))  # fmt: skip
    if not comp or not inst or not mrcnn:
        return {}
    level = (comp.get("paired") or {}).get("level", CI_LEVEL)  # older files: the default
    out: dict[str, str] = {"CompareResamples": str(comp["resamples"]),
                           "CompareLevel": fmt(100 * level, 0)}  # fmt: skip
    ci = comp["ci"].get("b")  # Mask R-CNN's (the watershed run is "a")
    if ci:
        parts = []
        for key, word in METRIC_WORDS.items():
            out[f"MrcnnCi{METRIC_MACROS[key]}"] = _interval(ci[key])
            if comp["ci"].get("a"):
                out[f"InstCi{METRIC_MACROS[key]}"] = _interval(comp["ci"]["a"][key])
            other = inst["test"][key]
            where = ("inside" if ci[key][0] <= other <= ci[key][1]
                     else "below" if other < ci[key][0] else "above")  # fmt: skip
            parts.append(f"the watershed's {word} ({fmt(other)}) lies {where} Mask R-CNN's "
                         f"interval {_interval(ci[key])}")  # fmt: skip
        out["CompareSentence"] = "; ".join(parts)
        ahead = [METRIC_WORDS[k] for k in METRIC_WORDS if inst["test"][k] < ci[k][0]]
        behind = [METRIC_WORDS[k] for k in METRIC_WORDS if inst["test"][k] > ci[k][1]]
        same = [METRIC_WORDS[k] for k in METRIC_WORDS if ci[k][0] <= inst["test"][k] <= ci[k][1]]
        verdict = [f"Mask R-CNN is ahead on {_words(ahead)}"] if ahead else []
        verdict += [f"the watershed model is ahead on {_words(behind)}"] if behind else []
        verdict += [f"these images cannot separate the two on {_words(same)}"] if same else []
        out["CompareVerdict"] = "; ".join(verdict)
    paired = comp.get("paired")
    if paired:
        out["PairedDiff"] = signed(paired["diff"])
        out["PairedDiffCi"] = _interval(paired["diff_ci"])
        out["PairedBetterShare"] = fmt(100 * paired["b_better"], 0)
        lo, hi = paired["diff_ci"]
        out["PairedVerdict"] = (
            "Mask R-CNN is ahead on mask AP" if lo > 0
            else "the watershed model is ahead on mask AP" if hi < 0
            else "the interval contains zero, so these images cannot tell the two apart on mask AP"
        )  # fmt: skip
    if comp["ci"].get("a") and ci:
        out["CompareClearest"] = _clearest(comp["ci"]["a"], ci, inst["test"], mrcnn["test"])
    val = {k: results[k]["val"]["ap"] for k in ("instance", "instance_maskrcnn")}
    test = {k: results[k]["test"]["ap"] for k in ("instance", "instance_maskrcnn")}
    if max(val, key=val.get) != max(test, key=test.get):
        out["ValOrderReversed"] = ""  # a flag: val ranks the two methods the other way round
    return out


def _clearest(ci_a: dict, ci_b: dict, a: dict, b: dict) -> str:
    """Where the two methods' intervals (``a``: the watershed, ``b``: Mask R-CNN) are furthest
    apart, in words: the metric, the leader and how far the intervals overlap (or do not)."""

    def gap(k: str) -> float:  # > 0: disjoint by that much; < 0: overlap of that size
        return max(ci_a[k][0] - ci_b[k][1], ci_b[k][0] - ci_a[k][1])

    key = max(METRIC_WORDS, key=gap)
    leader = "Mask R-CNN" if b[key] > a[key] else "the watershed model"
    g = gap(key)
    how = f"do not overlap (a gap of {fmt(g)})" if g > 0 else f"overlap by only {fmt(-g)}"
    paired = (
        "" if key == "ap" else "; these are separate intervals: only mask AP has the paired test"
    )
    return (
        f"{leader}'s lead is clearest on {METRIC_WORDS[key]}, where the two intervals {how}"
        + paired
    )


def _score_tie(rows: list[dict]) -> dict[str, str]:
    """When several score thresholds tie on val AP and AP50 (the selection's first two keys),
    the range they span: the choice among them fell to the fewest detections."""
    best = max(rows, key=lambda r: (r["ap"], r["ap50"]))
    tied = sorted(
        r["score_threshold"] for r in rows if (r["ap"], r["ap50"]) == (best["ap"], best["ap50"])
    )
    if len(tied) < 2:
        return {}
    text = f"val AP is the same ({fmt(best['ap'])}) for every score threshold from {tied[0]:g} "
    return {"AblScoreTie": text + f"to {tied[-1]:g}, so the one keeping the fewest detections won"}


def ablation_macros(ablation: dict | None) -> dict[str, str]:
    """The Mask R-CNN ablation on val: AP after half the epochs and at the end, the AP range
    over each threshold and over the inference resolution, the best resolution."""
    if not ablation:
        return {}
    epochs = ablation["epochs"]
    half = epochs[len(epochs) // 2 - 1]
    gain = epochs[-1]["val_ap"] - half["val_ap"]
    out = {"AblHalfEpoch": str(half["epoch"]), "AblHalfAP": fmt(half["val_ap"]),
           "AblLastEpoch": str(epochs[-1]["epoch"]), "AblLastAP": fmt(epochs[-1]["val_ap"]),
           "AblBestAP": fmt(max(e["val_ap"] for e in epochs)), "AblEpochGain": fmt(gain),
           "AblEpochVerdict": f"a rise of {fmt(gain)} over the second half of training"
                              if gain > EPOCH_GAIN else "levelling off"}  # fmt: skip
    for key in ("mask_threshold", "score_threshold", "inference_short_side"):
        aps = [r["ap"] for r in ablation[key]]
        out[f"Abl{_camel(key)}Range"] = fmt(max(aps) - min(aps))
    out |= _score_tie(ablation["score_threshold"])
    res = ablation["inference_short_side"]
    best = max(res, key=lambda r: r["ap"])
    trained = next((r for r in res if r["short_side"] == ablation["trained_short_side"]), None)
    out |= {"AblResBest": str(best["short_side"]), "AblResBestAP": fmt(best["ap"]),
            "AblResTrained": str(ablation["trained_short_side"])}  # fmt: skip
    if trained:
        out["AblResTrainedAP"] = fmt(trained["ap"])
    return out


def levers_macros(levers: dict | None) -> dict[str, str]:
    """The Mask R-CNN lever study (``segkit instance levers``) on val: the recipe's mean AP and
    seed spread, the best run, and in words which levers moved AP by more than that spread (by
    more than twice it, or just beyond it: weak evidence) and which did not (not told apart from
    seed noise)."""
    if not levers:
        return {}
    mean, spread = maskrcnn_recipe_mean(levers), levers["spread"]
    changed = [r for r in levers["rows"] if r["lever"] != MASKRCNN_RECIPE]
    recipe = [r for r in levers["rows"] if r["lever"] == MASKRCNN_RECIPE]
    effects = []
    for r in changed:
        d = r["ap"] - mean
        if abs(d) > spread:
            how = (
                "more than twice that spread"
                if abs(d) > 2 * spread
                else f"just beyond the spread, weak evidence with {len(recipe)} seeds"
            )
            effects.append(f"{r['lever']} {'raised' if d > 0 else 'lowered'} it by "
                           f"{fmt(abs(d))} ({how})")  # fmt: skip
    quiet = [r["lever"] for r in changed if abs(r["ap"] - mean) <= spread]
    verdict = [_words(effects)] if effects else []
    if quiet:
        verdict.append(f"{_words(quiet)} moved it by no more than the spread, which these runs "
                       "cannot tell from seed noise")  # fmt: skip
    best = max(levers["rows"], key=lambda r: r["ap"])
    return {
        "LevEpochs": str(levers["epochs"]), "LevRuns": str(len(levers["rows"])),
        "LevRecipeSeeds": str(len(recipe)), "LevRecipeAP": fmt(mean), "LevSpread": fmt(spread),
        "LevMinutes": fmt(levers["train_seconds"] / 60, 0),
        "LevRunMinutes": fmt(levers["train_seconds"] / 60 / len(levers["rows"]), 0),
        "LevBestAP": fmt(best["ap"]), "LevBestRun": tex_escape(best["lever"]),
        "LevVerdict": "; ".join(verdict),
    } | _schedule_note(changed, mean, spread)  # fmt: skip


def _schedule_note(changed: list[dict], mean: float, spread: float) -> dict[str, str]:
    """``\\LevScheduleHelps`` (a flag) when a constant learning rate beat the recipe's
    warm-up + cosine schedule by more than the seed spread."""
    constant = [label for label, change in MASKRCNN_LEVERS.items() if change.get("scheduler")]
    gain = [r["ap"] - mean for r in changed if r["lever"] in constant]
    return {"LevScheduleHelps": ""} if gain and max(gain) > spread else {}

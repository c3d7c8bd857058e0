"""``generated/numbers.tex``: every number ``report/main.tex`` quotes, and every qualitative flag
that depends on the data (a model still improving, the best model, a cost comparison), as a LaTeX
macro formatted from ``results.json``, so the prose cannot drift from the results.

One function per part of the report (:data:`SECTIONS`), each returning ``{macro: value}``. A macro
that only some results support (the seed study of ``seeds.json``, a second instance method) is
defined only then, and main.tex tests it with ``\\ifdefined``; without repeated seeds the report
makes no noise claim.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable

from .config import PROTOCOL_EPOCHS
from .config import model_label as _config_label
from .constants import SPLIT_SIZES
from .optim import run_warmup_steps
from .report_bonus import instance_macros
from .report_intro import reproduce_macros, setup_macros, training_time_macros
from .report_q1 import augmentation_macros, skips_noise_macros, sweep_macros, weighting_macros
from .report_tables import (
    MODEL_LABELS,
    WRITEUP_AP,
    WRITEUP_LR,
    distinct,
    encoder_init,
    fmt,
    join_words,
    lever_text,
    seed_entries,
    tex_escape,
)

Macros = dict[str, str]

MACRO_NAMES = {"baseline": "Baseline", "baseconv": "BaseConv", "unet": "UNet", "resnet18": "ResNet",
               "resnet18_unet": "ResNetUNet", "effnet_unet": "EffNet"}  # fmt: skip
SAME_COST = 0.15  # per-epoch costs within 15% of each other read as "about as much as"


# ------------------------------------------------------------------------------ helpers
def _num(x: float) -> str:
    """A hyper-parameter for prose: powers of ten as $10^{k}$, anything else as %g."""
    if x > 0 and abs(math.log10(x) - round(math.log10(x))) < 1e-9 and abs(math.log10(x)) >= 2:
        return rf"$10^{{{round(math.log10(x))}}}$"
    return f"{x:g}"


def _macro_word(s: str) -> str:
    """A class name as part of a macro name (letters only, capitalised)."""
    return re.sub(r"[^A-Za-z]", "", s).capitalize()


def _count(n: int) -> str:
    """A small count in words ("four"), larger ones as digits."""
    words = "zero one two three four five six seven eight nine ten".split()
    return words[n] if 0 <= n < len(words) else str(n)


def _label(key: str) -> str:
    return tex_escape(MODEL_LABELS.get(key, _config_label(key)))


def _per_class(results: dict, name: str, split: str = "test", key: str = "ap") -> list:
    r = results.get("baseline") if name == "baseline" else results["models"].get(name)
    return ((r or {}).get(split) or {}).get(key) or []


def _class_gains(a: list, b: list, names: list[str]) -> list[tuple[float, str]]:
    """(a - b, class) for every class both have, largest gain first."""
    gains = [
        (x - y, n) for x, y, n in zip(a, b, names, strict=False) if x is not None and y is not None
    ]
    return sorted(gains, reverse=True)


def _configs(results: dict) -> list[dict]:
    return [r.get("config") or {} for r in results.get("models", {}).values() if r]


def _shared(results: dict, field: str, show: Callable = _num) -> str:
    """A recipe field shared by the semantic runs (distinct values joined if they ever differ)."""
    vals = distinct(c.get(field) for c in _configs(results))
    return "/".join(show(v) for v in vals) if vals else "?"


def still_improving(entry: dict) -> bool:
    """Whether a run's best val epoch was its last one (it stopped while still improving)."""
    best, epochs = entry.get("best_epoch"), entry.get("epochs")
    return best is not None and epochs is not None and best >= epochs


# ------------------------------------------------------------------------------ sections
def model_macros(results: dict) -> Macros:
    """Q2, Q6, Q7: each model's numbers (``\\UNetValAP``), epochs, minutes and best epoch."""
    out: Macros = {}
    entries = {"baseline": results.get("baseline")} | results.get("models", {})
    for key, r in entries.items():
        if not r or key not in MACRO_NAMES:
            continue
        name = MACRO_NAMES[key]
        out[f"{name}Label"] = _label(key)
        if key in WRITEUP_AP:
            out[f"{name}WriteupAP"] = fmt(WRITEUP_AP[key], 2)
        for split in ("val", "test"):
            m = r.get(split)
            if not m:
                continue
            s = split.capitalize()
            out[f"{name}{s}AP"] = fmt(m["mean_ap"])
            out[f"{name}{s}APstep"] = fmt(m["mean_ap_step"])
            out[f"{name}{s}IoU"] = fmt(m["miou"])
            out[f"{name}{s}Acc"] = fmt(m["pixel_acc"])
        if key == "baseline":
            continue
        # always defined (a dash when missing): main.tex quotes them
        seconds, epochs, best = r.get("train_seconds"), r.get("epochs"), r.get("best_epoch")
        out[f"{name}Minutes"] = fmt(seconds / 60, 0) if seconds else "--"
        out[f"{name}Epochs"] = str(epochs) if epochs is not None else "--"
        out[f"{name}EpochMinutes"] = fmt(seconds / 60 / epochs if seconds and epochs else None, 1)
        out[f"{name}Init"] = encoder_init(r)
        out[f"{name}BestEpoch"] = str(best) if best is not None else "--"
        text = f"{best} of {epochs}" if best is not None else "--"
        if still_improving(r):
            out[f"{name}StillImproving"] = ""
            text += " (its last)"
        out[f"{name}BestEpochText"] = text
    return out


def baseline_macros(results: dict) -> Macros:
    """Q2, Q3: the classes the per-pixel baseline ever predicts on val (confusion columns)."""
    names = results.get("class_names") or []
    conf = ((results.get("baseline") or {}).get("val") or {}).get("confusion")
    if not conf or not names:
        return {}
    predicted = [n for j, n in enumerate(names) if any(row[j] for row in conf)]
    return {
        "BaselinePredicted": join_words(predicted or ["none"]),
        "BaselinePredictedCount": _count(len(predicted)),
    }


def seed_macros(results: dict) -> Macros:
    """Q1 (and Q4, Q5): run-to-run noise from the seed study, when it ran."""
    out: Macros = {}
    entries = seed_entries(results)
    if isinstance(results.get("seeds"), list):  # `segkit seeds`: one entry per model
        for entry in entries:
            aps = [r["mean_ap"] for r in entry.get("runs") or [] if r.get("mean_ap") is not None]
            if len(aps) >= 2:
                out[f"Seed{_macro_word(entry['model'])}Spread"] = fmt(max(aps) - min(aps))
    seeds = entries[0] if entries else None
    if not seeds:
        return out
    aps = [r["mean_ap"] for r in seeds.get("runs") or [] if r.get("mean_ap") is not None]
    if len(aps) < 2:
        return out
    out |= {
        "SeedRuns": str(len(aps)),
        "SeedModel": tex_escape(_config_label(seeds.get("model", "?"))),
        "SeedAPSpread": fmt(max(aps) - min(aps)),
        "SeedAPStd": fmt(statistics.stdev(aps)),
    }
    for metric, word in (("miou", "IoU"), ("pixel_acc", "Acc")):  # Q4 reads all three
        values = [r[metric] for r in seeds["runs"] if r.get(metric) is not None]
        if len(values) == len(aps):
            out[f"Seed{word}Spread"] = fmt(max(values) - min(values))
    if seeds.get("epochs") is not None:
        out["SeedEpochs"] = str(seeds["epochs"])
    if seeds.get("levers"):  # older seeds.json files lack it
        out["SeedLevers"] = lever_text(seeds["levers"])
    return out


def loss_macros(results: dict) -> Macros:
    """Q4: the class weighting of the recipes and the rare classes' share of the val pixels."""
    out = {
        "ClassWeighting": _shared(results, "class_weighting", str),
        "WeightCap": _shared(results, "weight_cap"),
    }
    names = results.get("class_names") or []
    conf = ((results.get("baseline") or {}).get("val") or {}).get("confusion")
    if conf and names:  # rows of the baseline's val confusion matrix
        total = sum(sum(row) for row in conf)
        for n, row in zip(names, conf, strict=True):
            out[f"ValShare{_macro_word(n)}"] = fmt(100 * sum(row) / total, 1)
    return out


def _study_epochs(results: dict) -> list[int]:
    """The epochs of the short studies' runs: Q1's study and sweep, the lever and seed studies."""
    runs = [*(results.get("augmentation") or []), *(results.get("levers") or [])]
    runs += seed_entries(results)
    runs += [results["augment_sweep"]] if results.get("augment_sweep") else []
    return [r["epochs"] for r in runs if r.get("epochs")]


def warmup_macros(results: dict) -> Macros:
    """Q5: where the warm-up was capped at a tenth of a run (the short runs), per model and over
    the studies (which use the recipe's batch size and warm-up)."""
    train = SPLIT_SIZES["train"]
    capped = []
    for name, r in results.get("models", {}).items():
        cfg = (r or {}).get("config") or {}
        if {"epochs", "batch_size", "warmup_steps"} <= cfg.keys():
            warm = run_warmup_steps(cfg, train)
            if warm < cfg["warmup_steps"]:
                capped.append(f"{warm} for the {tex_escape(_config_label(name))}")
    out: Macros = {"WarmupCapped": "; ".join(capped)} if capped else {}  # labels hold commas
    cfg = next((c for c in _configs(results) if "warmup_steps" in c), None)
    if cfg:
        warm = sorted(
            {run_warmup_steps({**cfg, "epochs": e}, train) for e in _study_epochs(results)}
        )
        if warm and warm[0] < cfg["warmup_steps"]:
            out["WarmupStudies"] = str(warm[0]) if len(warm) == 1 else f"{warm[0]} to {warm[-1]}"
    return out


def recipe_macros(results: dict) -> Macros:
    """Q5: the recipe shared by the semantic runs."""
    out = {
        "BatchSize": _shared(results, "batch_size", str),
        "LearningRate": _shared(results, "lr"),
        "WeightDecay": _shared(results, "weight_decay"),
        "WarmupSteps": _shared(results, "warmup_steps", str),
        **warmup_macros(results),
        "ProtocolEpochs": str(PROTOCOL_EPOCHS),
        "WriteupLR": _num(WRITEUP_LR),
        "FlipP": _shared(results, "flip_p"),
        "CropScale": _shared(
            results, "aug_scale", lambda s: "none" if s is None else f"({_num(s[0])}, {_num(s[1])})"
        ),
    }
    configs = _configs(results)
    if configs and all(
        c.get("class_weighting") == "sqrt" and c.get("ema_decay") and c.get("tta") for c in configs
    ):
        out["RecipeLevers"] = "sqrt weights, EMA and flip TTA"  # every model trained with them
    levers = results.get("levers") or []
    decays = distinct([c.get("ema_decay") for c in configs] + [r.get("ema_decay") for r in levers])
    decays = [d for d in decays if d]
    if decays:
        out["EmaDecay"] = "/".join(_num(d) for d in decays)
    return out


def lever_macros(results: dict) -> Macros:
    """Q5: the lever study's runs, and the in-run TTA / EMA ablations (val)."""
    out: Macros = {}
    levers = results.get("levers") or []
    for r in levers:
        word = _macro_word(r.get("key") or "")
        out[f"Lever{word}AP"] = fmt(r["mean_ap"])
        out[f"Lever{word}IoU"] = fmt(r["miou"])
        out[f"Lever{word}Acc"] = fmt(r["pixel_acc"])
    if levers:
        out["LeverEpochs"] = "/".join(str(e) for e in distinct(r["epochs"] for r in levers))
        model = levers[0].get("model") or results.get("augmentation_model", "effnet_unet")
        out["LeverModel"] = tex_escape(_config_label(model))
        scored = [r for r in levers if r.get("mean_ap") is not None]  # NaN is stored as null
        if scored:
            best = max(scored, key=lambda r: r["mean_ap"])
            out["LeverBest"] = tex_escape(best.get("setting") or best.get("key") or "?")
    measured = [
        (r["val"], r.get("val_ablation") or {}) for r in results.get("models", {}).values() if r
    ]
    measured += [(r, r.get("ablation") or {}) for r in levers]
    for lever, key in (("TTA", "no_tta"), ("EMA", "no_ema")):
        gains = [m["mean_ap"] - a[key]["mean_ap"] for m, a in measured if key in a]
        if gains:  # "+0.005" or "-0.001 to +0.002", and whether its sign held in every run
            lo, hi = (f"{g:+.3f}".replace("-", "$-$") for g in (min(gains), max(gains)))
            out[f"{lever}GainRange"] = lo if lo == hi else f"{lo} to {hi}"
            sign = "up" if min(gains) > 0 else "down" if max(gains) < 0 else None
            out[f"{lever}GainSign"] = f"{sign} in every run" if sign else "no consistent sign"
    return out


def budget_macros(results: dict) -> Macros:
    """Q6, Q7 and the reproduction: how long each run trained and whether it had stopped
    improving; the ResNets' per-epoch cost and share of the budget."""
    models = {k: r for k, r in results.get("models", {}).items() if r}
    out: Macros = {}
    improving = [_label(k) for k, r in models.items() if still_improving(r)]
    if improving:
        n = len(improving)
        which = "all" if n == len(models) else f"{_count(n)} of the {_count(len(models))}"
        out["StillImprovingModels"] = join_words(improving)
        out["StillImprovingSentence"] = (
            f"For {which} models ({join_words(improving)}) the best val epoch was the last one "
            "run. Under a cosine schedule that ends near a learning rate of zero this is expected, "
            "so it does not show whether longer training would help, nor by how much."
        )
    else:
        out["StillImprovingSentence"] = (
            "Every model's best val epoch came before its last, so each had stopped improving "
            "on val within its epochs."
        )
    resnets = [models[k] for k in ("resnet18", "resnet18_unet") if k in models]
    if resnets and all(still_improving(r) for r in resnets):
        out["ResNetsStillImproving"] = ""
    unet = models.get("unet")
    if unet and resnets and all(r[split]["mean_ap"] < unet[split]["mean_ap"]
                                for r in resnets for split in ("val", "test")):  # fmt: skip
        out["ResNetsBelowUNet"] = ""  # the assignment expects them above the scratch UNet

    def per_epoch(r: dict) -> float | None:
        s, e = r.get("train_seconds"), r.get("epochs")
        return s / e if s and e else None

    unet_cost = per_epoch(models.get("unet") or {})
    costs = [per_epoch(r) for r in resnets]
    if unet_cost and costs and all(costs):
        ratios = [c / unet_cost for c in costs]
        if all(abs(x - 1) <= SAME_COST for x in ratios):
            out["ResNetEpochCost"] = "about as much as"
        elif all(x < 1 for x in ratios):
            out["ResNetEpochCost"] = "less than"
        elif all(x > 1 for x in ratios):
            out["ResNetEpochCost"] = "more than"
            out["ResNetEpochsCostlier"] = ""
        else:
            out["ResNetEpochCost"] = "about as much as"
    minutes = sorted((r.get("train_seconds") or 0, k) for k, r in models.items())
    if len(resnets) == 2 and {k for _, k in minutes[:2]} == {"resnet18", "resnet18_unet"}:
        out["ResNetsSmallestShare"] = ""
    out["NumModels"] = str(len(models))
    return out


def comparison_macros(results: dict) -> Macros:
    """Q6, Q7: per-class comparisons and the best model, computed so they follow the numbers."""
    models = {k: r for k, r in results.get("models", {}).items() if r}
    names = results.get("class_names") or []
    out: Macros = {}
    if "unet" in models and "baseconv" in models and names:
        gains = _class_gains(_per_class(results, "unet"), _per_class(results, "baseconv"), names)
        wins = sum(g > 0 for g, _ in gains)
        out["UNetBeatsBaseConvCount"] = str(wins)
        out["UNetBeatsBaseConvClasses"] = (
            f"all {len(names)} classes"
            if wins == len(names)
            else f"{wins} of the {len(names)} classes"
        )
        out["UNetGainClasses"] = join_words([n for g, n in gains[:2] if g > 0] or ["none"])
        if any(g > 0 for g, _ in gains):  # single runs: the smallest gap the count includes
            g, n = min((g, n) for g, n in gains if g > 0)
            out["UNetSmallestGain"] = f"{fmt(g)} on {n}"
        iou = _class_gains(
            *(_per_class(results, k, key="iou") for k in ("unet", "baseconv")), names
        )
        out["UNetBeatsBaseConvIoUCount"] = str(sum(g > 0 for g, _ in iou))
        ties = [n for g, n in iou if g == 0]
        if ties:
            out["UNetTiesIoU"] = join_words(ties)
    scratch = [k for k, r in models.items() if encoder_init(r) == "scratch"]
    if "effnet_unet" in models and scratch and names:
        best_scratch = [
            max((v for v in col if v is not None), default=None)
            for col in zip(*(_per_class(results, k) for k in scratch), strict=False)
        ]
        gains = _class_gains(_per_class(results, "effnet_unet"), best_scratch, names)
        out["EffNetGainClasses"] = join_words([n for g, n in gains[:4] if g > 0] or ["none"])
    if models and names:
        best = [
            max((v for v in col if v is not None), default=None)
            for col in zip(*(_per_class(results, k) for k in models), strict=False)
        ]
        hard = sorted((b, n) for b, n in zip(best, names, strict=False) if b is not None)[:2]
        shown = [
            f"{n} ({'best test AP ' if i == 0 else ''}{fmt(b)})" for i, (b, n) in enumerate(hard)
        ]
        out["HardClasses"] = join_words(shown)
    best_of = {}
    for split in ("val", "test"):
        ranked = [(r[split]["mean_ap"], k) for k, r in models.items() if r.get(split)]
        if ranked:
            best_of[split] = max(ranked)[1]
            out[f"Best{split.capitalize()}Model"] = _label(best_of[split])
    if best_of.get("val") == best_of.get("test") == "effnet_unet":
        out["EffNetBestOfAll"] = ""  # Q7's paragraph on it can say "it"
    if len(best_of) == 2:  # one sentence that reads well whether or not the two agree
        val, test = (_label(best_of[s]) for s in ("val", "test"))
        out["BestModelSentence"] = (
            f"the {val} is the best model on both val and test"
            if val == test
            else f"the best model on val is the {val}, on test the {test}"
        )
    return out


# the parts of the report, in order: numbers.tex holds one block of macros per part
SECTIONS: tuple[Callable[[dict], Macros], ...] = (
    setup_macros, model_macros, baseline_macros, augmentation_macros, sweep_macros, seed_macros,
    loss_macros, weighting_macros, recipe_macros, lever_macros, budget_macros, training_time_macros,
    comparison_macros, skips_noise_macros, instance_macros, reproduce_macros,
)  # fmt: skip


def numbers_macros(results: dict) -> str:
    """``\\newcommand`` macros for what the report's prose quotes (e.g. ``\\UNetValAP``), one
    block per part of the report (:data:`SECTIONS`)."""
    lines = ["% generated by segkit.report from results.json; do not edit"]
    for section in SECTIONS:
        lines.append(f"% {section.__name__}")
        lines += [rf"\newcommand{{\{k}}}{{{v}}}" for k, v in section(results).items()]
    return "\n".join(lines) + "\n"

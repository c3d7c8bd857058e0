"""The introduction's macros for ``generated/numbers.tex`` (:mod:`segkit.report_numbers`): the
hardware and threads the runs recorded, the reproduction (wall time, calls, reused runs, later
``--only`` updates) and the training minutes of each group of runs (:func:`train_minutes`, which
the README's results line uses too)."""

from __future__ import annotations

import re

from .report_tables import (
    INSTANCE_METHODS,
    OVERFULL_LIMIT_PT,
    distinct,
    fmt,
    join_words,
    plural,
    seed_entries,
    tex_escape,
)

Macros = dict[str, str]

# run-folder prefixes of the studies, to name reused runs by study rather than by folder
STUDY_OF_RUN = {
    "lever_": "the lever study",
    "aug_": "the augmentation study",
    "sweep_": "the augmentation sweep",
    "seed": "the seed study",
}
# `segkit reproduce` steps in the report's words (others print as their name)
STEP_WORDS = {"instance": "watershed", "maskrcnn": "Mask R-CNN"}


# each group of training runs (report_tables.train_minutes): its macro word and its words in prose
TRAIN_GROUPS = {
    "models": ("Models", "the {n} semantic models of Q6 and Q7"),
    "instance": ("Instance", "the instance segmentation of the bonus"),
    "augmentation": ("Aug", "the augmentation study of Q1"),
    "sweep": ("Sweep", "the augmentation sweep of Q1"),
    "levers": ("Levers", "the lever study of the semantic recipe"),
    "maskrcnn_levers": ("MrcnnLevers", "the Mask R-CNN lever study"),
    "seeds": ("Seeds", "the seed study"),
}


def setup_macros(results: dict) -> Macros:
    """Title page and introduction: date, hardware, classes."""
    cores, threads = run_cores_threads(results)
    word = "thread" if threads == "1" else "threads"
    said = " or ".join(threads.split("/"))  # "1/2" -> "1 or 2"
    return {
        "Hardware": tex_escape(merge_threads(run_hardware(results))),
        "RunCores": cores,
        "RunThreads": threads,
        "RunThreadsText": f"{said} torch {word}",
        "RunDate": results.get("date", "?"),
        "NumClasses": str(len(results.get("class_names") or [])),
        "OverfullPt": f"{OVERFULL_LIMIT_PT:g}",
    }


def training_time_macros(results: dict) -> Macros:
    """Training minutes summed over the runs of each group (:data:`TRAIN_GROUPS`), in a list
    for the prose (``\\TrainMinutesList``), and their total."""
    parts = train_minutes(results)
    models = len([r for r in results.get("models", {}).values() if r])
    out: Macros = {}
    said = []
    for group, (word, what) in TRAIN_GROUPS.items():
        if group in parts:
            out[f"TrainMinutes{word}"] = fmt(parts[group], 0)
            said.append(f"{fmt(parts[group], 0)} for {what.format(n=models)}")
    if said:
        said[0] = said[0].replace(" for ", " minutes for ", 1)
        out["TrainMinutesList"] = (
            said[0] if len(said) == 1 else (", ".join(said[:-1]) + " and " + said[-1])
        )
    out["TrainMinutesAll"] = str(sum(round(m) for m in parts.values()))  # adds up as printed
    return out


def _reused_text(runs: list[str]) -> str:
    """Reused run folders named by the study they belong to: "3 runs of the lever study"."""
    counts: dict[str, int] = {}
    for name in runs:
        study = next((s for pre, s in STUDY_OF_RUN.items() if name.startswith(pre)), "")
        counts[study] = counts.get(study, 0) + 1
    return join_words([plural(n, "run") + (f" of {s}" if s else "") for s, n in counts.items()])


def reproduce_macros(results: dict) -> Macros:
    """The reproduction paragraph: wall time, calls, runs reused from before it began."""
    out: Macros = {}
    if results.get("reproduce_wall_minutes") is not None:
        out["ReproduceWallMinutes"] = fmt(results["reproduce_wall_minutes"], 0)
    if len(results.get("reproduce_calls") or []) > 1:  # resumed: the number of calls it took
        out["ReproduceCalls"] = str(len(results["reproduce_calls"]))
    reused = results.get("reproduce_reused_runs") or []
    if reused:  # finished before the reproduction began: not in its wall time
        out["ReproduceReused"] = _reused_text(reused)
    updates = results.get("partial_updates") or []
    if updates:  # `segkit reproduce --only STEP` calls after it: their steps, dates and minutes
        steps = distinct(step for u in updates for step in u["steps"])
        dates = sorted(distinct(u["date"] for u in updates))
        out["UpdatedSteps"] = join_words([STEP_WORDS.get(step, tex_escape(step)) for step in steps])
        out["UpdatedDates"] = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        out["UpdatedMinutes"] = fmt(sum(u["minutes"] for u in updates), 0)
        out["UpdatedCalls"] = str(len(updates))
    return out


def train_minutes(results: dict) -> dict[str, float]:
    """Summed wall time (minutes) of each group of training runs that recorded it: ``models``
    (the semantic models of the models table), ``instance`` (every instance method),
    ``augmentation`` (Q1 study), ``sweep`` (Q1 sweep, each run once), ``levers`` (lever
    study), ``maskrcnn_levers`` (the Mask R-CNN lever study), ``seeds`` (seed study)."""
    sweep = results.get("augment_sweep") or {}
    sweep_runs = {(r["crop_min"], r["flip_p"], r["seed"]): r
                  for f in ("flip", "crop", "seeds") for r in sweep.get(f, [])}  # fmt: skip
    seed_runs = [r for e in seed_entries(results) for r in e.get("runs") or []]
    groups = {
        "models": list(results.get("models", {}).values()),
        "instance": [results.get(key) or {} for key, _ in INSTANCE_METHODS],
        "augmentation": results.get("augmentation") or [],
        "sweep": list(sweep_runs.values()),
        "levers": results.get("levers") or [],
        "maskrcnn_levers": (results.get("maskrcnn_levers") or {}).get("rows") or [],
        "seeds": seed_runs,
    }
    seconds = {k: sum(r.get("train_seconds") or 0 for r in runs) for k, runs in groups.items()}
    return {k: s / 60 for k, s in seconds.items() if s}


def run_hardware(results: dict) -> str:
    """The distinct hardware lines recorded by the training runs.

    The top-level ``results["hardware"]`` describes the process that ran ``segkit reproduce``,
    not the runs (which may set their own thread count); it is used only when no run has one.
    """
    runs = list(results.get("models", {}).values())
    runs += [results.get(key) or {} for key, _ in INSTANCE_METHODS]
    used = sorted({r["hardware"] for r in runs if r and r.get("hardware")})
    text = "; ".join(used) or results.get("hardware", "?")
    return re.sub(r"\b1 (core|torch thread)s\b", r"1 \1", text)  # "1 torch thread", not "threads"


def merge_threads(hardware: str) -> str:
    """Hardware lines that differ only in their torch thread count, as one line for the prose:
    ``CPU x86_64 (2 cores, 1 or 2 torch threads), torch 2.14.1``."""
    pattern = r"(\d+) torch threads?"
    groups: dict[str, list[str]] = {}
    for line in hardware.split("; "):
        groups.setdefault(re.sub(pattern, "{}", line), []).extend(re.findall(pattern, line))
    out = []
    for key, counts in groups.items():
        counts = sorted(set(counts), key=int)
        word = "thread" if counts == ["1"] else "threads"
        out.append(key.replace("{}", f"{' or '.join(counts)} torch {word}") if counts else key)
    return "; ".join(out)


def run_cores_threads(results: dict) -> tuple[str, str]:
    """(cores, torch threads) of the training runs, read from their hardware lines ("?" if none)."""
    found = re.findall(r"(\d+) cores?, (\d+) torch threads?", run_hardware(results))
    cores = "/".join(distinct(c for c, _ in found)) or "?"
    threads = "/".join(distinct(t for _, t in found)) or "?"
    return cores, threads

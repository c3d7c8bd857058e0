"""The report as a grader sees it: generated tables and macros against results.json, readable model
names, a Makefile that rebuilds on any generated change, and a PDF with no overfull box.

The LaTeX build runs once per module, into a temporary copy of report/ (skipped without latexmk).
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from segkit.config import MODEL_TABLE, MaskRCNNConfig, TrainConfig, model_label
from segkit.notebook import per_class_table
from segkit.optim import build_optimizer
from segkit.report import TABLES, build_pdf, load_results, overfull_boxes, write_tables
from segkit.report_intro import merge_threads, run_hardware
from segkit.report_numbers import numbers_macros
from segkit.report_tables import (
    INSTANCE_METHODS,
    OVERFULL_LIMIT_PT,
    table_instance,
    table_per_class,
)

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "report"
GEN = REPORT / "generated"
LIMIT_PT = 5.0
# figures main.tex includes only when present (the next full run is to produce them)
CONDITIONAL_FIGURES = {"fig_baseline_predictions.jpg", "fig_augment_sweep.png"}

needs_latex = pytest.mark.skipif(
    shutil.which("latexmk") is None or shutil.which("make") is None,
    reason="LaTeX not installed (apt-get install texlive-latex-recommended latexmk make)",
)


def _results() -> dict:
    """The committed results as `segkit report` reads them (with seeds.json / levers.json)."""
    if not (GEN / "results.json").is_file():
        pytest.skip("no committed report/generated/results.json")
    return load_results(GEN / "results.json")


def _overfull(log: str, limit: float = LIMIT_PT) -> list[str]:
    """Independent of segkit.report: every Overfull \\hbox/\\vbox line over ``limit`` pt."""
    out = []
    for line in log.splitlines():
        m = re.match(r"Overfull \\[hv]box \(([\d.]+)pt too (wide|high)\)", line)
        if m and float(m.group(1)) > limit:
            out.append(line)
    return out


def _copy_report(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("main.tex", "author.tex", "Makefile"):
        shutil.copy2(REPORT / name, dst / name)
    shutil.copytree(GEN, dst / "generated")
    return dst


def _make(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(cwd), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A fresh `make` of a clean copy of report/ (no aux files, no PDF)."""
    if shutil.which("latexmk") is None or shutil.which("make") is None:
        pytest.skip("LaTeX not installed (apt-get install texlive-latex-recommended latexmk)")
    _results()
    rep = _copy_report(tmp_path_factory.mktemp("report") / "report")
    proc = _make(rep)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return rep


# ---- the LaTeX build ---------------------------------------------------------------------------


def test_overfull_boxes_reads_a_log():
    log = (
        "Overfull \\hbox (95.98955pt too wide) in paragraph at lines 19--26\n"
        "Overfull \\hbox (0.199pt too wide) in paragraph at lines 208--213\n"
        "Overfull \\vbox (92.81187pt too high) has occurred while \\output is active []\n"
        "Underfull \\hbox (badness 10000) in paragraph at lines 1--2\n"
    )
    found = overfull_boxes(log)
    assert len(found) == 2 and "95.98955pt" in found[0] and "vbox" in found[1]
    assert found == _overfull(log)


@needs_latex
def test_fresh_build_has_no_overfull_box(built):
    log = (built / "main.log").read_text(errors="replace")
    assert _overfull(log) == []
    assert "There were undefined references" not in log
    assert "Reference `" not in log  # LaTeX Warning: Reference `x' on page n undefined
    pdf = built / "main.pdf"
    assert pdf.is_file() and pdf.stat().st_size > 100_000


@needs_latex
def test_make_rebuilds_when_a_generated_file_changes(built, tmp_path):
    rep = tmp_path / "report"
    shutil.copytree(built, rep)  # copy2 keeps the mtimes: up to date
    assert _make(rep, "-q").returncode == 0
    later = time.time() + 5
    (rep / "generated" / "x.tex").write_text("% new\n")
    os.utime(rep / "generated" / "x.tex", (later, later))
    assert _make(rep, "-q").returncode != 0  # a new generated file
    (rep / "generated" / "x.tex").unlink()
    assert _make(rep, "-q").returncode == 0
    fig = rep / "generated" / "fig_unet_loss_curve.png"
    os.utime(fig, (later, later))
    assert _make(rep, "-q").returncode != 0  # a figure changed
    os.utime(rep / "main.pdf", (later + 5, later + 5))
    os.utime(rep / "main.tex", (later + 10, later + 10))
    assert _make(rep, "-q").returncode != 0  # main.tex changed


@needs_latex
def test_build_fails_on_an_overfull_box(tmp_path):
    long_word = "\\texttt{" + "x" * 200 + "}"
    (tmp_path / "main.tex").write_text(
        f"\\documentclass{{article}}\\begin{{document}}\n{long_word}\n\\end{{document}}\n"
    )
    (tmp_path / "generated").mkdir()
    shutil.copy2(REPORT / "Makefile", tmp_path / "Makefile")
    proc = _make(tmp_path)
    assert proc.returncode != 0 and "overfull" in proc.stdout + proc.stderr
    assert not (tmp_path / "main.pdf").exists()  # the next make tries again
    with pytest.raises(RuntimeError, match="overfull"):
        build_pdf(tmp_path)


@needs_latex
def test_optional_blocks_build(tmp_path):
    """With repeated seeds and the baseline's prediction figure, both optional blocks typeset."""
    rep = _copy_report(tmp_path / "report")
    shutil.copy2(
        GEN / "fig_unet_predictions_test.jpg", rep / "generated/fig_baseline_predictions.jpg"
    )
    results = _results()
    runs = [
        {"seed": s, "mean_ap": ap, "miou": iou, "pixel_acc": acc}
        for s, (ap, iou, acc) in enumerate(
            ((0.601, 0.41, 0.70), (0.607, 0.45, 0.69), (0.596, 0.43, 0.74))
        )
    ]
    results["seeds"] = {"model": "unet", "epochs": 2, "runs": runs}
    write_tables(results, rep / "generated")
    macros = _macros((rep / "generated/numbers.tex").read_text())
    assert macros["SeedAPSpread"] == "0.011" and macros["SeedRuns"] == "3"
    assert macros["SeedIoUSpread"] == "0.040" and macros["SeedAccSpread"] == "0.050"
    build_pdf(rep)  # raises on an overfull box
    log = (rep / "main.log").read_text(errors="replace")
    assert "fig_baseline_predictions.jpg" in log and not _overfull(log)


# ---- the generated tables and macros -----------------------------------------------------------


def _rows(tex: str) -> dict[str, list[str]]:
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0]
    rows = [r.strip() for r in body.split("\\\\") if r.strip()]
    return {r.split("&")[0].strip(): [c.strip() for c in r.split("&")[1:]] for r in rows}


def _header(tex: str) -> list[str]:
    head = tex.split("\\midrule")[0].split("\\toprule")[1].strip().split("\\\\")[-2]
    return [c.strip() for c in head.split("&")]


def _f(x, digits: int = 3) -> str:
    return "--" if x is None else f"{x:.{digits}f}"


def _tex(s: str) -> str:
    return s.replace("_", "\\_")


def _macros(text: str) -> dict[str, str]:
    return dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}$", text, flags=re.M))


def _label(key: str) -> str:
    return "Per-pixel frequency baseline" if key == "baseline" else _tex(model_label(key))


def check_tables(gen: Path) -> None:
    """Every generated table and quoted macro in ``gen`` against ``gen/results.json`` (with the
    separately run studies beside it, as `segkit report` reads them)."""
    res = load_results(gen / "results.json")
    entries = {"baseline": res["baseline"], **res["models"]}
    keys = ["baseline"] + [m for m in MODEL_TABLE if m in res["models"]]

    rows = _rows((gen / "tab_models.tex").read_text())
    assert list(rows) == [_label(k) for k in keys]  # readable names, in model-table order
    for key in keys:
        r = entries[key]
        cells = rows[_label(key)]
        expected = [_f(r["val"][m]) for m in ("mean_ap", "miou", "pixel_acc")]
        expected += [_f(r["test"][m]) for m in ("mean_ap", "miou", "pixel_acc")]
        assert cells[3:9] == expected, key
        if key != "baseline":
            assert cells[1] == str(r["epochs"]) and cells[2] == _f(r["train_seconds"] / 60, 0)
            weights = r["config"].get("weights")
            if weights == "default":  # the model's own: ImageNet for the EfficientNet UNets
                weights = "imagenet" if key.startswith("effnet") else None
            init = {None: "scratch", "none": "scratch", "imagenet": "ImageNet"}
            assert cells[0] == init.get(weights, "local weights"), key

    names = res["class_names"]
    for metric, mean in (("ap", "mean_ap"), ("iou", "miou")):
        # the report shows the test split per class (val per class: segkit.per_class_table)
        for split, file in {"test": f"tab_per_class_{metric}.tex"}.items():
            tex = (gen / file).read_text()
            assert f"on the {split} split" in tex
            assert _header(tex) == ["Model", *map(_tex, names), "mean"]
            rows = _rows(tex)
            assert list(rows) == [_label(k) for k in keys]
            for key in keys:
                m = entries[key][split]
                assert rows[_label(key)] == [_f(x) for x in m[metric]] + [_f(m[mean])], (file, key)

    rows = _rows((gen / "tab_augment.tex").read_text())
    for r in res["augmentation"]:
        cells = rows[_tex(r["augment"])]
        assert cells == [str(r["epochs"]), _f(r["mean_ap"]), _f(r["miou"]), _f(r["pixel_acc"])]

    # the ablation table: one row per training run, the lever study's runs then every model whose
    # recipe uses a lever; its last two columns are the run's val AP without flip TTA / EMA
    ablation_tex = (gen / "tab_ablation.tex").read_text()
    body = ablation_tex.split("\\midrule", 1)[-1].split("\\bottomrule")[0]
    cells = [[c.strip() for c in r.split("&")] for r in body.split("\\\\") if r.strip()]
    expected = []

    def row(label: str, m: dict, ablation: dict) -> None:
        without = [
            _f(ablation[k]["mean_ap"]) if k in ablation else "--" for k in ("no_tta", "no_ema")
        ]
        expected.append([label, *(_f(m[x]) for x in ("mean_ap", "miou", "pixel_acc")), *without])

    for r in res.get("levers", []):
        row(_tex(r["setting"]), r, r.get("ablation") or {})
    for key in keys[1:]:
        if entries[key].get("val_ablation"):
            ab = entries[key]["val_ablation"]
            on = [n for k, n in (("no_ema", "EMA"), ("no_tta", "flip TTA")) if k in ab]
            row(", ".join(["recipe", *on]), entries[key]["val"], ab)
    if expected:
        assert _header(ablation_tex)[2:] == ["AP", "mIoU", "acc", "flip TTA", "EMA"]
        assert [c[1:] for c in cells] == expected
    else:
        assert "\\begin{table}" not in ablation_tex

    rows = _rows((gen / "tab_baseline.tex").read_text())
    for split in ("val", "test"):
        m = res["baseline"][split]
        assert rows[split] == [_f(m[k]) for k in ("mean_ap", "mean_ap_step", "miou", "pixel_acc")]

    if res.get("instance"):
        inst = res["instance"]
        rows = list(_rows((gen / "tab_instance.tex").read_text()).values())
        m = inst["test"]
        assert rows[0][:5] == [_f(m["ap"]), _f(m["ap50"]), _f(m["ap75"]), _f(m["mean_best_iou"]),
                               _f(inst["train_seconds"] / 60, 0)]  # fmt: skip
        methods = [res[k] for k, _ in INSTANCE_METHODS if res.get(k)]
        # one row per method, in INSTANCE_METHODS order (then the outside reference, if any)
        for row, method in zip(rows, methods, strict=False):
            assert row[:3] == [_f(method["test"][k]) for k in ("ap", "ap50", "ap75")]
        if inst.get("reference"):  # the outside reference last, after our methods
            assert len(rows) == len(methods) + 1
            assert rows[-1][0] == _f(inst["reference"]["mask_ap"])

    macros = _macros((gen / "numbers.tex").read_text())
    prefix = {
        "baseline": "Baseline",
        "baseconv": "BaseConv",
        "unet": "UNet",
        "resnet18": "ResNet",
        "resnet18_unet": "ResNetUNet",
        "effnet_unet": "EffNet",
    }
    for key in keys:
        p, r = prefix[key], entries[key]
        for split in ("val", "test"):
            s = split.capitalize()
            assert macros[f"{p}{s}AP"] == _f(r[split]["mean_ap"])
            assert macros[f"{p}{s}IoU"] == _f(r[split]["miou"])
            assert macros[f"{p}{s}Acc"] == _f(r[split]["pixel_acc"])
        if key != "baseline":
            assert macros[f"{p}Epochs"] == str(r["epochs"])
            assert macros[f"{p}Minutes"] == _f(r["train_seconds"] / 60, 0)
            assert macros[f"{p}Label"] == _tex(model_label(key))
    if res.get("instance"):
        m = res["instance"]["test"]
        assert macros["InstTestAP"] == _f(m["ap"])
        assert macros["InstEpochs"] == str(res["instance"]["epochs"])
    aug = res["augmentation"]
    assert macros["AugBestAP"] == _f(max(r["mean_ap"] for r in aug))
    assert macros["AugWorstAP"] == _f(min(r["mean_ap"] for r in aug))
    if not res.get("seeds"):
        assert "SeedAPSpread" not in macros  # no noise claim without repeated runs


def test_committed_tables_match_results_json():
    _results()
    check_tables(GEN)


def test_committed_generated_files_are_current(tmp_path):
    """report/generated/*.tex are exactly what write_tables makes of the committed results.json."""
    write_tables(_results(), tmp_path)
    for name in TABLES:
        assert (GEN / name).read_text() == (tmp_path / name).read_text(), name


def test_model_labels_come_from_the_model_table():
    res = _results()
    text = "".join((GEN / name).read_text() for name in TABLES if name != "numbers.tex")
    for name in MODEL_TABLE:
        if name in res["models"]:
            assert _tex(model_label(name)) in text
        # no registry identifier (resnet18_unet, effnet_unet, baseconv ...) as a name
        assert not re.search(rf"(?<![\w-]){re.escape(_tex(name))}(?![\w-])", text), name


def test_hardware_is_the_runs_and_agrees_with_their_configs():
    res = _results()
    macros = _macros(numbers_macros(res))
    # the distinct lines, merged where only the thread count differs
    lines = run_hardware(res).split("; ")
    shown = macros["Hardware"].replace("\\_", "_")
    for line in lines:
        threads = re.search(r"(\d+) torch thread", line).group(1)
        assert line.split(" torch thread")[0].rsplit(", ", 1)[0] in shown and threads in shown
    assert len(shown.split("; ")) <= len(lines)
    assert merge_threads(
        "CPU a (2 cores, 1 torch thread), t; CPU a (2 cores, 2 torch threads), t"
    ) == ("CPU a (2 cores, 1 or 2 torch threads), t")
    # the thread counts the runs' hardware lines record, semantic and instance runs alike
    runs = [*res["models"].values(), *(res.get(k) for k, _ in INSTANCE_METHODS)]
    threads = {re.search(r"(\d+) torch thread", r["hardware"]).group(1) for r in runs if r}
    assert macros["RunThreads"] == "/".join(sorted(threads, key=int))
    assert macros["RunThreadsText"].startswith(" or ".join(sorted(threads, key=int)) + " torch")
    assert "RunCores" in macros


def _main_tex(body: bool = True) -> str:
    """main.tex without comments; ``body``: only what is between begin and end document."""
    lines = (REPORT / "main.tex").read_text().splitlines()
    text = "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in lines)
    return text.split("\\begin{document}")[1] if body else text


def _prose(text: str) -> str:
    """The body without layout parameters (figure sizes, spacing, optional arguments)."""
    text = re.sub(r"\\genfig\{[^}]*\}\{[^}]*\}\{[^}]*\}", " ", text)
    text = re.sub(r"\\begin\{minipage\}(\[[^]]*\])?\{[^}]*\}", " ", text)
    return re.sub(r"\[[^]]*\]", " ", text)


def test_main_tex_quotes_numbers_only_through_macros():
    text = _prose(_main_tex()).replace("\\%", " PERCENT")
    assert not re.findall(r"\d\.\d", text), "a decimal number typed into main.tex"
    assert not re.findall(r"\d\s*PERCENT", text), "a percentage typed into main.tex"
    assert not re.findall(r"\d+\s*(?:minutes|min\b|epochs|seconds|hours)", text)
    # every number macro main.tex uses is one numbers_macros writes (or main.tex defines)
    defined = set(_macros(numbers_macros(_results()))) | set(
        re.findall(r"\\newcommand\{?\\(\w+)", _main_tex(body=False))
    )
    # ... with every optional field of results.json filled, so a misspelt optional macro fails too
    for variant in _variants(_results()):
        defined |= set(_macros(numbers_macros(variant)))
    defined |= set(_macros((REPORT / "author.tex").read_text()))
    # every capitalised macro of the body (LaTeX's own aside) is one of those
    used = set(re.findall(r"\\([A-Z]\w*)", text)) - {"IfFileExists"}
    assert used <= defined, used - defined


def _all_optional_fields(results: dict) -> dict:
    """``results`` plus what only some reproductions have: a resumed, partly reused reproduction
    whose models all trained with the levers."""
    results = copy.deepcopy(results)
    for entry in results["models"].values():
        entry["config"].update(class_weighting="sqrt", ema_decay=0.995, tta=True)
    calls = [{"started": "2026-11-28T01:50:27", "minutes": 150.0, "hardware": "cpu"}] * 2
    results.update(reproduce_calls=calls, reproduce_wall_minutes=300.0,
                   reproduce_reused_runs=["lever_inverse", "lever_levers"])  # fmt: skip
    seeds = results.get("seeds")
    for entry in seeds if isinstance(seeds, list) else [seeds] if seeds else []:
        entry["levers"] = {"class_weighting": "inverse", "ema_decay": None, "tta": False}
    if results.get("instance"):  # the detection-based method beside the watershed, both timed
        results["instance"]["inference_ms"] = 120.0
        mrcnn = {**results["instance"], "inference_ms": 80.0, "best_epoch": 11,
                 "config": MaskRCNNConfig().to_dict(), "model": None, "task": "maskrcnn",
                 "postprocess": {"score_threshold": 0.05, "mask_threshold": 0.5}}  # fmt: skip
        results["instance_maskrcnn"] = mrcnn  # fixtures, whatever the committed runs hold
        ci = {"ap": [0.45, 0.60], "ap50": [0.86, 0.97], "ap75": [0.50, 0.78]}
        results["instance_comparison"] = {"resamples": 2000, "ci": {"b": ci}}
        results["maskrcnn_ablation"] = ABLATION
        results["maskrcnn_levers"] = LEVERS
    return results


# a Mask R-CNN ablation (study.maskrcnn_ablation) as results.json holds it
_GRID = [{"score_threshold": s, "mask_threshold": m, "ap": 0.5 + s / 10 - abs(m - 0.5) / 5,
          "ap50": 0.9, "ap75": 0.6} for s in (0.05, 0.5) for m in (0.3, 0.5)]  # fmt: skip
ABLATION = {
    "params": {"score_threshold": 0.05, "mask_threshold": 0.5},
    "trained_short_side": 400, "trained_max_size": 720,
    "epochs": [{"epoch": e, "val_ap": 0.04 * e, "val_ap50": 0.08 * e, "val_ap75": 0.05 * e}
               for e in range(1, 13)],
    "mask_threshold": [r for r in _GRID if r["score_threshold"] == 0.05],
    "score_threshold": [r for r in _GRID if r["mask_threshold"] == 0.5],
    "inference_short_side": [{"short_side": s, "ap": 0.5 + (s == 512) / 20, "ap50": 0.9,
                              "ap75": 0.6} for s in (320, 400, 512, 640)],
}  # fmt: skip
# the Mask R-CNN lever study (study.maskrcnn_levers) as maskrcnn_levers.json holds it
_LEVER_ROW = {"ap50": 0.9, "ap75": 0.5, "best_epoch": 4, "train_seconds": 600.0, "hardware": "cpu"}
LEVERS = {
    "epochs": 4, "split": "val", "spread": 0.02, "train_seconds": 3000.0,
    "rows": [{"lever": lever, "seed": seed, "ap": ap, **_LEVER_ROW} for lever, seed, ap in (
        ("recipe", 0, 0.50), ("recipe", 1, 0.52), ("constant learning rate", 0, 0.505),
        ("4 frozen stages", 0, 0.44), ("anchors 16 to 256", 0, 0.56))],
}  # fmt: skip


def test_bonus_comparison_and_ablation_macros_follow_the_numbers():
    res = _results()
    if not res.get("instance"):
        pytest.skip("no instance run")
    full = _all_optional_fields(res)
    m = _macros(numbers_macros(full))
    inst = full["instance"]["test"]
    where = lambda v, lo, hi: "inside" if lo <= v <= hi else "below" if v < lo else "above"  # noqa: E731
    for key, word in (("ap", "mask AP"), ("ap50", "AP50"), ("ap75", "AP75")):
        lo, hi = full["instance_comparison"]["ci"]["b"][key]
        assert f"{word} ({_f(inst[key])}) lies {where(inst[key], lo, hi)}" in m["CompareSentence"]
    assert "PairedDiff" not in m  # no paired bootstrap without the watershed's matches
    assert m["AblHalfEpoch"] == "6" and m["AblLastAP"] == "0.480" and m["AblBestAP"] == "0.480"
    assert m["AblEpochVerdict"] == "a rise of 0.240 over the second half of training"  # .24 to .48
    assert m["AblResBest"] == "512" and m["AblResTrainedAP"] == "0.500"
    assert m["AblInferenceShortSideRange"] == "0.050" and m["AblMaskThresholdRange"] == "0.040"
    assert (
        m["MrcnnShortSide"] == "400"
        and m["MrcnnFrozenStages"] == "2"
        and m["MrcnnBestEpoch"] == "11"
    )
    paired = copy.deepcopy(full)
    paired["instance_comparison"]["paired"] = {
        "diff": 0.006,
        "diff_ci": [-0.05, 0.06],
        "b_better": 0.58,
    }
    m = _macros(numbers_macros(paired))
    assert m["PairedDiffCi"] == "[$-$0.050, 0.060]" and m["PairedBetterShare"] == "58"


def _variants(results: dict) -> list[dict]:
    """``results`` with every optional field, and with the flags that exclude each other
    flipped (the ResNets' epochs costlier than the UNet's, no model still improving)."""
    full = _all_optional_fields(results)
    costly = copy.deepcopy(full)
    for key in ("resnet18", "resnet18_unet"):
        if key in costly["models"]:
            costly["models"][key]["train_seconds"] *= 3
    done = copy.deepcopy(full)
    for entry in done["models"].values():
        entry["best_epoch"] = 1
    return [full, costly, done]


def test_optional_macros_follow_results_json():
    base = _macros(numbers_macros(_results()))
    full = _macros(numbers_macros(_all_optional_fields(_results())))
    res = _results()
    levers = [(c["config"].get("class_weighting"), c["config"].get("ema_decay") is not None,
               c["config"].get("tta")) for c in res["models"].values()]  # fmt: skip
    assert ("RecipeLevers" in base) == all(lv == ("sqrt", True, True) for lv in levers)
    assert full["RecipeLevers"].startswith("sqrt")
    assert ("ReproduceCalls" in base) == (len(res.get("reproduce_calls") or []) > 1)
    assert full["ReproduceCalls"] == "2"
    assert full["ReproduceWallMinutes"] == "300"
    assert full["ReproduceReused"] == "2 runs of the lever study"  # by study, not folder name
    # the seed study names the levers it trained with, when seeds.json records them
    seeds = res.get("seeds")
    first = (seeds[0] if isinstance(seeds, list) else seeds) if seeds else None
    assert ("SeedLevers" in base) == bool(first and first.get("levers"))
    if first:
        assert full["SeedLevers"] == "inverse class weights, no EMA, no TTA"
    # the study's best val AP names its setting
    best = max(_results()["levers"], key=lambda r: r["mean_ap"])
    assert base["LeverBest"] == _tex(best["setting"])


def report_inputs() -> tuple[list[str], list[str], list[str]]:
    """What main.tex reads from generated/: (tex files, figures it needs, figures it includes
    only when present)."""
    text = _main_tex()
    tex = re.findall(r"\\input\{generated/([^}]+)\}", text)
    figs = re.findall(r"\\(?:genfig\{[^}]*\}|includegraphics(?:\[[^]]*\])?)\{([^}]+)\}", text)
    optional = [Path(p).name for p in re.findall(r"\\IfFileExists\{([^}]+)\}", text)]
    return tex, sorted(set(figs) - set(optional)), sorted(set(optional))


def test_figures_the_pdf_expects_exist():
    tex, figs, optional = report_inputs()
    assert set(optional) == CONDITIONAL_FIGURES
    assert figs and tex, "no figure or table found in main.tex"
    missing = sorted(f for f in figs if not (GEN / f).is_file())
    assert not missing, missing
    for name in tex:
        assert name in TABLES, name


# ---- data-dependent prose, the author block, the prose rules -----------------------------------


def test_still_improving_flags_follow_best_epoch():
    """A model is "still improving" exactly when its best val epoch is its last; the list in the
    prose names exactly those models, and with none the sentence says so."""
    res = _results()
    macros = _macros(numbers_macros(res))
    prefix = {"baseconv": "BaseConv", "unet": "UNet", "resnet18": "ResNet",
              "resnet18_unet": "ResNetUNet", "effnet_unet": "EffNet"}  # fmt: skip
    improving = []
    for key, r in res["models"].items():
        flag = r["best_epoch"] >= r["epochs"]
        assert (f"{prefix[key]}StillImproving" in macros) == flag, key
        assert macros[f"{prefix[key]}BestEpochText"].startswith(
            f"{r['best_epoch']} of {r['epochs']}"
        )
        if flag:
            improving.append(_label(key))
    if improving:
        listed = macros["StillImprovingModels"]
        assert all(name in listed for name in improving)
        others = [_label(k) for k in res["models"] if _label(k) not in improving]
        assert not any(re.search(rf"(^|; |, | and ){re.escape(o)}($|;|,| and)", listed)
                       for o in others)  # fmt: skip
    resnets = [res["models"][k] for k in ("resnet18", "resnet18_unet") if k in res["models"]]
    both = bool(resnets) and all(r["best_epoch"] >= r["epochs"] for r in resnets)
    assert ("ResNetsStillImproving" in macros) == both
    none = _variants(res)[2]
    text = _macros(numbers_macros(none))
    assert (
        "StillImprovingModels" not in text and "before its last" in text["StillImprovingSentence"]
    )


def test_best_model_sentence_reads_well_either_way():
    res = copy.deepcopy(_results())
    macros = _macros(numbers_macros(res))
    val = max(res["models"], key=lambda k: res["models"][k]["val"]["mean_ap"])
    test = max(res["models"], key=lambda k: res["models"][k]["test"]["mean_ap"])
    sentence = macros["BestModelSentence"]
    if val == test:
        assert sentence == f"the {_label(val)} is the best model on both val and test"
    assert ("EffNetBestOfAll" in macros) == (val == test == "effnet_unet")  # Q7 then says "it"
    # make another model best on test: the sentence names both, each once
    other = next(k for k in res["models"] if k != val)
    res["models"][other]["test"]["mean_ap"] = 1.0
    sentence = _macros(numbers_macros(res))["BestModelSentence"]
    assert sentence == f"the best model on val is the {_label(val)}, on test the {_label(other)}"
    assert "EffNetBestOfAll" not in _macros(numbers_macros(res))


def test_resnet_budget_macros_follow_the_numbers():
    res = _results()
    m = res["models"]
    if not {"unet", "resnet18", "resnet18_unet"} <= set(m):
        pytest.skip("no ResNet or UNet run")
    macros = _macros(numbers_macros(res))
    cost = {
        k: m[k]["train_seconds"] / m[k]["epochs"] for k in ("unet", "resnet18", "resnet18_unet")
    }
    ratios = [cost[k] / cost["unet"] for k in ("resnet18", "resnet18_unet")]
    if all(abs(x - 1) <= 0.15 for x in ratios):
        assert macros["ResNetEpochCost"] == "about as much as"
    elif all(x < 1 for x in ratios):
        assert macros["ResNetEpochCost"] == "less than"
    assert ("ResNetEpochsCostlier" in macros) == (macros["ResNetEpochCost"] == "more than")
    smallest = sorted(m, key=lambda k: m[k]["train_seconds"])[:2]
    assert ("ResNetsSmallestShare" in macros) == (set(smallest) == {"resnet18", "resnet18_unet"})
    costly = _macros(numbers_macros(_variants(res)[1]))
    assert costly["ResNetEpochCost"] == "more than" and "ResNetEpochsCostlier" in costly


def test_training_minutes_say_what_they_cover():
    """Each group of runs has its own total (the tabled models, instance, each study); the
    total is their sum and includes the studies' runs."""
    res = _results()
    macros = _macros(numbers_macros(res))
    models = sum(r["train_seconds"] for r in res["models"].values()) / 60
    assert macros["TrainMinutesModels"] == _f(models, 0)
    parts = {"TrainMinutesModels": models}
    methods = [res[k] for k, _ in INSTANCE_METHODS if res.get(k)]  # watershed and Mask R-CNN
    if methods:
        parts["TrainMinutesInstance"] = sum(r["train_seconds"] for r in methods) / 60
    sweep = res.get("augment_sweep")
    if sweep:  # each run once: the centre point's seed 0 is in both factors and the seeds
        runs = {(r["crop_min"], r["flip_p"], r["seed"]): r["train_seconds"]
                for f in ("flip", "crop", "seeds") for r in sweep[f]}  # fmt: skip
        parts["TrainMinutesSweep"] = sum(runs.values()) / 60
    if res.get("maskrcnn_levers"):
        rows = res["maskrcnn_levers"]["rows"]
        parts["TrainMinutesMrcnnLevers"] = sum(r["train_seconds"] for r in rows) / 60
    if res.get("augmentation"):
        parts["TrainMinutesAug"] = sum(r["train_seconds"] for r in res["augmentation"]) / 60
    if res.get("levers"):
        parts["TrainMinutesLevers"] = sum(r["train_seconds"] for r in res["levers"]) / 60
    seeds = res.get("seeds") or []
    seed_runs = [r for e in (seeds if isinstance(seeds, list) else [seeds]) for r in e["runs"]]
    if seed_runs:
        parts["TrainMinutesSeeds"] = sum(r["train_seconds"] for r in seed_runs) / 60
    for name, minutes in parts.items():
        assert macros[name] == _f(minutes, 0), name
    # the total is the sum of the minutes as printed, so the prose adds up
    assert int(macros["TrainMinutesAll"]) == sum(int(_f(m, 0)) for m in parts.values())
    assert abs(int(macros["TrainMinutesAll"]) - sum(parts.values())) <= len(parts) / 2


def test_bonus_macros_state_the_loss_postprocessing_and_split():
    res = _results()
    inst = res.get("instance")
    if not inst:
        pytest.skip("no instance run")
    macros = _macros(numbers_macros(res))
    pp = inst["postprocess"]
    assert macros["InstSemThreshold"] == f"{pp['sem_threshold']:g}"
    assert macros["InstCoreLevel"] == f"{pp['core_level']:g}"
    assert macros["InstMinSize"] == str(pp["min_size"])
    val, test = inst["val"]["num_images"], inst["test"]["num_images"]
    assert macros["InstValImages"] == str(val) and macros["InstTestImages"] == str(test)
    assert int(macros["InstTrainImages"]) + val + test == int(macros["InstAllImages"]) == 170
    assert macros["InstEnergyWeight"] == f"{inst['config']['energy_weight']:g}"
    # the level weights the loss applies (segkit.losses.default_level_weights), in words
    from segkit.losses import default_level_weights

    w = default_level_weights(inst["config"]["num_energy_levels"]).tolist()
    assert w[:5] == [3.0, 3.0, 3.0, 2.0, 1.0]
    assert macros["InstLevelWeights"] == r"$w_k=3$ for $k\le 2$, $w_{3}=2$ and $w_k=1$ for $k\ge 4$"
    assert "MrcnnTestAP" not in macros or res.get("instance_maskrcnn")
    full = _macros(numbers_macros(_all_optional_fields(res)))
    assert full["MrcnnTestAP"] == _f(inst["test"]["ap"]) and full["MrcnnInferenceMs"] == "80"
    assert "ms/img" in table_instance(_all_optional_fields(res))


def test_author_block_is_one_documented_file():
    """The name and NetID the assignment asks for live in report/author.tex (placeholders a
    student edits), which main.tex inputs and README's Report section names."""
    author = _macros((REPORT / "author.tex").read_text())
    assert set(author) == {"StudentName", "StudentNetID"}
    assert "\\input{author.tex}" in _main_tex(body=False)
    assert "\\StudentName" in _main_tex(body=False) and "\\StudentNetID" in _main_tex(body=False)
    report_section = (ROOT / "README.md").read_text().split("## Report", 1)[1].split("\n## ")[0]
    assert "report/author.tex" in report_section


def test_prose_has_no_run_folders_paths_or_optional_plurals():
    """Run-folder names, file paths and "(s)" plurals are for the README, not the PDF's prose."""
    res = _results()
    prose = _main_tex() + numbers_macros(_all_optional_fields(res))
    runs = [r.get("run") for r in (res.get("augmentation") or []) + (res.get("levers") or [])]
    runs += res.get("reproduce_reused_runs") or []
    for run in filter(None, runs):
        assert _tex(run) not in prose and run not in prose, run
    assert "(s)" not in prose
    assert "\\path{" not in _main_tex()
    assert not re.search(r"\w\.(json|py|pth)\b", _main_tex()), "a file name in the prose"
    assert "course AP" not in prose and "CourseAP" not in prose  # it is the write-up's


def test_report_modules_import_no_private_names():
    """Helpers other modules use from report_tables are public (no `from x import _name`)."""
    import ast

    for path in (ROOT / "segkit").glob("report*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("report"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (path.name, private)


def test_numbers_macros_has_one_function_per_section():
    from segkit import report_numbers

    assert len(report_numbers.SECTIONS) >= 8
    names = [f.__name__ for f in report_numbers.SECTIONS]
    assert len(set(names)) == len(names) and all(n.endswith("_macros") for n in names)
    text = numbers_macros(_results())
    assert all(f"% {n}" in text for n in names)


def test_per_class_table_lists_each_model_and_names_the_best_or_a_tie():
    full = {"class_names": ["sky", "tree", "misc"], "models": {
        "unet": {"test": {"ap": [0.9, 0.4, 0.0], "iou": [0.8, 0.3, None], "mean_ap": 0.433,
                          "miou": 0.55}},
        "baseconv": {"test": {"ap": [0.8, 0.5, 0.0], "iou": [0.7, 0.2, None], "mean_ap": 0.4,
                              "miou": 0.45}}}}  # fmt: skip
    lines = per_class_table(full, ["baseconv", "unet"], "ap", "test").splitlines()
    assert lines[0] == "full run, test split, per-class AP"
    assert lines[2].split() == ["sky", "0.800", "0.900", "unet"]
    assert lines[3].split() == ["tree", "0.500", "0.400", "baseconv"]
    assert lines[4].split() == ["misc", "0.000", "0.000", "tie"]
    assert lines[5].split() == ["mean", "0.400", "0.433"]
    iou = per_class_table(full, ["baseconv", "unet"], "iou", "test").splitlines()
    assert iou[0].endswith("per-class IoU") and iou[4].split() == ["misc", "--", "--", "--"]


def test_paired_verdict_and_clearest_metric_follow_the_intervals():
    res = _results()
    if not res.get("instance"):
        pytest.skip("no instance run")
    full = _all_optional_fields(res)
    full["instance_comparison"]["ci"]["a"] = {
        "ap": [0.40, 0.55], "ap50": [0.70, 0.85], "ap75": [0.45, 0.70]}  # fmt: skip
    full["instance_comparison"]["paired"] = {"diff": 0.01, "diff_ci": [-0.05, 0.07],
                                             "b_better": 0.6, "level": 0.9}  # fmt: skip
    m = _macros(numbers_macros(full))
    assert m["PairedVerdict"].startswith("the interval contains zero")
    assert m["CompareLevel"] == "90" and m["InstCiAPfifty"] == "[0.700, 0.850]"
    # Mask R-CNN's AP50 interval [0.86, 0.97] starts 0.01 above the watershed's [0.70, 0.85]
    leader = "Mask R-CNN" if full["instance_maskrcnn"]["test"]["ap50"] > res["instance"]["test"][
        "ap50"] else "the watershed model"  # fmt: skip
    assert m["CompareClearest"] == (
        f"{leader}'s lead is clearest on AP50, where the two intervals do not overlap (a gap of "
        "0.010); these are separate intervals: only mask AP has the paired test"
    )
    full["instance_comparison"]["paired"]["diff_ci"] = [0.01, 0.07]
    assert _macros(numbers_macros(full))["PairedVerdict"] == "Mask R-CNN is ahead on mask AP"


def test_later_partial_updates_are_stated_with_dates_and_minutes():
    res = copy.deepcopy(_results())
    res["partial_updates"] = [
        {"date": "2026-12-04", "steps": ["maskrcnn"], "minutes": 10.2, "hardware": "cpu"},
        {"date": "2026-12-05", "steps": ["instance", "maskrcnn"], "minutes": 5.0, "hardware": "x"},
    ]
    m = _macros(numbers_macros(res))
    assert m["UpdatedSteps"] == "Mask R-CNN and watershed" and m["UpdatedCalls"] == "2"
    assert m["UpdatedDates"] == "2026-12-04 to 2026-12-05" and m["UpdatedMinutes"] == "15"


def _schedule_warmup(cfg: dict, train_images: int) -> int:
    """Independent of the report: the steps segkit's real schedule spends below its peak rate."""
    steps = cfg["epochs"] * math.ceil(train_images / cfg["batch_size"])
    tc = TrainConfig(
        epochs=cfg["epochs"], batch_size=cfg["batch_size"], warmup_steps=cfg["warmup_steps"]
    )
    opt, sched = build_optimizer(tc, torch.nn.Linear(1, 1), steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs.index(max(lrs)) + 1  # the warm-up's last step reaches the peak


def test_warmup_macros_state_the_warmup_each_run_got():
    """The prose's warm-up is the one the schedule applied: capped at a tenth of a short run."""
    res = copy.deepcopy(_results())
    res["models"]["unet"]["config"] |= {"epochs": 3, "batch_size": 8, "warmup_steps": 50}
    macros = _macros(numbers_macros(res))
    unet = res["models"]["unet"]["config"]
    assert _schedule_warmup(unet, 572) == 21  # 3 epochs x 72 batches / 10
    assert f"21 for the {model_label('unet')}" in macros["WarmupCapped"]
    for name, r in res["models"].items():  # every capped model is named with its own warm-up
        warm = _schedule_warmup(r["config"], 572)
        named = f"{warm} for the {_tex(model_label(name))}" in macros.get("WarmupCapped", "")
        assert named == (warm < r["config"]["warmup_steps"]), name
    mrcnn = res.get("instance_maskrcnn")
    if mrcnn:
        train = int(macros["MrcnnTrainImages"])
        assert macros["MrcnnWarmupSteps"] == str(_schedule_warmup(mrcnn["config"], train))
        assert macros["MrcnnSelectedOn"] == "the highest val mask AP"
    if res.get("instance"):  # the watershed keeps its lowest val loss, whatever its config says
        assert macros["InstSelectedOn"] == "the lowest val loss"


def test_makefile_and_build_pdf_share_the_overfull_limit_the_report_states():
    """report/Makefile, segkit.report.build_pdf and the prose (\\OverfullPt) give one limit."""
    make = re.search(r"^OVERFULL_PT \?= ([\d.]+)$", (REPORT / "Makefile").read_text(), re.M)
    assert make and float(make.group(1)) == OVERFULL_LIMIT_PT
    assert _macros(numbers_macros(_results()))["OverfullPt"] == f"{OVERFULL_LIMIT_PT:g}"
    assert LIMIT_PT == OVERFULL_LIMIT_PT  # this file's own check of the logs


def test_per_class_tally_and_grid_edge_macros_follow_the_numbers():
    """Q6's per-class tally names its smallest gap and its ties; the bonus says when a value
    chosen on val sits at an end of its grid (zero, a natural floor, is not an end)."""
    res = copy.deepcopy(_results())
    names = res["class_names"]
    unet, base = res["models"]["unet"]["test"], res["models"]["baseconv"]["test"]
    unet["ap"] = [0.5 + 0.01 * i for i in range(9)]
    base["ap"] = [0.5] * 9  # gains 0, 0.01, ..., 0.08: higher on 8, smallest 0.010
    unet["iou"] = [0.3] * 9
    base["iou"] = [0.3] * 8 + [0.2]  # higher on 1, tied on the other 8
    if res.get("instance"):
        res["instance"]["postprocess"] = {"sem_threshold": 0.6, "core_level": 3.0, "min_size": 0}
    m = _macros(numbers_macros(res))
    assert m["UNetBeatsBaseConvCount"] == "8" and m["UNetSmallestGain"] == f"0.010 on {names[1]}"
    assert m["UNetBeatsBaseConvClasses"] == "8 of the 9 classes"
    assert m["UNetBeatsBaseConvIoUCount"] == "1"
    assert all(n in m["UNetTiesIoU"] for n in names[:8]) and names[8] not in m["UNetTiesIoU"]
    # UNet's lead (val/test) against the seed study's UNet spread
    for model in res["models"].values():
        model.setdefault("val", {})["mean_ap"] = model["test"]["mean_ap"] = 0.5
    res["models"]["unet"]["val"]["mean_ap"], res["models"]["unet"]["test"]["mean_ap"] = 0.6, 0.58
    runs = [{"mean_ap": ap} for ap in (0.50, 0.55, 0.53)]  # two-run std sqrt(2) x 0.0252 = 0.036
    res["seeds"] = [{"model": "unet", "epochs": 2, "runs": runs}]
    lead = _macros(numbers_macros(res))["UNetLeadSentence"]
    assert lead.startswith(
        "UNet's lead over BaseConv in mean AP (0.100 on val, 0.080 on test) is 2.8 and 2.2 times"
    )
    assert "Both leads are beyond two of those standard deviations: suggestive" in lead
    runs[0]["mean_ap"] = 0.45  # two-run std 0.075: leads of 1.3 and 1.1 of them
    lead = _macros(numbers_macros(res))["UNetLeadSentence"]
    assert lead.endswith(
        "Both leads are within two of those standard deviations: seed noise could produce them."
    )
    runs[:] = [{"mean_ap": ap} for ap in (0.50, 0.5636, 0.5318)]  # two-run std 0.045: 2.2, 1.8
    lead = _macros(numbers_macros(res))["UNetLeadSentence"]
    assert (
        "The val lead is beyond two of those standard deviations and the test lead within" in lead
    )
    runs[:] = [{"mean_ap": ap} for ap in (0.50, 0.51, 0.505)]  # two-run std 0.007
    assert "would rarely produce them" in _macros(numbers_macros(res))["UNetLeadSentence"]
    if res.get("instance"):
        assert m["InstGridEdge"] == "the mask threshold (0.6) is the largest in its grid"
        res["instance"]["postprocess"] |= {"sem_threshold": 0.4}
        assert "InstGridEdge" not in _macros(numbers_macros(res))


def test_per_class_caption_explains_a_dash_only_when_one_is_shown():
    res = copy.deepcopy(_results())
    assert "a dash" not in table_per_class(res, "ap", "test")
    res["models"]["unet"]["test"]["ap"][0] = None  # a class without ground-truth pixels
    res["models"]["unet"]["test"]["iou"][0] = None
    assert "(a dash: no ground-truth pixel of the class)" in table_per_class(res, "ap", "test")
    iou = table_per_class(res, "iou", "test")
    assert "(a dash: class absent from ground truth and prediction)" in iou

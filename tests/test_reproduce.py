"""``segkit reproduce --quick`` end to end, the generated tables against results.json, the PDF."""

import json
import re
import shutil
from pathlib import Path

import pytest

from segkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("baseconv", "unet", "resnet18", "resnet18_unet", "effnet_unet")


def _reproduce(data_root: Path, runs: Path, out: Path) -> int:
    return main(["reproduce", "--quick", "--device", "cpu", "--data-dir", str(data_root),
                 "--runs", str(runs), "--out", str(out)])  # fmt: skip


@pytest.fixture(scope="module")
def quick(tmp_path_factory, data_root):
    if not (data_root / "PennFudanPed").is_dir():
        pytest.skip("Penn-Fudan data not found")
    tmp = tmp_path_factory.mktemp("reproduce")
    out = tmp / "generated"
    rc = _reproduce(data_root, tmp / "runs", out)
    assert rc == 0
    return out


def _rows(tex: str) -> dict[str, list[str]]:
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    rows = [r.strip() for r in body.split(r"\\") if r.strip()]
    return {r.split("&")[0].strip(): [c.strip() for c in r.split("&")[1:]] for r in rows}


def _f(x):
    return "--" if x is None else f"{x:.3f}"


def check_tables(gen: Path) -> None:
    res = json.loads((gen / "results.json").read_text())
    rows = _rows((gen / "tab_models.tex").read_text())
    assert len(rows) == 1 + len(res["models"])
    for label, cells in rows.items():
        key = (
            "baseline"
            if "baseline" in label
            else next(
                k
                for k, v in res["models"].items()
                if v is not None
                and label.startswith(
                    {
                        "baseconv": "BaseConv",
                        "unet": "UNet",
                        "resnet18": "ResNet-18 encoder",
                        "resnet18_unet": "ResNet-18 UNet",
                        "effnet_unet": "EfficientNet",
                    }[k]
                )
            )
        )
        r = res["baseline"] if key == "baseline" else res["models"][key]
        expected = [_f(r["val"][m]) for m in ("mean_ap", "miou", "pixel_acc")] + [
            _f(r["test"][m]) for m in ("mean_ap", "miou", "pixel_acc")
        ]
        assert cells[2:8] == expected, label
    for metric in ("ap", "iou"):
        rows = _rows((gen / f"tab_per_class_{metric}.tex").read_text())
        models = [m for m in MODELS if m in res["models"]]
        for i, name in enumerate(res["class_names"]):
            assert rows[name] == [_f(res["models"][m]["test"][metric][i]) for m in models]
    rows = _rows((gen / "tab_augment.tex").read_text())
    for r in res["augmentation"]:
        label = r["augment"].replace("_", r"\_")
        assert rows[label][1:] == [_f(r["mean_ap"]), _f(r["miou"]), _f(r["pixel_acc"])]
    rows = _rows((gen / "tab_baseline.tex").read_text())
    for split in ("val", "test"):
        m = res["baseline"][split]
        assert rows[split] == [_f(m[k]) for k in ("mean_ap", "mean_ap_step", "miou", "pixel_acc")]
    if res.get("instance"):
        cells = next(iter(_rows((gen / "tab_instance.tex").read_text()).values()))
        m = res["instance"]["test"]
        assert cells == [_f(m["ap"]), _f(m["ap50"]), _f(m["ap75"]), _f(m["mean_best_iou"])]
    macros = dict(
        re.findall(r"\\newcommand\{\\(\w+)\}\{([^}]*)\}", (gen / "numbers.tex").read_text())
    )
    assert macros["UNetTestAP"] == _f(res["models"]["unet"]["test"]["mean_ap"])
    assert macros["BaselineValIoU"] == _f(res["baseline"]["val"]["miou"])


def test_quick_writes_every_table_and_figure(quick):
    res = json.loads((quick / "results.json").read_text())
    assert res["quick"] is True and set(res["models"]) == set(MODELS)
    assert len(res["augmentation"]) == 4 and res["instance"]["test"]["ap"] is not None
    tex = re.findall(r"\\input\{generated/([^}]+)\}", (ROOT / "report/main.tex").read_text())
    figs = re.findall(
        r"\\includegraphics(?:\[[^]]*\])?\{([^}]+)\}", (ROOT / "report/main.tex").read_text()
    )
    for name in tex + figs:
        assert (quick / name).is_file(), name


def test_quick_tables_match_results_json(quick):
    check_tables(quick)


def test_committed_tables_match_results_json():
    gen = ROOT / "report" / "generated"
    if not (gen / "results.json").is_file():
        pytest.skip("no committed report/generated/results.json")
    check_tables(gen)


def test_reuses_finished_runs(quick, data_root, tmp_path):
    before = (quick / "results.json").read_text()
    runs = quick.parent / "runs"
    mtime = (runs / "unet" / "checkpoint.pt").stat().st_mtime
    assert _reproduce(data_root, runs, quick) == 0
    assert (runs / "unet" / "checkpoint.pt").stat().st_mtime == mtime  # not retrained
    after = json.loads((quick / "results.json").read_text())
    assert after["models"] == json.loads(before)["models"]


@pytest.mark.skipif(
    shutil.which("latexmk") is None and shutil.which("pdflatex") is None,
    reason="LaTeX not installed (apt-get install texlive-latex-recommended latexmk)",
)
def test_latex_builds(quick, tmp_path):
    from segkit.report import build_pdf

    shutil.copy(ROOT / "report" / "main.tex", tmp_path / "main.tex")
    shutil.copytree(quick, tmp_path / "generated")
    pdf = build_pdf(tmp_path)
    assert pdf.is_file() and pdf.stat().st_size > 10_000

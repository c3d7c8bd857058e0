"""Figures: label colouring, prediction panels, loss curves, confusion matrices, instance overlays.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no global figure
state), so a notebook shows it exactly once, a script saves it with ``fig.savefig``, and nothing
leaks when it is dropped.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import find_boundaries
from torchvision import tv_tensors

from . import constants
from .models import predict

PALETTE = np.array(constants.PALETTE, dtype=np.uint8)  # (9, 3): the course classes' colours


def _subplots(
    nrows: int, ncols: int, figsize: tuple[float, float], **kw: object
) -> tuple[Figure, np.ndarray]:
    """``plt.subplots`` without pyplot: the figure is not registered for automatic display."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def colorize_mask(mask, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Label map (H, W) -> RGB uint8 (H, W, 3)."""
    mask = np.asarray(mask).astype(np.int64)
    return palette[np.clip(mask, 0, len(palette) - 1)]


def _to_hwc(image) -> np.ndarray:
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.ndim == 3 and arr.shape[0] == 3:
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 1)
    return arr


def _legend(fig: Figure, class_names) -> None:
    handles = [Patch(color=PALETTE[i] / 255, label=n) for i, n in enumerate(class_names)]
    fig.legend(
        handles=handles, loc="lower center", ncol=len(class_names), fontsize=8, frameon=False
    )


def plot_history(history: dict, name: str | None = None) -> Figure:
    """Loss curves (train / val) and, when present, validation mean AP and mIoU per epoch;
    ``name`` (the model) heads both panels."""
    epochs = history["epoch"]
    prefix = f"{name}: " if name else ""
    has_metrics = "val_map" in history
    fig, axes = _subplots(
        1, 2 if has_metrics else 1, figsize=(10 if has_metrics else 5, 3.5), squeeze=False
    )
    ax = axes[0, 0]
    ax.plot(epochs, history["train_loss"], "o-", label="train")
    if "val_loss" in history:
        ax.plot(epochs, history["val_loss"], "o-", label="val")
    ax.set(xlabel="epoch", ylabel="loss", title=f"{prefix}loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    if has_metrics:
        ax = axes[0, 1]
        ax.plot(epochs, history["val_map"], "o-", label="val mean AP")
        if "val_miou" in history:
            ax.plot(epochs, history["val_miou"], "o-", label="val mIoU")
        ax.set(xlabel="epoch", ylim=(0, 1), title=f"{prefix}validation metrics")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.tight_layout()
    return fig


def show_segmentations(images, masks, preds=None, class_names=None, titles=None) -> Figure:
    """Rows of image / ground truth (/ prediction) for (3, H, W) images and (H, W) masks."""
    cols = 2 if preds is None else 3
    fig, axes = _subplots(len(images), cols, figsize=(3.2 * cols, 2.5 * len(images)), squeeze=False)
    for r, image in enumerate(images):
        panels = [_to_hwc(image), colorize_mask(masks[r])]
        if preds is not None:
            panels.append(colorize_mask(preds[r]))
        for c, panel in enumerate(panels):
            axes[r, c].imshow(panel)
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title(["image", "ground truth", "prediction"][c])
        if titles is not None:
            axes[r, 0].set_ylabel(titles[r])
    if class_names is not None:
        _legend(fig, class_names)
    fig.tight_layout(rect=(0, 0.04 if class_names is not None else 0, 1, 1))
    return fig


def show_predictions(model, dataset, ids, device=None) -> Figure:
    """image / ground truth / prediction for ``dataset[i]`` for each i in ``ids``."""
    pairs = [dataset[i] for i in ids]
    images = torch.stack([p[0] for p in pairs])  # (K, 3, H, W)
    preds = predict(model, images.to(device or "cpu")).cpu()  # (K, H, W)
    return show_segmentations(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        preds,
        class_names=getattr(dataset, "classes", None),
    )


def show_augmentations(dataset, index: int, augments: dict, n: int = 3, seed: int = 0) -> Figure:
    """One image (top) and its mask (bottom) under several augmentation settings, ``n`` draws each.

    ``augments`` maps a label to an :class:`segkit.data.Augment`.
    """
    image, mask = dataset.raw(index)
    # a setting without randomness (no crop, no flip) would repeat the original: skip it
    random_augments = {k: a for k, a in augments.items() if a.scale is not None or a.flip_p > 0}
    cols = 1 + len(random_augments) * n
    fig, axes = _subplots(2, cols, figsize=(2.4 * cols, 4.4), squeeze=False)
    axes[0, 0].imshow(_to_hwc(image))
    axes[1, 0].imshow(colorize_mask(mask))
    axes[0, 0].set_title("original", fontsize=11)
    torch.manual_seed(seed)
    c = 1
    for label, aug in random_augments.items():
        t = aug.build()
        for k in range(n):
            im, m = t(tv_tensors.Image(image), tv_tensors.Mask(mask))
            axes[0, c].imshow(_to_hwc(im))
            axes[1, c].imshow(colorize_mask(m))
            axes[0, c].set_title(f"{label}, draw {k + 1}", fontsize=11)
            c += 1
    for ax in axes.flat:
        ax.axis("off")
    names = getattr(dataset, "classes", None)
    if names is not None:
        _legend(fig, names)
    fig.tight_layout(rect=(0, 0.07 if names is not None else 0, 1, 1))
    return fig


# ---------------------------------------------------------------- instance segmentation
INSTANCE_COLOURS = (np.array(matplotlib.colormaps["tab20"].colors)[::2] * 255).astype(
    np.uint8
)  # (10, 3)


def colorize_instances(labels, colour_of: dict[int, int] | None = None) -> np.ndarray:
    """Instance label map (H, W), 0 = background -> RGB uint8 (H, W, 3).

    ``colour_of`` maps an instance id to a colour index (see :func:`match_colours`); by default
    ids cycle through 10 well-separated colours."""
    labels = np.asarray(labels).astype(np.int64)
    ids = np.unique(labels[labels > 0])
    index = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    for i in ids:
        index[i] = (colour_of or {}).get(int(i), int(i) - 1)
    out = INSTANCE_COLOURS[index[np.maximum(labels, 0)] % len(INSTANCE_COLOURS)]
    out[labels <= 0] = 0
    return out


def match_colours(gt, pred) -> tuple[dict[int, int], dict[int, int]]:
    """Colour indices so that a predicted instance gets the colour of the ground-truth instance
    it overlaps best (Hungarian matching on IoU > 0); unmatched ones get unused colours."""
    gt, pred = np.asarray(gt).astype(np.int64), np.asarray(pred).astype(np.int64)
    g_ids, p_ids = np.unique(gt[gt > 0]), np.unique(pred[pred > 0])
    gt_colour = {int(g): k for k, g in enumerate(g_ids)}
    pred_colour: dict[int, int] = {}
    if len(g_ids) and len(p_ids):
        g_masks = gt.reshape(-1)[None, :] == g_ids[:, None]  # (G, P)
        p_masks = pred.reshape(-1)[None, :] == p_ids[:, None]  # (Q, P)
        inter = g_masks.astype(np.float64) @ p_masks.T.astype(np.float64)  # (G, Q)
        union = g_masks.sum(1)[:, None] + p_masks.sum(1)[None, :] - inter
        iou = inter / np.maximum(union, 1)
        for r, c in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[r, c] > 0:
                pred_colour[int(p_ids[c])] = gt_colour[int(g_ids[r])]
    nxt = len(g_ids)
    for p in p_ids:
        if int(p) not in pred_colour:
            pred_colour[int(p)], nxt = nxt, nxt + 1
    return gt_colour, pred_colour


def overlay_instances(
    image, labels, alpha: float = 0.55, colour_of: dict[int, int] | None = None
) -> np.ndarray:
    """Image (3, H, W) or (H, W, 3) with instances blended in and outlined: float (H, W, 3)."""
    img = _to_hwc(image)
    img = img.astype(np.float32) / 255 if img.dtype == np.uint8 else img.astype(np.float32)
    labels = np.asarray(labels)
    colours = colorize_instances(labels, colour_of).astype(np.float32) / 255
    fg = labels > 0
    out = img.copy()
    out[fg] = (1 - alpha) * img[fg] + alpha * colours[fg]
    out[find_boundaries(labels, mode="inner")] = 1.0
    return out


def show_instances(images, gt_labels, pred_labels, titles=None) -> Figure:
    """Rows of image / ground-truth instances / predicted instances (overlays); a predicted
    instance has the colour of the ground-truth instance it matches (IoU, Hungarian)."""
    fig, axes = _subplots(len(images), 3, figsize=(10, 3.0 * len(images)), squeeze=False)
    for r, image in enumerate(images):
        gt, pred = np.asarray(gt_labels[r]), np.asarray(pred_labels[r])
        gt_colour, pred_colour = match_colours(gt, pred)
        n_gt, n_pred = len(gt_colour), len(pred_colour)
        people = f"{n_gt} person" if n_gt == 1 else f"{n_gt} people"
        panels = [
            (_to_hwc(image), "image"),
            (overlay_instances(image, gt, colour_of=gt_colour), f"ground truth: {people}"),
            (
                overlay_instances(image, pred, colour_of=pred_colour),
                f"prediction: {n_pred} found" if n_pred else "prediction: none found",
            ),
        ]
        for c, (panel, name) in enumerate(panels):
            axes[r, c].imshow(panel)
            axes[r, c].set_title(name if titles is None or c else f"{titles[r]}", fontsize=9)
            axes[r, c].axis("off")
    fig.tight_layout()
    return fig


def show_energy(images, probs, energies, pred_labels=None, titles=None) -> Figure:
    """Rows of image / foreground probability / watershed energy inside the predicted mask
    (/ predicted instances), for lists of images, (H, W) maps and label maps."""
    cols = 3 if pred_labels is None else 4
    fig, axes = _subplots(len(images), cols, figsize=(3.3 * cols, 3.0 * len(images)), squeeze=False)
    vmax = max(float(np.max(e)) for e in energies) or 1.0
    for r, image in enumerate(images):
        axes[r, 0].imshow(_to_hwc(image))
        axes[r, 0].set_title("image" if titles is None else titles[r], fontsize=9)
        axes[r, 1].imshow(np.asarray(probs[r]), cmap="gray", vmin=0, vmax=1)
        axes[r, 1].set_title("foreground probability", fontsize=9)
        # the energy head is trained on object pixels only: show it where prob >= 0.5
        shown = np.where(np.asarray(probs[r]) >= 0.5, np.asarray(energies[r]), 0.0)
        im = axes[r, 2].imshow(shown, cmap="magma", vmin=0, vmax=vmax)
        axes[r, 2].set_title("energy (expected level) in mask", fontsize=9)
        fig.colorbar(im, ax=axes[r, 2], fraction=0.046, pad=0.02)
        if pred_labels is not None:
            axes[r, 3].imshow(overlay_instances(image, pred_labels[r]))
            axes[r, 3].set_title("watershed instances", fontsize=9)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    results_or_cm: object,
    class_names: list[str] | tuple[str, ...] | None = None,
    ap: np.ndarray | None = None,
    iou: np.ndarray | None = None,
    normalize: str | None = "true",
) -> Figure:
    """Confusion-matrix heatmap (rows = ground truth) with per-class AP and IoU columns.

    ``results_or_cm`` is a ``metrics.SegmentationResults`` (AP, IoU and names default to its own)
    or a (C, C) count matrix. ``normalize``: "true" (rows sum to 1), "pred" (columns), "all",
    or None (raw counts). NaN entries (absent classes) are left blank and marked "-".
    """
    res = results_or_cm if hasattr(results_or_cm, "confusion") else None
    cm = res.confusion if res is not None else results_or_cm
    cm = np.asarray(cm.detach().cpu() if hasattr(cm, "detach") else cm, dtype=np.float64)
    if res is not None:
        ap = res.ap if ap is None else ap
        iou = res.iou if iou is None else iou
        class_names = res.class_names if class_names is None else class_names
    n = len(cm)
    names = [str(i) for i in range(n)] if class_names is None else list(class_names)
    sums = {"true": cm.sum(1, keepdims=True), "pred": cm.sum(0, keepdims=True), "all": cm.sum()}
    if normalize is not None and normalize not in sums:
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, not {normalize!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        mat = cm if normalize is None else cm / sums[normalize]
    extras = [
        (label, np.asarray(v, np.float64))
        for label, v in (("AP", ap), ("IoU", iou))
        if v is not None
    ]
    fig, axes = _subplots(
        1,
        1 + len(extras),
        figsize=(2.5 + 0.6 * (n + len(extras)), 1.5 + 0.5 * n),
        squeeze=False,
        gridspec_kw={"width_ratios": [n] + [1] * len(extras), "wspace": 0.05},
    )
    vmax = 1.0 if normalize is not None else max(float(np.nanmax(mat)), 1.0)
    panels = [(axes[0, 0], mat, "Blues", vmax)]
    panels += [(axes[0, k + 1], v[:, None], "Greens", 1.0) for k, (_, v) in enumerate(extras)]
    for ax, values, cmap, top in panels:
        ax.imshow(values, cmap=cmap, vmin=0, vmax=top, aspect="auto")
        for (r, c), v in np.ndenumerate(values):
            counts = normalize is None and values is mat
            text = "-" if np.isnan(v) else (f"{int(v)}" if counts else f"{v:.2f}")
            dark = not np.isnan(v) and v > 0.6 * top
            ax.text(c, r, text, ha="center", va="center", fontsize=7, color="wk"[not dark])
        ax.set_yticks(range(n), names if ax is axes[0, 0] else [])
    axes[0, 0].set_xticks(range(n), names, rotation=45, ha="right")
    axes[0, 0].set(xlabel="predicted", ylabel="ground truth")
    for k, (label, v) in enumerate(extras):
        axes[0, k + 1].set_xticks([0], [label])
        axes[0, k + 1].set_title(
            f"mean {np.nanmean(v):.3f}" if np.isfinite(v).any() else "", fontsize=8
        )
    title = {"true": "rows normalised", "pred": "columns normalised", "all": "normalised"}
    axes[0, 0].set_title(f"confusion matrix ({title.get(normalize, 'counts')})", fontsize=9)
    return fig


def plot_loss_terms(
    history: dict, terms: list[str] | tuple[str, ...], name: str | None = None
) -> Figure:
    """Per-term training losses per epoch (log scale) and, when present, the validation mask
    AP / AP50 / AP75 (``val_ap``, ``val_ap50``, ``val_ap75``), e.g. Mask R-CNN's five losses."""
    epochs = history["epoch"]
    prefix = f"{name}: " if name else ""
    has_ap = "val_ap" in history
    cols = 2 if has_ap else 1
    fig, axes = _subplots(1, cols, figsize=(5 * cols, 3.5), squeeze=False)
    ax = axes[0, 0]
    for term in terms:
        ax.plot(
            epochs, history[term], "o-", ms=3, label=term.removeprefix("loss_").replace("_", " ")
        )
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title=f"{prefix}training loss terms")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    if has_ap:
        ax = axes[0, 1]
        for key, label in (("val_ap", "mask AP"), ("val_ap50", "AP50"), ("val_ap75", "AP75")):
            if key in history:
                ax.plot(epochs, history[key], "o-", ms=3, label=f"val {label}")
        ax.set(xlabel="epoch", ylim=(0, 1), title=f"{prefix}validation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_augment_sweep(sweep: dict) -> Figure:
    """Q1 sweep (``segkit study --sweep``): val mean AP against the flip probability (crop
    fixed) and against the crop's lower area bound (flip fixed); the grey band is the range of
    the centre point's seeds, the run-to-run noise of the same configuration."""
    seeds = [r["mean_ap"] for r in sweep["seeds"]]
    centre = sweep["seeds"][0]
    panels = (
        ("flip", "flip_p", "flip probability", f"crop area ({centre['crop_min']:g}, 1)"),
        ("crop", "crop_min", "crop area lower bound", f"flip probability {centre['flip_p']:g}"),
    )
    fig, axes = _subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, (factor, key, xlabel, fixed) in zip(axes, panels, strict=True):
        rows = sweep[factor]
        ax.axhspan(min(seeds), max(seeds), color="0.85", label=f"{len(seeds)} seeds, centre point")
        ax.plot([r[key] for r in rows], [r["mean_ap"] for r in rows], "o-", label="seed 0")
        ax.plot([centre[key]] * len(seeds), seeds, "k_", ms=12, label="centre point's seeds")
        ax.set(xlabel=xlabel, title=fixed)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel(f"val mean AP ({sweep['epochs']} epochs)")
    fig.tight_layout()
    return fig


def plot_maskrcnn_ablation(ablation: dict) -> Figure:
    """What each lever of a finished Mask R-CNN run did on val: mask AP / AP50 / AP75 against
    the epoch, the mask threshold, the score threshold and the inference short side."""
    panels = [
        ("epoch", ablation["epochs"], "epoch", ("val_ap", "val_ap50", "val_ap75")),
        ("mask threshold", ablation["mask_threshold"], "mask_threshold", ("ap", "ap50", "ap75")),
        ("score threshold", ablation["score_threshold"], "score_threshold", ("ap", "ap50", "ap75")),
        ("inference short side (px)", ablation["inference_short_side"], "short_side",
         ("ap", "ap50", "ap75")),
    ]  # fmt: skip
    chosen = {
        "mask_threshold": ablation["params"]["mask_threshold"],
        "score_threshold": ablation["params"]["score_threshold"],
        "short_side": ablation["trained_short_side"],
    }
    fig, axes = _subplots(1, len(panels), figsize=(12, 2.9), sharey=True)
    for ax, (xlabel, rows, x, keys) in zip(axes, panels, strict=True):
        for key, label in zip(keys, ("mask AP", "AP50", "AP75"), strict=True):
            ax.plot([r[x] for r in rows], [r[key] for r in rows], "o-", ms=3, label=label)
        if x in chosen:
            ax.axvline(chosen[x], color="0.5", ls=":", lw=1)
        if x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel=xlabel, ylim=(0, 1))
    axes[0].set_ylabel("val")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig

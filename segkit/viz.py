"""Figures: label colouring, prediction panels, loss curves, confusion matrices, instance overlays.

Every function returns a ``matplotlib.figure.Figure`` (and never calls ``plt.show``), so notebooks
display it and scripts save it with ``fig.savefig``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

# Colours for the 9 Stanford Background classes (sky tree road grass water building mountain
# foreground misc).
PALETTE = np.array(
    [[70, 130, 180], [34, 139, 34], [128, 64, 128], [152, 251, 152], [0, 0, 230],
     [220, 20, 60], [139, 90, 43], [255, 215, 0], [128, 128, 128]], dtype=np.uint8,
)  # fmt: skip


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
    from matplotlib.patches import Patch

    handles = [Patch(color=PALETTE[i] / 255, label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=len(class_names), fontsize=8,
               frameon=False)


def plot_history(history: dict) -> Figure:
    """Loss curves (train / val) and, when present, validation mean AP and mIoU per epoch."""
    epochs = history["epoch"]
    has_metrics = "val_map" in history
    fig, axes = plt.subplots(1, 2 if has_metrics else 1, figsize=(10 if has_metrics else 5, 3.5),
                             squeeze=False)
    ax = axes[0, 0]
    ax.plot(epochs, history["train_loss"], "o-", label="train")
    if "val_loss" in history:
        ax.plot(epochs, history["val_loss"], "o-", label="val")
    ax.set(xlabel="epoch", ylabel="loss", title="loss")
    ax.legend()
    if has_metrics:
        ax = axes[0, 1]
        ax.plot(epochs, history["val_map"], "o-", label="val mean AP")
        if "val_miou" in history:
            ax.plot(epochs, history["val_miou"], "o-", label="val mIoU")
        ax.set(xlabel="epoch", ylim=(0, 1), title="validation")
        ax.legend()
    fig.tight_layout()
    return fig


def show_segmentations(images, masks, preds=None, class_names=None, titles=None) -> Figure:
    """Rows of image / ground truth (/ prediction) for lists of (3, H, W) images and (H, W) masks."""
    cols = 2 if preds is None else 3
    fig, axes = plt.subplots(len(images), cols, figsize=(3.2 * cols, 2.5 * len(images)),
                             squeeze=False)
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
    import torch

    from .models import predict

    pairs = [dataset[i] for i in ids]
    images = torch.stack([p[0] for p in pairs])  # (K, 3, H, W)
    preds = predict(model, images.to(device or "cpu")).cpu()  # (K, H, W)
    return show_segmentations([p[0] for p in pairs], [p[1] for p in pairs], preds,
                              class_names=getattr(dataset, "classes", None))


def show_augmentations(dataset, index: int, augments: dict, n: int = 3, seed: int = 0) -> Figure:
    """One image (top) and its mask (bottom) under several augmentation settings, ``n`` draws each.

    ``augments`` maps a label to an :class:`segkit.data.Augment`.
    """
    import torch
    from torchvision import tv_tensors

    image, mask = dataset.raw(index)
    cols = 1 + len(augments) * n
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4), squeeze=False)
    axes[0, 0].imshow(_to_hwc(image))
    axes[1, 0].imshow(colorize_mask(mask))
    axes[0, 0].set_title("original", fontsize=8)
    torch.manual_seed(seed)
    c = 1
    for label, aug in augments.items():
        t = aug.build()
        for k in range(n):
            im, m = t(tv_tensors.Image(image), tv_tensors.Mask(mask))
            axes[0, c].imshow(_to_hwc(im))
            axes[1, c].imshow(colorize_mask(m))
            axes[0, c].set_title(f"{label} #{k + 1}", fontsize=8)
            c += 1
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig

"""Confusion matrix of a segmentation and the metrics it gives: IoU, recall, precision, accuracy.

Conventions. Rows are ground truth, columns predictions. Pixels whose target is ``ignore_index``
are dropped. A class absent from both ground truth and prediction has NaN IoU (recall is NaN when
it is absent from ground truth, precision when it is never predicted); means use ``nanmean``, so
NaN classes are left out (the absent-class policy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _labels_and_target(preds_or_logits: ArrayLike, target: ArrayLike) -> tuple[torch.Tensor, ...]:
    preds = torch.as_tensor(preds_or_logits).detach()
    if preds.is_floating_point():
        preds = preds.argmax(dim=1)  # (N, C, H, W) -> (N, H, W)
    target = torch.as_tensor(target).detach().to(preds.device)
    if target.dim() == preds.dim() + 1 and target.shape[1] == 1:
        target = target.squeeze(1)  # (N, 1, H, W) -> (N, H, W)
    if preds.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(preds.shape)} != target {tuple(target.shape)}")
    return preds, target


def _check_labels(x: ArrayLike, num_classes: int, what: str, keep: ArrayLike | None = None) -> None:
    if keep is not None:
        x = x[keep]
    if (x.numel() if isinstance(x, torch.Tensor) else x.size) == 0:
        return
    if bool(x.min() < 0) or bool(x.max() >= num_classes):
        raise ValueError(f"{what} labels must lie in [0, {num_classes}) or equal ignore_index")


def confusion_counts(
    preds_or_logits: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Confusion matrix of one batch with ``torch.bincount`` (on the input's device).

    Shape:
        preds_or_logits: (N, H, W) int labels, or (N, C, H, W) float scores (argmaxed over dim 1).
        target: (N, H, W) or (N, 1, H, W) int labels. Returns (C, C) int64, rows = ground truth.
    """
    preds, target = _labels_and_target(preds_or_logits, target)
    preds, target = preds.reshape(-1).long(), target.reshape(-1).long()  # (P,)
    keep = None if ignore_index is None else target != ignore_index  # (P,) bool
    _check_labels(target, num_classes, "target", keep)
    _check_labels(preds, num_classes, "predicted", keep)
    idx = target * num_classes + preds  # (P,)
    n2 = num_classes * num_classes
    if keep is not None:
        idx = torch.where(keep, idx, n2)  # ignored pixels go to an extra bin, dropped below
    return torch.bincount(idx, minlength=n2 + 1)[:n2].reshape(num_classes, num_classes)


def _as_matrix(cm: ArrayLike) -> np.ndarray:
    return np.asarray(cm.detach().cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def iou_per_class(cm: ArrayLike) -> np.ndarray:
    """TP / (TP + FP + FN) per class; NaN for a class absent from ground truth and prediction.

    Shape: cm (C, C), rows = ground truth; returns (C,) float64.
    """
    cm = _as_matrix(cm)
    tp = np.diag(cm)
    return _divide(tp, cm.sum(0) + cm.sum(1) - tp)


def recall_per_class(cm: ArrayLike) -> np.ndarray:
    """TP / (TP + FN) = diag / row sum; NaN for a class absent from ground truth. Shape: (C,)."""
    cm = _as_matrix(cm)
    return _divide(np.diag(cm), cm.sum(1))


def precision_per_class(cm: ArrayLike) -> np.ndarray:
    """TP / (TP + FP) = diag / column sum; NaN for a class never predicted. Shape: (C,)."""
    cm = _as_matrix(cm)
    return _divide(np.diag(cm), cm.sum(0))


def mean_iou(cm: ArrayLike) -> float:
    """``nanmean`` of :func:`iou_per_class`: classes absent from both sides are left out."""
    return _nanmean(iou_per_class(cm))


def pixel_accuracy(cm: ArrayLike) -> float:
    """Correct pixels / all counted pixels (NaN for an empty matrix)."""
    cm = _as_matrix(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def compute_confusion_matrix(
    gts: ArrayLike,
    preds: ArrayLike,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The assignment's ``compute_confusion_matrix``: per-class IoU and the confusion matrix.

    Shape:
        gts: (N, 1, H, W) int labels (numpy or torch); preds: (N, C, H, W) scores.
        Returns ``(iou, conf)``: (C,) float64 and (C, C) int64, rows = ground truth.
    """
    preds = torch.as_tensor(preds)
    num_classes = num_classes or int(preds.shape[1])
    conf = confusion_counts(preds, gts, num_classes, ignore_index).cpu().numpy()
    return iou_per_class(conf), conf


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix over batches, on the device of the first batch.

    Example:
        >>> cm = ConfusionMatrix(9)
        >>> cm.update(logits, masks)  # (N, 9, H, W) scores or (N, H, W) labels; (N, H, W) masks
        >>> cm.compute()["miou"]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat: torch.Tensor | None = None  # (C, C) int64

    @torch.no_grad()
    def update(self, preds_or_logits: ArrayLike, target: ArrayLike) -> None:
        """Add one batch. Shape: (N, H, W) labels or (N, C, H, W) scores; target (N, H, W)."""
        counts = confusion_counts(preds_or_logits, target, self.num_classes, self.ignore_index)
        self.mat = counts if self.mat is None else self.mat + counts.to(self.mat.device)

    def compute(self) -> dict[str, Any]:
        """``confusion`` (C, C); ``iou``, ``recall``, ``precision``; ``miou``, ``pixel_acc``."""
        c = self.num_classes
        cm = np.zeros((c, c), np.int64) if self.mat is None else self.mat.cpu().numpy()
        return {
            "confusion": cm,
            "iou": iou_per_class(cm),
            "recall": recall_per_class(cm),
            "precision": precision_per_class(cm),
            "miou": mean_iou(cm),
            "pixel_acc": pixel_accuracy(cm),
        }

    def reset(self) -> None:
        self.mat = None

"""One evaluation's results (:class:`SegmentationResults`), computed in one shot
(:func:`segmentation_eval`) or streamed over batches (:class:`SegmentationEvaluator`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .confusion import (
    ArrayLike,
    ConfusionMatrix,
    _nanmean,
    confusion_counts,
    iou_per_class,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
)
from .pixel_ap import APAccumulator, _ap_both


@dataclass(eq=False)
class SegmentationResults:
    """Per-class and mean metrics of one evaluation; ``str()`` gives a per-class table."""

    class_names: list[str]
    ap: np.ndarray  # (C,) "voc" AP, the course's number
    ap_step: np.ndarray  # (C,) "step" AP, sklearn's average_precision_score
    iou: np.ndarray  # (C,)
    recall: np.ndarray  # (C,)
    precision: np.ndarray  # (C,)
    confusion: np.ndarray  # (C, C) int64, rows = ground truth

    @property
    def mean_ap(self) -> float:
        return _nanmean(self.ap)

    @property
    def mean_ap_step(self) -> float:
        return _nanmean(self.ap_step)

    @property
    def miou(self) -> float:
        return _nanmean(self.iou)

    @property
    def pixel_acc(self) -> float:
        return pixel_accuracy(self.confusion)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: floats and lists, NaN -> None."""

        def clean(x: Any) -> Any:
            return [clean(v) for v in x] if np.ndim(x) else (None if np.isnan(x) else float(x))

        per_class = ("ap", "ap_step", "iou", "recall", "precision")
        return {
            "mean_ap": clean(self.mean_ap),
            "mean_ap_step": clean(self.mean_ap_step),
            "miou": clean(self.miou),
            "pixel_acc": clean(self.pixel_acc),
            "class_names": list(self.class_names),
            **{k: clean(getattr(self, k)) for k in per_class},
            "confusion": np.asarray(self.confusion).astype(int).tolist(),
        }

    def table(self) -> str:
        cols = ("AP", "AP step", "IoU", "recall")
        rows = zip(self.class_names, self.ap, self.ap_step, self.iou, self.recall, strict=True)
        w = max(12, *(len(n) for n in self.class_names))
        lines = [f"{'class':<{w}}" + "".join(f"{c:>9}" for c in cols)]
        means = (self.mean_ap, self.mean_ap_step, self.miou, _nanmean(self.recall))
        for name, *vals in [*rows, ("mean", *means)]:
            lines.append(f"{name:<{w}}" + "".join(f"{v:>9.3f}" for v in vals))
        lines.append(f"{'pixel acc':<{w}}{self.pixel_acc:>9.3f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def segmentation_eval(
    scores_or_logits: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    class_names: list[str] | tuple[str, ...] | None = None,
    ignore_index: int | None = None,
    from_logits: bool | None = None,
) -> SegmentationResults:
    """AP (both flavours), IoU, recall, precision, accuracy and confusion matrix in one call.

    Args:
        from_logits: apply softmax first; ``None`` does so when any score lies outside [0, 1].

    Shape: scores_or_logits (N, C, H, W) float (numpy or torch); target (N, H, W) or (N, 1, H, W).

    Example:
        >>> res = segmentation_eval(probs, masks, 9, class_names=CLASSES)
        >>> print(res); res.to_dict()["mean_ap"]
    """
    scores = torch.as_tensor(scores_or_logits).detach()
    if not scores.is_floating_point():
        raise TypeError("segmentation_eval needs (N, C, H, W) scores: AP is undefined for labels")
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    if from_logits is None:
        from_logits = bool(scores.numel()) and bool((scores.min() < 0) | (scores.max() > 1))
    if from_logits:
        scores = scores.softmax(dim=1)  # (N, C, H, W)
    cm = confusion_counts(scores, target, num_classes, ignore_index).cpu().numpy()
    ap = _ap_both(scores, target, num_classes, ignore_index)  # (2, C)
    names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
    return SegmentationResults(
        names, ap[0], ap[1], iou_per_class(cm), recall_per_class(cm), precision_per_class(cm), cm
    )


class SegmentationEvaluator:
    """The one streaming evaluator: per-class AP (both flavours), IoU, recall, precision,
    confusion and pixel accuracy over batches, without holding a split's scores.

    Memory: the confusion matrix on the batches' device plus 4 bytes per pixel and class of AP sort
    keys on the CPU (see :class:`APAccumulator`).

    Example:
        >>> ev = SegmentationEvaluator(9, class_names=CLASSES)
        >>> ev.update(logits, masks)  # (N, 9, H, W) logits, (N, H, W) int64; any device
        >>> ev.compute().mean_ap
    """

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | tuple[str, ...] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.class_names = (
            [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
        )
        self.confusion = ConfusionMatrix(num_classes, ignore_index)
        self.ap = APAccumulator(num_classes, ignore_index)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch. Shape: logits (N, C, H, W) float; target (N, H, W) int."""
        probs = logits.float().softmax(dim=1)  # (N, C, H, W)
        self.confusion.update(probs, target)
        self.ap.update(probs, target)

    def compute(self) -> SegmentationResults:
        cm = self.confusion.compute()
        return SegmentationResults(
            self.class_names,
            self.ap.compute("voc"),
            self.ap.compute("step"),
            cm["iou"],
            cm["recall"],
            cm["precision"],
            cm["confusion"],
        )

    def reset(self) -> None:
        self.confusion.reset()
        self.ap.reset()

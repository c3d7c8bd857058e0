"""Metrics: confusion matrix and IoU (``confusion``), per-pixel AP (``pixel_ap``), one
evaluation's results (``summary``), and COCO mask AP for instances (``mask_ap``)."""

from .confusion import (
    ConfusionMatrix,
    compute_confusion_matrix,
    confusion_counts,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
)
from .mask_ap import (
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_POINTS,
    InstanceEvaluator,
    labels_to_masks,
    mask_average_precision,
    mask_iou,
    match_instances,
)
from .pixel_ap import (
    FLAVOURS,
    APAccumulator,
    average_precision,
    binary_average_precision,
    compute_ap,
)
from .summary import SegmentationEvaluator, SegmentationResults, segmentation_eval

__all__ = [
    "IOU_THRESHOLDS", "MAX_DETS", "RECALL_POINTS", "InstanceEvaluator", "labels_to_masks",
    "mask_average_precision", "mask_iou", "match_instances",
    "FLAVOURS", "APAccumulator", "ConfusionMatrix", "SegmentationEvaluator", "SegmentationResults",
    "average_precision", "binary_average_precision", "compute_ap", "compute_confusion_matrix",
    "confusion_counts", "iou_per_class", "mean_iou", "pixel_accuracy", "precision_per_class",
    "recall_per_class", "segmentation_eval",
]  # fmt: skip

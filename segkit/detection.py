"""Penn-Fudan for Mask R-CNN: detection targets from instance maps (boxes from the masks), the
paired torchvision v2 augmentation on ``tv_tensors`` (Image, Mask, BoundingBoxes), and the
post-processing of Mask R-CNN's outputs into a per-pixel instance label map (the watershed's
representation): score and mask thresholds, overlaps resolved by score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import InterpolationMode, v2

from .constants import IGNORE_INDEX
from .pennfudan import PennFudanDataset

Target = dict[str, torch.Tensor]  # torchvision's detection target: boxes, labels, masks


def instance_masks(instances: torch.Tensor) -> torch.Tensor:
    """One binary mask per instance id of an instance map (0 background, IGNORE_INDEX padding).

    Shape: ``(H, W)`` int -> ``(M, H, W)`` uint8, ids ascending.
    """
    ids = torch.unique(instances)
    ids = ids[(ids > 0) & (ids != IGNORE_INDEX)]  # (M,)
    return (instances[None] == ids[:, None, None]).to(torch.uint8)  # (M, H, W)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of binary masks in pixel-edge coordinates: ``masks_to_boxes`` (which
    gives the last pixel's index) with x2, y2 one further, so a box spans its pixels exactly and
    a flip of the image maps boxes and masks alike.

    Shape: ``(M, H, W)`` -> ``(M, 4)`` float32.
    """
    if len(masks) == 0:
        return torch.zeros(0, 4)
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # (M, 4)


def detection_target(masks: torch.Tensor, boxes: torch.Tensor | None = None) -> Target:
    """``{"boxes" (M, 4) float32, "labels" (M,) int64 (all 1: pedestrian), "masks" (M, H, W)
    uint8}``; boxes from the masks unless given."""
    boxes = boxes_from_masks(masks) if boxes is None else boxes
    labels = torch.ones(len(masks), dtype=torch.int64)
    return {"boxes": boxes.float(), "labels": labels, "masks": masks.to(torch.uint8)}


@dataclass(frozen=True)
class DetectionAugment:
    """Paired random rescale (about the centre, canvas size kept) and horizontal flip, one v2
    pipeline on ``tv_tensors.Image`` + ``Mask`` + ``BoundingBoxes``: one random draw serves the
    image, every instance mask and every box. Instances pushed out of the canvas are dropped
    (``v2.SanitizeBoundingBoxes``, boxes under 2 px, and with them their masks and labels).

    Shape: ``(uint8 (3, H, W), Target) -> (uint8 (3, H, W), Target)``.

    Example:
        >>> aug = DetectionAugment(scale=(0.85, 1.15), flip_p=0.5)
        >>> image, target = aug(image, detection_target(instance_masks(instances)))
    """

    scale: tuple[float, float] = (0.85, 1.15)
    flip_p: float = 0.5

    def build(self) -> v2.Transform:
        ops: list[v2.Transform] = []
        if tuple(self.scale) != (1.0, 1.0):
            ops.append(
                v2.RandomAffine(
                    degrees=0.0, scale=tuple(self.scale), interpolation=InterpolationMode.BILINEAR
                )
            )
        if self.flip_p > 0:
            ops.append(v2.RandomHorizontalFlip(p=self.flip_p))
        ops.append(v2.SanitizeBoundingBoxes(min_size=2.0))
        return v2.Compose(ops)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        h, w = image.shape[-2:]
        sample = {
            "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w)),
            "masks": tv_tensors.Mask(target["masks"]),
            "labels": target["labels"],
        }
        image, out = self.build()(tv_tensors.Image(image), sample)
        plain = {k: v.as_subclass(torch.Tensor) for k, v in out.items()}
        return image.as_subclass(torch.Tensor), plain


class DetectionDataset(Dataset):
    """A :class:`~segkit.pennfudan.PennFudanDataset` (files, fixed split, working size) as
    torchvision detection samples: ``(image float32 (3, h, w) in [0, 1], Target)``.

    Example:
        >>> train = DetectionDataset(PennFudanDataset("train", short_side=400), DetectionAugment())
    """

    def __init__(self, base: PennFudanDataset, transform: DetectionAugment | None = None) -> None:
        self.base, self.transform = base, transform
        self.stems, self.sizes = base.stems, base.sizes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        image, instances = self.base.resized(i)  # (3, h, w), (h, w) uint8
        target = detection_target(instance_masks(instances))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image.float().div(255), target  # (3, h, w)


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[Target]]:
    """Lists, not stacked tensors: detection images differ in size."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


# ---------------------------------------------------------------------- post-processing
Detections = tuple[np.ndarray, np.ndarray]  # (scores (P,) float32, masks (P, H, W) float16)


def labels_from_detections(
    scores: np.ndarray, masks: np.ndarray, score_threshold: float, mask_threshold: float
) -> tuple[np.ndarray, dict[int, float]]:
    """Per-pixel instance labels from Mask R-CNN detections: keep scores >= ``score_threshold``,
    binarise masks (> ``mask_threshold``); a pixel claimed by several goes to the highest score,
    and a detection left with no pixel is dropped. Ids are 1.. in descending score order.

    Shape: scores (P,); masks (P, H, W) probabilities -> labels (H, W) int32, {id: score}.
    """
    h, w = masks.shape[-2:]
    labels = np.zeros((h, w), np.int32)
    order = np.argsort(-scores, kind="stable")
    kept: dict[int, float] = {}
    for k in order:
        if scores[k] < score_threshold:
            break
        free = (masks[k] > mask_threshold) & (labels == 0)  # (H, W): higher scores came first
        if free.any():
            labels[free] = len(kept) + 1
            kept[len(kept) + 1] = float(scores[k])
    return labels, kept

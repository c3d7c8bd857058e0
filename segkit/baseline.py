"""The per-pixel class-frequency baseline (assignment Q2): at every pixel, predict how often each
class appears there in the training labels."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F


def simple_train(num_classes: int, dataloader: Iterable) -> torch.Tensor:
    """Per-pixel class frequencies over the labels of ``dataloader``.

    Shape: returns (num_classes, H, W) float32, summing to 1 over classes at every pixel.
    """
    counts: torch.Tensor | None = None
    for _, labels in dataloader:
        labels = torch.as_tensor(labels).long()
        if labels.dim() == 4:
            labels = labels.squeeze(1)  # (N, H, W)
        onehot = F.one_hot(labels, num_classes).sum(0)  # (H, W, C)
        counts = onehot if counts is None else counts + onehot
    if counts is None:
        raise ValueError("simple_train: the dataloader yielded no batches")
    counts = counts.permute(2, 0, 1).float()  # (C, H, W)
    return counts / counts.sum(0, keepdim=True)


def simple_predict(
    dataloader: Iterable, model: torch.Tensor | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The frequency map (C, H, W), a tensor or a numpy array, as every image's prediction.

    Shape: returns ``gts`` (N, 1, H, W) int64 and ``preds`` (N, C, H, W) float32 (numpy), the
    assignment's layout for ``compute_confusion_matrix`` and average precision.
    """
    gts = []
    for _, labels in dataloader:
        labels = torch.as_tensor(labels).long()
        gts.append(labels if labels.dim() == 4 else labels.unsqueeze(1))  # (B, 1, H, W)
    if not gts:
        raise ValueError("simple_predict: the dataloader yielded no batches")
    gt = torch.cat(gts)  # (N, 1, H, W)
    model = torch.as_tensor(model).float()  # (C, H, W)
    if tuple(gt.shape[-2:]) != tuple(model.shape[-2:]):
        raise ValueError(
            f"label size {tuple(gt.shape[-2:])} != model size {tuple(model.shape[-2:])}"
        )
    preds = model.unsqueeze(0).expand(len(gt), *model.shape)  # (N, C, H, W), no copy
    return gt.numpy(), np.ascontiguousarray(preds.numpy())

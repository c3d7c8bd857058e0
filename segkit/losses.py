"""Weighted cross-entropy written out (assignment Q4) and class weights from label frequencies."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_criterion(
    predictions: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Class-weighted cross-entropy from log-softmax and a gather (same value as
    ``F.cross_entropy(predictions, labels, weight=weights, ignore_index=...)``).

    The mean is weighted: ``sum_i w[y_i] * -log p_i[y_i] / sum_i w[y_i]`` over non-ignored pixels.

    Shape:
        predictions: (N, C, H, W) raw logits; labels: (N, H, W) or (N, 1, H, W) int;
        weights: (C,) or None. Returns a scalar.
    """
    if device is not None:
        predictions, labels = predictions.to(device), labels.to(device)
    if labels.dim() == predictions.dim():  # the assignment's (N, 1, H, W) labels
        labels = labels.squeeze(1)
    labels = labels.long()
    num_classes = predictions.shape[1]
    valid = (
        torch.ones_like(labels, dtype=torch.bool)
        if ignore_index is None
        else labels != ignore_index
    )
    safe = torch.where(valid, labels, torch.zeros_like(labels))  # (N, H, W), gather needs an index
    # the range check reads values back, so it runs on CPU tensors only (no per-step GPU sync)
    check = ignore_index is None and labels.numel() > 0 and labels.device.type == "cpu"
    if check and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (or pass ignore_index)")
    log_probs = F.log_softmax(predictions.float(), dim=1)  # (N, C, H, W)
    nll = -log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)  # (N, H, W)
    if weights is None:
        w = valid.to(nll.dtype)
    else:
        w = weights.to(nll.device, nll.dtype)[safe] * valid  # (N, H, W)
    return (w * nll).sum() / w.sum()


def class_weights(
    counts: torch.Tensor, *, normalize: bool = True, cap: float | None = 10.0
) -> torch.Tensor:
    """Inverse class frequency from per-class pixel counts (e.g. ``data.label_counts(train_set)``).

    ``w_c = total / (C * count_c)``; with ``normalize`` the weights are rescaled to mean 1 and then
    capped at ``cap`` so a nearly absent class (misc is 0.5% of pixels) cannot dominate. A class
    with no pixels gets weight 0 (it cannot appear as a target).
    """
    counts = counts.double()
    freq = counts / counts.sum()
    w = torch.where(counts > 0, 1.0 / (freq * len(counts)).clamp_min(1e-12), torch.zeros_like(freq))
    if normalize:
        w = w / w[counts > 0].mean()
    if cap is not None:
        w = w.clamp(max=cap)
    return w.float()

"""Losses: weighted cross-entropy written out (Q4), class weights, Dice, the DWT instance loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .constants import CLASS_WEIGHTINGS, IGNORE_INDEX


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
    counts: torch.Tensor,
    *,
    normalize: bool = True,
    cap: float | None = 10.0,
    power: float = 1.0,
    cap_first: bool = False,
) -> torch.Tensor:
    """Class weights from per-class pixel counts (e.g. ``data.label_counts(train_set)``).

    The policy, in order: ``w_c = (total / (C * count_c)) ** power`` (1: inverse frequency,
    0.5: its square root, gentler on rare classes); then, with ``cap_first``, clip at ``cap``
    and rescale to mean 1; otherwise (the "inverse" policy) rescale to mean 1 and clip
    at ``cap`` (so the cap bounds the final weight, and the mean may end below 1). A class with
    no pixels gets weight 0 (it cannot appear as a target) and is left out of the mean.
    """
    counts = counts.double()
    freq = counts / counts.sum()
    present = counts > 0
    inv = torch.where(present, 1.0 / (freq * len(counts)).clamp_min(1e-12), torch.zeros_like(freq))
    w = inv**power
    if cap_first and cap is not None:
        w = w.clamp(max=cap)
    if normalize:
        w = w / w[present].mean()
    if not cap_first and cap is not None:
        w = w.clamp(max=cap)
    return w.float()


def weighting(scheme: str, counts: torch.Tensor, cap: float = 10.0) -> torch.Tensor | None:
    """The loss weights of a config's ``class_weighting``: ``"inverse"`` (inverse frequency, mean
    1, then capped), ``"sqrt"`` (its square root, capped, then mean 1) or ``"none"`` (None)."""
    if scheme not in CLASS_WEIGHTINGS:
        raise ValueError(f"unknown class weighting {scheme!r}; choose one of {CLASS_WEIGHTINGS}")
    if scheme == "none":
        return None
    sqrt = scheme == "sqrt"
    return class_weights(counts, cap=cap, power=0.5 if sqrt else 1.0, cap_first=sqrt)


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0
) -> torch.Tensor:
    """Soft multi-class Dice loss, ``1 - mean_c (2 |P_c T_c| + eps) / (|P_c| + |T_c| + eps)``
    over the batch, classes present in the target or the prediction; ignored pixels count nowhere.

    Shape: logits (N, C, H, W) float; target (N, H, W) int. Returns a scalar.
    """
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)  # (N, 1, H, W)
    probs = logits.float().softmax(dim=1) * valid  # (N, C, H, W)
    onehot = F.one_hot(torch.where(valid[:, 0], target, 0), num_classes)  # (N, H, W, C)
    onehot = onehot.permute(0, 3, 1, 2).float() * valid  # (N, C, H, W)
    inter = (probs * onehot).sum((0, 2, 3))  # (C,)
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))  # (C,)
    dice = (2 * inter + eps) / (total + eps)  # (C,)
    return 1 - dice.mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    dice_weight: float = 0.0,
) -> torch.Tensor:
    """The semantic runs' criterion: weighted cross-entropy (Q4) plus ``dice_weight`` x Dice."""
    loss = cross_entropy_criterion(logits, target, weights)
    if dice_weight:
        loss = loss + dice_weight * dice_loss(logits, target)
    return loss


# ------------------------------------------------------------------ DWT (instance) losses
def default_level_weights(num_levels: int) -> torch.Tensor:
    """w_k: 3, 3, 3, 2 for the levels nearest the boundary (mistakes there merge instances), 1
    above, as in public DWT implementations (K = ``num_levels``, 16 in segkit). Shape: (K,)."""
    w = torch.ones(num_levels)  # (K,)
    w[:3], w[3:4] = 3.0, 2.0
    return w


def dwt_energy_loss(
    energy_logits: torch.Tensor,
    energy: torch.Tensor,
    weight: torch.Tensor,
    level_weights: torch.Tensor | None = None,
    eps: float = 1e-7,
) -> torch.Tensor:
    """The DWT watershed-energy loss, normalised by the pixel weights:

    ``-sum_p c_p sum_k w_k [t_k(p) log y_k(p) + (1 - t_k(p)) log(1 - y_k(p))] / sum_p c_p``
    with y = softmax(logits), t the one-hot target level, w_k the level weights and
    c_p = ``weight`` = 1 / sqrt(area of p's instance) on object pixels, 0 elsewhere: the loss is
    restricted to the semantic mask, and an instance of area A weighs sqrt(A) in total, so large
    instances still count more than small ones, but by the square root of their area, not by it.

    Shape: energy_logits (N, K, H, W); energy (N, H, W) int64; weight (N, H, W) float.
    Returns a scalar.
    """
    num_levels = energy_logits.shape[1]
    w = default_level_weights(num_levels) if level_weights is None else level_weights
    w = w.to(energy_logits.device, torch.float32).view(1, -1, 1, 1)  # (1, K, 1, 1)
    logp = F.log_softmax(energy_logits.float(), dim=1)  # (N, K, H, W)
    log1mp = torch.log((1 - logp.exp()).clamp_min(eps))  # (N, K, H, W)
    onehot = F.one_hot(energy.clamp(0, num_levels - 1), num_levels).permute(0, 3, 1, 2)
    per_pixel = -(w * torch.where(onehot.bool(), logp, log1mp)).sum(1)  # (N, H, W)
    return (weight * per_pixel).sum() / weight.sum().clamp_min(eps)


def dwt_loss(
    logits: torch.Tensor,
    targets: dict[str, torch.Tensor],
    energy_weight: float = 1.0,
    level_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE-with-logits of the semantic head on valid pixels + ``energy_weight`` x
    :func:`dwt_energy_loss`.

    Shape: logits (N, 1 + K, H, W) (channel 0 semantic, 1.. energy, as
    :func:`segkit.models.instance_unet.split_logits`); targets as
    :func:`segkit.energy.instance_targets`, batched. Returns a scalar.
    """
    logits = logits.float()
    sem, energy = logits[:, :1], logits[:, 1:]  # (N, 1, H, W), (N, K, H, W)
    valid = targets["valid"]  # (N, H, W)
    bce = F.binary_cross_entropy_with_logits(sem[:, 0], targets["semantic"], reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp_min(1)
    return bce + energy_weight * dwt_energy_loss(
        energy, targets["energy"], targets["weight"], level_weights
    )


class DWTLoss(torch.nn.Module):
    """``criterion(logits, targets)`` wrapper of :func:`dwt_loss`."""

    def __init__(
        self, energy_weight: float = 1.0, level_weights: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.energy_weight, self.level_weights = energy_weight, level_weights

    def forward(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return dwt_loss(logits, targets, self.energy_weight, self.level_weights)

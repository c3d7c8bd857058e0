"""The two-head UNet of the instance path: 1 semantic logit + K quantised energy levels."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..config import DEFAULT_WEIGHTS
from ..constants import NUM_ENERGY_LEVELS
from .assignment import UNet
from .base import SegmentationModel
from .pretrained import EffNetUNet

BODIES = ("effnet_unet", "unet")


def build_body(
    body: str, num_classes: int, weights: str | os.PathLike | None = DEFAULT_WEIGHTS, **kwargs: Any
) -> SegmentationModel:
    """The body network: ``EffNetUNet`` or the assignment ``UNet`` with ``num_classes`` outputs.

    ``weights``: "default" (the body's own: ImageNet for effnet_unet, none for unet),
    None / "none", "imagenet" or a local file (effnet_unet only). ``kwargs`` go to the body
    (e.g. ``width=0.25`` for a narrow UNet).
    """
    resolved = None if weights in (None, "none") else weights
    if body == "effnet_unet":
        if resolved == DEFAULT_WEIGHTS:
            return EffNetUNet(num_classes, **kwargs)  # its default: ImageNet
        return EffNetUNet(num_classes, weights=resolved, **kwargs)
    if body == "unet":
        if resolved not in (None, DEFAULT_WEIGHTS):
            raise ValueError(f"unet has no pretrained weights; got weights={weights!r}")
        return UNet(num_classes, **kwargs)
    raise KeyError(f"unknown body {body!r}; available: {list(BODIES)}")


class InstanceUNet(nn.Module):
    """UNet body with a semantic head (1 logit) and an energy head (K quantised levels).

    The energy is *classified* into K = 16 DWT levels, not regressed: the level-weighted
    cross-entropy concentrates on the few levels next to boundaries, which are what split
    touching pedestrians, and the softmax's expected level is a smooth watershed relief.
    Both heads are the body's 1x1 ``head`` with 1 + K outputs, so ``forward`` keeps segkit's
    contract (one logits tensor); :func:`split_logits` separates them.

    Shape: images (N, 3, H, W) in [0, 1], H, W multiples of 32 -> logits (N, 1 + K, H, W).

    Example:
        >>> model = InstanceUNet("unet", num_energy_levels=16, weights=None, width=0.25)
        >>> semantic, energy = split_logits(model(images))
    """

    def __init__(
        self,
        body: str = "effnet_unet",
        num_energy_levels: int = NUM_ENERGY_LEVELS,
        weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
        **body_kwargs: Any,
    ) -> None:
        super().__init__()
        self.body = build_body(body, 1 + num_energy_levels, weights, **body_kwargs)
        self.num_energy_levels = num_energy_levels

    @property
    def encoder(self) -> nn.Module:
        return self.body.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.body.decoder

    @property
    def head(self) -> nn.Module:
        return self.body.head

    def freeze_encoder(self, frozen: bool = True) -> InstanceUNet:
        self.body.freeze_encoder(frozen)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)  # (N, 1 + K, H, W)


def instance_unet(
    num_classes: int = 1 + NUM_ENERGY_LEVELS,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    body: str = "effnet_unet",
    **body_kwargs: Any,
) -> InstanceUNet:
    """Registry entry: ``num_classes`` = 1 semantic + K energy channels."""
    return InstanceUNet(body, num_classes - 1, weights, **body_kwargs)


def split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape: (N, 1 + K, H, W) -> semantic (N, 1, H, W), energy (N, K, H, W)."""
    return logits[:, :1], logits[:, 1:]

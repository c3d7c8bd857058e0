"""Model registry: ``create_model(name, num_classes=9, weights=...)`` and ``list_models()``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from torch import nn

from ..config import DEFAULT_WEIGHTS
from .assignment import BaseConv, UNet
from .base import SegmentationModel, predict
from .instance_unet import instance_unet
from .pretrained import EffNetUNet, ResnetBasedModel, ResnetUNetModel

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


@register_model
def baseconv(num_classes: int = 9, weights: None = None, **kw) -> nn.Module:
    if weights is not None:
        raise ValueError("baseconv has no pretrained weights; use weights=None")
    return BaseConv(num_classes, **kw)


@register_model
def unet(num_classes: int = 9, weights: None = None, **kw) -> nn.Module:
    if weights is not None:
        raise ValueError("unet has no pretrained weights; use weights=None")
    return UNet(num_classes, **kw)


@register_model
def resnet18(num_classes: int = 9, weights: str | None = None, **kw) -> nn.Module:
    return ResnetBasedModel(num_classes, weights=weights, **kw)


@register_model
def resnet18_unet(num_classes: int = 9, weights: str | None = None, **kw) -> nn.Module:
    return ResnetUNetModel(num_classes, weights=weights, **kw)


@register_model
def effnet_unet(num_classes: int = 9, weights: str | None = "imagenet", **kw) -> nn.Module:
    return EffNetUNet(num_classes, weights=weights, **kw)


@register_model
def effnet_lite1_unet(num_classes: int = 9, weights: str | None = "imagenet", **kw) -> nn.Module:
    return EffNetUNet(num_classes, weights=weights, variant=1, **kw)


@register_model
def effnet_lite2_unet(num_classes: int = 9, weights: str | None = "imagenet", **kw) -> nn.Module:
    return EffNetUNet(num_classes, weights=weights, variant=2, **kw)


register_model(instance_unet)  # Penn-Fudan two-head UNet: 1 semantic + (num_classes - 1) levels


def list_models() -> list[str]:
    return sorted(MODELS)


def weights_label(name: str, weights: str | None) -> str:
    """What a run starts from, for people: "scratch", "imagenet" or the local file's name
    (``weights="default"`` resolves to the builder's own default)."""
    if weights == DEFAULT_WEIGHTS and name in MODELS:
        weights = inspect.signature(MODELS[name]).parameters["weights"].default
    if weights in (None, "none", DEFAULT_WEIGHTS):
        return "scratch"
    return weights if weights == "imagenet" else os.path.basename(str(weights))


def create_model(
    name: str,
    num_classes: int = 9,
    weights: str | None = DEFAULT_WEIGHTS,
    *,
    freeze_encoder: bool = False,
    **kwargs,
) -> nn.Module:
    """Build a registered model; ``weights`` is "default" (the model's own: ImageNet for
    effnet_unet, none for the rest), None / "none", "imagenet" or a local file path.

    Example:
        >>> model = create_model("unet", num_classes=9)
        >>> model = create_model("effnet_unet", weights="imagenet", freeze_encoder=True)
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {list_models()}")
    if weights != DEFAULT_WEIGHTS:  # "default": the builder's own default (one per model)
        kwargs["weights"] = None if weights in (None, "none") else weights
    model = MODELS[name](num_classes=num_classes, **kwargs)
    if freeze_encoder:
        model.freeze_encoder(True)
    return model


__all__ = [
    "MODELS", "BaseConv", "EffNetUNet", "ResnetBasedModel", "ResnetUNetModel", "SegmentationModel",
    "UNet", "create_model", "list_models", "predict", "register_model", "weights_label",
]  # fmt: skip

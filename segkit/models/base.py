"""Shared parts of every semantic model: input normalisation, a UNet-style decoder and the
encoder -> decoder -> head contract (raw logits at input size)."""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
    """Conv (no bias, BatchNorm follows) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def conv_block(in_channels: int, out_channels: int, depth: int = 2) -> nn.Sequential:
    """``depth`` 3x3 conv-BN-ReLU layers (1: the assignment's block; 2: the classic UNet block)."""
    layers = [conv_bn_relu(in_channels, out_channels)]
    layers += [conv_bn_relu(out_channels, out_channels) for _ in range(depth - 1)]
    return nn.Sequential(*layers)


class Normalize(nn.Module):
    """ImageNet mean/std normalisation as buffers, so datasets stay in [0, 1]."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class UNetDecoder(nn.Module):
    """Transposed-conv up stages from stride 32 to stride 1, with or without skip connections.

    ``encoder_channels`` lists the feature channels at strides 2, 4, 8, 16, 32;
    ``decoder_channels`` the output channels of the five up stages (strides 16, 8, 4, 2, 1).
    Without skips this is the assignment's encoder-decoder (BaseConv / ResnetBasedModel).
    """

    def __init__(
        self,
        encoder_channels: list[int],
        decoder_channels: list[int],
        skips: bool = True,
        block_depth: int = 2,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError("need 5 encoder and 5 decoder channel counts (strides 2..32)")
        self.skips = skips
        skip_channels = list(reversed(encoder_channels[:-1])) + [
            0
        ]  # strides 16, 8, 4, 2, (1: none)
        in_ch = encoder_channels[-1]
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for out_ch, skip_ch in zip(decoder_channels, skip_channels, strict=True):
            self.ups.append(nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2))
            self.blocks.append(conv_block(out_ch + (skip_ch if skips else 0), out_ch, block_depth))
            in_ch = out_ch
        self.out_channels = decoder_channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]  # (N, C5, H/32, W/32)
        skips = list(reversed(features[:-1])) + [None]
        for up, block, skip in zip(self.ups, self.blocks, skips, strict=True):
            x = up(x)  # doubles H, W
            if self.skips and skip is not None:
                x = torch.cat([x, skip], dim=1)
            x = block(x)
        return x  # (N, decoder_channels[-1], H, W)


class SegmentationModel(nn.Module):
    """encoder (list of 5 feature maps at strides 2..32) -> decoder -> 1x1 head -> logits.

    Shape:
        images: (N, 3, H, W) float in [0, 1], H and W multiples of 32.
        returns logits (N, num_classes, H, W), no activation.
    """

    stride = 32

    def __init__(
        self, encoder: nn.Module, decoder: UNetDecoder, num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        # ImageNet statistics only make sense for RGB input
        self.normalize = Normalize() if in_channels == 3 else nn.Identity()
        self.encoder = encoder
        self.decoder = decoder
        self.head = nn.Conv2d(decoder.out_channels, num_classes, kernel_size=1)
        self.num_classes = num_classes
        self._encoder_frozen = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if h % self.stride or w % self.stride:
            ph, pw = -(-h // self.stride) * self.stride, -(-w // self.stride) * self.stride
            raise ValueError(
                f"{type(self).__name__} needs H, W divisible by {self.stride}, got {h}x{w}; "
                f"pad or resize to {ph}x{pw}"
            )
        features = self.encoder(self.normalize(images))
        return self.head(self.decoder(features))  # (N, num_classes, H, W)

    def freeze_encoder(self, frozen: bool = True) -> SegmentationModel:
        """Stop gradients into the encoder and keep its BatchNorm statistics fixed (eval mode)."""
        self._encoder_frozen = frozen
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if self._encoder_frozen:
            self.encoder.eval()  # frozen BatchNorm keeps its running statistics
        return self


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Arg-max labels (N, H, W) int64 for images (N, 3, H, W); restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        return model(images).argmax(dim=1)
    finally:
        model.train(was_training)

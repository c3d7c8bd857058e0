"""The assignment's from-scratch models: BaseConv (encoder-decoder, no skips) and UNet (skips)."""

from __future__ import annotations

from torch import nn

from .base import SegmentationModel, UNetDecoder, conv_block, conv_bn_relu

ENCODER_CHANNELS = [64, 64, 128, 256, 512]  # strides 2, 4, 8, 16, 32
DECODER_CHANNELS = [256, 128, 64, 64, 32]  # strides 16, 8, 4, 2, 1


class ConvEncoder(nn.Module):
    """7x7 stride-2 stem, then four (max-pool + conv block) stages: strides 2, 4, 8, 16, 32."""

    def __init__(self, in_channels: int = 3, channels: list[int] = ENCODER_CHANNELS) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, channels[0], kernel_size=7, stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), conv_block(c_in, c_out))
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.out_channels = list(channels)

    def forward(self, x):
        features = [self.stem(x)]  # (N, 64, H/2, W/2)
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features  # strides 2, 4, 8, 16, 32


class BaseConv(SegmentationModel):
    """Encoder-decoder without skip connections (assignment Q6, first model)."""

    def __init__(self, num_classes: int = 9, in_channels: int = 3) -> None:
        encoder = ConvEncoder(in_channels)
        super().__init__(
            encoder,
            UNetDecoder(encoder.out_channels, DECODER_CHANNELS, skips=False),
            num_classes,
            in_channels,
        )


class UNet(SegmentationModel):
    """The same encoder and decoder as :class:`BaseConv`, with skip connections (Q6)."""

    def __init__(self, num_classes: int = 9, in_channels: int = 3) -> None:
        encoder = ConvEncoder(in_channels)
        super().__init__(
            encoder,
            UNetDecoder(encoder.out_channels, DECODER_CHANNELS, skips=True),
            num_classes,
            in_channels,
        )

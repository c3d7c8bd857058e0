"""The assignment's from-scratch models: BaseConv (encoder-decoder, no skips) and UNet (skips)."""

from __future__ import annotations

from torch import nn

from .base import SegmentationModel, UNetDecoder, conv_block, conv_bn_relu

ENCODER_CHANNELS = [64, 64, 128, 256, 512]  # strides 2, 4, 8, 16, 32
DECODER_CHANNELS = [256, 128, 64, 64, 32]  # strides 16, 8, 4, 2, 1


def scaled(channels: list[int], width: float) -> list[int]:
    """Channel counts times ``width`` (at least 4 each): ``width=0.25`` gives a narrow net for
    tests and quick runs; 1.0 is the assignment's."""
    return [max(4, round(c * width)) for c in channels]


class ConvEncoder(nn.Module):
    """7x7 stride-2 stem, then four (max-pool + conv block) stages: strides 2, 4, 8, 16, 32."""

    def __init__(
        self, in_channels: int = 3, channels: list[int] = ENCODER_CHANNELS, block_depth: int = 2
    ) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, channels[0], kernel_size=7, stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), conv_block(c_in, c_out, block_depth))
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.out_channels = list(channels)

    def forward(self, x):
        features = [self.stem(x)]  # (N, 64, H/2, W/2)
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features  # strides 2, 4, 8, 16, 32


class BaseConv(SegmentationModel):
    """Encoder-decoder without skip connections (assignment Q6, first model).

    Its blocks are single conv-BN-ReLU layers, as the assignment specifies: without skips or
    residuals, the doubled blocks of :class:`UNet` make a 23-layer plain network that trains
    much more slowly (``block_depth=2`` builds it, for comparison).
    """

    def __init__(
        self, num_classes: int = 9, in_channels: int = 3, block_depth: int = 1, width: float = 1.0
    ) -> None:
        encoder = ConvEncoder(in_channels, scaled(ENCODER_CHANNELS, width), block_depth)
        super().__init__(
            encoder,
            UNetDecoder(
                encoder.out_channels,
                scaled(DECODER_CHANNELS, width),
                skips=False,
                block_depth=block_depth,
            ),
            num_classes,
            in_channels,
        )


class UNet(SegmentationModel):
    """The :class:`BaseConv` layout with skip connections and the classic UNet double conv
    blocks (Q6); ``block_depth=1`` gives BaseConv's exact encoder and decoder plus skips."""

    def __init__(
        self, num_classes: int = 9, in_channels: int = 3, block_depth: int = 2, width: float = 1.0
    ) -> None:
        encoder = ConvEncoder(in_channels, scaled(ENCODER_CHANNELS, width), block_depth)
        super().__init__(
            encoder,
            UNetDecoder(
                encoder.out_channels,
                scaled(DECODER_CHANNELS, width),
                skips=True,
                block_depth=block_depth,
            ),
            num_classes,
            in_channels,
        )

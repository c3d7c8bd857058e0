"""Mask R-CNN (torchvision's, not a re-implementation) for Penn-Fudan: the offline ImageNet
EfficientNet-Lite0 encoder, BatchNorm frozen, under torchvision's FPN; or, with
``weights="coco"``, torchvision's COCO-pretrained ``maskrcnn_resnet50_fpn`` (the tutorial's).

Inputs are [0, 1] images; MaskRCNN's own ``GeneralizedRCNNTransform`` resizes them and
normalises them with the ImageNet statistics, once (the encoder has no normaliser of its own).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNN_ResNet50_FPN_Weights, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from ..utils import SegkitError, load_torch_file
from .base import IMAGENET_MEAN, IMAGENET_STD
from .pretrained import EffNetLiteEncoder

# background + pedestrian; not constants.NUM_CLASSES (the 9 Stanford Background classes)
DETECTION_NUM_CLASSES = 2
FPN_CHANNELS = 128
# one anchor size per FPN map (strides 4, 8, 16, 32 and the max-pooled 64), three shapes each
ANCHOR_SIZE = 32  # on the stride-4 map; each coarser map doubles it: 32, 64, 128, 256, 512
FPN_LEVELS = 5
ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * FPN_LEVELS
COCO_URL = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url
WEIGHT_CHOICES = ("imagenet", "none", "coco")  # or a local file of torchvision's COCO weights


class EffNetFPN(nn.Module):
    """EfficientNet-Lite0 maps at strides 4, 8, 16, 32 (24/40/112/320 channels) under
    torchvision's ``FeaturePyramidNetwork`` with a max-pooled fifth map (stride 64).

    Encoder BatchNorm layers become timm's ``FrozenBatchNormAct2d`` (statistics and affine
    parameters fixed, activation kept): detection batches of 2 would ruin the statistics. The
    stem and the first ``frozen_stages`` block groups are frozen too (``frozen_stages=2``: all
    layers up to stride 4, the costliest to train), as torchvision freezes ResNet's first stages.

    Shape: ``(N, 3, H, W)`` normalised -> OrderedDict of 5 maps ``(N, C, H/s, W/s)``,
    ``s = 4, 8, 16, 32, 64``, ``C = out_channels``.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = "imagenet",
        channels: int = FPN_CHANNELS,
        frozen_stages: int = 2,
    ) -> None:
        super().__init__()
        self.encoder = freeze_batch_norm_2d(EffNetLiteEncoder(weights))
        body = self.encoder.body
        for module in [body.conv_stem, body.bn1, *body.blocks[:frozen_stages]]:
            module.requires_grad_(False)
        in_channels = self.encoder.out_channels[1:]  # the stride-2 map is not used
        self.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.encoder(x)[1:]  # 4 maps, strides 4..32
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _coco_state(weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """torchvision's COCO Mask R-CNN weights: downloaded (or from the torch hub cache) for
    ``"coco"``, else read from the local file ``weights``."""
    if str(weights) != "coco":
        state = load_torch_file(weights, "weights file")
        if not isinstance(state, dict) or "backbone.body.conv1.weight" not in state:
            raise SegkitError(
                f"{weights}: not torchvision's maskrcnn_resnet50_fpn weights (expected a state "
                f"dict like {os.path.basename(COCO_URL)})"
            )
        return state
    try:
        return torch.hub.load_state_dict_from_url(COCO_URL, progress=True, check_hash=True)
    except Exception as e:  # no network, proxy, hash mismatch...
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(COCO_URL)
        raise SegkitError(
            f"the COCO Mask R-CNN weights are not available offline and could not be downloaded "
            f"({type(e).__name__}); download {COCO_URL} on a machine with internet and put it at "
            f"{cache} or pass --weights /path/to/{cache.name}; or use --weights imagenet "
            "(EfficientNet-Lite0, offline)"
        ) from None


def _coco_maskrcnn(weights: str | os.PathLike | None, **kw: Any) -> MaskRCNN:
    """The tutorial's model: COCO ``maskrcnn_resnet50_fpn`` (frozen BatchNorm, 3 trainable
    stages; ``weights=None``: the architecture only), its box and mask predictors replaced for
    background + pedestrian."""
    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    model = MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=91, **kw)
    if weights is not None:
        model.load_state_dict(_coco_state(weights))
    model.roi_heads.box_predictor = FastRCNNPredictor(1024, DETECTION_NUM_CLASSES)
    model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, DETECTION_NUM_CLASSES)
    return model


def _small_mask_logits(model: MaskRCNN) -> MaskRCNN:
    """Initialise the mask logits layer with std 0.001 (as Detectron2): torchvision's kaiming
    init (fan-out of 2 channels: std 1) starts the mask BCE near 25-50 on these features."""
    layer = model.roi_heads.mask_predictor.mask_fcn_logits
    nn.init.normal_(layer.weight, std=0.001)
    nn.init.zeros_(layer.bias)
    return model


def body_label(weights: str | os.PathLike | None) -> str:
    """The backbone of a Mask R-CNN built with ``weights``, in words (tables and prose)."""
    return "EfficientNet-Lite0" if weights in (None, "none", "imagenet") else "ResNet-50"


def build_maskrcnn(
    weights: str | os.PathLike | None = "imagenet",
    *,
    min_size: int = 400,
    max_size: int = 720,
    fpn_channels: int = FPN_CHANNELS,
    rois_per_image: int = 256,
    frozen_stages: int = 2,
    anchor_size: int = ANCHOR_SIZE,
    init_weights: bool = True,
) -> MaskRCNN:
    """torchvision ``MaskRCNN`` for background + pedestrian.

    Args:
        weights: ``"imagenet"`` (EfficientNet-Lite0 encoder, offline), ``None``/``"none"``
            (from scratch), ``"coco"`` (torchvision's COCO ``maskrcnn_resnet50_fpn``; needs the
            internet or the torch hub cache) or a local file of those COCO weights.
        min_size / max_size: MaskRCNN's resize rule (short side, long side at most).
        rois_per_image: RoIs sampled per image for the box and mask heads in training (a
            quarter positive at most; torchvision's default 512).
        frozen_stages: EfficientNet block groups frozen after the stem (0 to 7).
        anchor_size: the RPN's anchor size on the stride-4 map, doubled on each coarser one.
        init_weights: False builds the architecture ``weights`` implies without reading any
            weights (a checkpoint will fill them).

    Shape: train mode ``model(images, targets) -> dict of 5 losses``; eval mode
    ``model(images) -> [{"boxes" (P, 4), "labels" (P,), "scores" (P,), "masks" (P, 1, H, W)}]``
    at each input image's size; images: list of ``(3, H, W)`` float in [0, 1].

    Example:
        >>> model = build_maskrcnn("imagenet", min_size=400)
    """
    if weights == "none":
        weights = None
    kw: dict[str, Any] = dict(
        min_size=min_size, max_size=max_size, box_batch_size_per_image=rois_per_image,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),  # the one normalisation
    )  # fmt: skip
    if weights is not None and weights != "imagenet":
        return _small_mask_logits(_coco_maskrcnn(weights if init_weights else None, **kw))
    sizes = tuple((anchor_size * 2**level,) for level in range(FPN_LEVELS))  # ((32,), ..., (512,))
    anchors = AnchorGenerator(sizes, ASPECT_RATIOS)
    backbone = EffNetFPN(weights if init_weights else None, fpn_channels, frozen_stages)
    model = MaskRCNN(
        backbone, num_classes=DETECTION_NUM_CLASSES, rpn_anchor_generator=anchors, **kw
    )
    return _small_mask_logits(model)

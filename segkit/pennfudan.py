"""Penn-Fudan pedestrians: the files, the fixed split, paired augmentation and the dataset.

Layout: ``<root>/PennFudanPed/PNGImages/<stem>.png`` (RGB) and ``PedMasks/<stem>_mask.png``
(instance ids, 0 = background). Split (fixed, documented): the 170 sorted image stems are
permuted with ``numpy.random.default_rng(0)``; the first 50 are *test*, the next 20 *val*, the
other 100 *train*. Thresholds and the checkpoint are chosen on val; test is used once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from .constants import (
    IGNORE_INDEX,
    NUM_ENERGY_LEVELS,
    PENNFUDAN_SPLIT_SEED,
    PENNFUDAN_TEST_SIZE,
    PENNFUDAN_VAL_SIZE,
    SPLITS,
)
from .data import read_image
from .energy import instance_targets, level_edges
from .utils import find_dataset_dir

PREPARE_HINT = "run `segkit data prepare-pennfudan` (official zip, checksummed) or pass --data-dir"
PAD_FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}  # padding: black, counts nowhere

InstanceTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------------------------- files
def pennfudan_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The ``PennFudanPed`` folder (with ``PedMasks/``) under data_dir, $SEGKIT_DATA or ./data."""
    try:
        return find_dataset_dir("PennFudanPed", "PedMasks", data_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}. For Penn-Fudan: {PREPARE_HINT}") from None


def list_pennfudan(root: Path) -> list[str]:
    """Image stems; every ``PNGImages/X.png`` needs ``PedMasks/X_mask.png`` and vice versa."""
    img_dir, mask_dir = root / "PNGImages", root / "PedMasks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} does not exist; {PREPARE_HINT}")
    images = {n[:-4] for n in os.listdir(img_dir) if n.endswith(".png")}
    masks = {n[: -len("_mask.png")] for n in os.listdir(mask_dir) if n.endswith("_mask.png")}
    stray = [f"PNGImages/{n}" for n in os.listdir(img_dir) if not n.endswith(".png")]
    stray += [f"PedMasks/{n}" for n in os.listdir(mask_dir) if not n.endswith("_mask.png")]
    stray = [n for n in stray if not n.split("/")[1].startswith(".")]
    problems = []
    if images - masks:
        problems.append(f"images without a PedMasks/<stem>_mask.png: {sorted(images - masks)[:5]}")
    if masks - images:
        problems.append(f"masks without a PNGImages/<stem>.png: {sorted(masks - images)[:5]}")
    if stray:
        problems.append(f"unexpected files: {sorted(stray)[:5]}")
    if problems:
        raise ValueError(f"{root}: " + "; ".join(problems))
    if not images:
        raise ValueError(f"{root}: no images in PNGImages/; {PREPARE_HINT}")
    return sorted(images)


def split_stems(
    stems: Sequence[str],
    split: str,
    seed: int = PENNFUDAN_SPLIT_SEED,
    val_size: int = PENNFUDAN_VAL_SIZE,
    test_size: int = PENNFUDAN_TEST_SIZE,
) -> list[str]:
    """The fixed seeded split: permute sorted stems; test first, then val, the rest train."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    stems = sorted(stems)
    if len(stems) <= val_size + test_size:
        raise ValueError(f"{len(stems)} images cannot hold val {val_size} + test {test_size}")
    perm = np.random.default_rng(seed).permutation(len(stems))
    part = {
        "test": perm[:test_size],
        "val": perm[test_size : test_size + val_size],
        "train": perm[test_size + val_size :],
    }[split]
    return sorted(stems[i] for i in part)


def read_instance_mask(path: Path) -> torch.Tensor:
    """Decode an instance-id PNG (mode "L" or "P", 0 = background) to uint8 (H, W)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P"):
                raise ValueError(f"{path}: mask has mode {im.mode!r}, expected 'L' or 'P'")
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot decode mask (corrupt or truncated?): {e}") from e
    if arr.size and int(arr.max()) >= IGNORE_INDEX:
        raise ValueError(f"{path}: instance id {int(arr.max())} >= {IGNORE_INDEX}")
    return torch.from_numpy(arr.copy())  # (H, W) uint8


# -------------------------------------------------------------------------- sizes, padding
def working_size(h: int, w: int, short_side: int, max_size: int) -> tuple[int, int]:
    """Resize rule: shorter side to ``short_side`` unless the longer one would pass ``max_size``."""
    s = min(short_side / min(h, w), max_size / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def resize_pair(
    image: torch.Tensor, instances: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (antialiased) image, nearest-neighbour instance map ("nearest-exact": the same
    half-pixel grid as bilinear, so the two stay aligned).

    Shape: image (3, H, W), instances (H, W) -> (3, h, w), (h, w) with (h, w) = size.
    """
    image = TF.resize(image, list(size), antialias=True)  # (3, h, w)
    instances = TF.resize(instances[None], list(size), InterpolationMode.NEAREST_EXACT)[0]
    return image, instances  # (3, h, w), (h, w)


def pad_to_multiple(
    image: torch.Tensor, instances: torch.Tensor, multiple: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right to a multiple of ``multiple``: image with 0, instances with IGNORE_INDEX.

    Shape: image (3, H, W), instances (H, W) -> (3, H', W'), (H', W'), H', W' multiples.
    """
    h, w = instances.shape
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph))  # (3, H', W')
        instances = F.pad(instances, (0, pw, 0, ph), value=IGNORE_INDEX)  # (H', W')
    return image, instances


# ---------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class InstanceAugment:
    """Paired random rescale, square crop and horizontal flip: one torchvision v2 pipeline on
    ``tv_tensors.Image`` + ``tv_tensors.Mask``, as :class:`segkit.data.Augment`.

    ``v2.RandomAffine`` rescales about the image centre by a factor drawn from ``scale`` (the
    canvas keeps its size; bilinear for the image, nearest for the instance map, both sampled
    at the same pixel centres so they stay aligned), ``v2.RandomCrop`` cuts ``crop_size``
    squares (padding with 0 / IGNORE_INDEX where the canvas is smaller, as is the area a zoom-out
    uncovers) and ``v2.RandomHorizontalFlip`` flips with ``flip_p``. One random draw serves
    the image and its instance map.

    Shape: ``(uint8 (3, H, W), uint8 (H, W)) -> (uint8 (3, c, c), uint8 (c, c))``, c = crop.

    Example:
        >>> aug = InstanceAugment(crop_size=256, scale=(0.75, 1.25), flip_p=0.5)
        >>> image, instances = aug(image, instances)
    """

    crop_size: int = 256
    scale: tuple[float, float] = (0.75, 1.25)
    flip_p: float = 0.5

    def __post_init__(self) -> None:
        if self.crop_size % 32:
            raise ValueError(f"crop_size {self.crop_size} must be a multiple of 32")

    def build(self) -> v2.Transform:
        ops: list[v2.Transform] = []
        if tuple(self.scale) != (1.0, 1.0):
            ops.append(
                v2.RandomAffine(
                    degrees=0.0,
                    scale=tuple(self.scale),
                    interpolation=InterpolationMode.BILINEAR,
                    fill=PAD_FILL,
                )
            )
        ops.append(v2.RandomCrop(self.crop_size, pad_if_needed=True, fill=PAD_FILL))
        if self.flip_p > 0:
            ops.append(v2.RandomHorizontalFlip(p=self.flip_p))
        return v2.Compose(ops)

    def __call__(
        self, image: torch.Tensor, instances: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, instances = self.build()(tv_tensors.Image(image), tv_tensors.Mask(instances))
        image = image.as_subclass(torch.Tensor).contiguous()  # (3, c, c) uint8
        return image, instances.as_subclass(torch.Tensor).contiguous()  # (c, c) uint8


# -------------------------------------------------------------------------------- dataset
class PennFudanDataset(Dataset):
    """Penn-Fudan pedestrians: ``(image float32 (3, h, w) in [0, 1], targets dict)``.

    Images are resized once (shorter side ``short_side``, longer <= ``max_size``) and kept as
    uint8; ``transform`` (e.g. :class:`InstanceAugment`) then crops/flips image and instance
    map together, or, when None, both are padded to a multiple of 32. Targets
    (:func:`segkit.energy.instance_targets`) are computed on the fly after augmentation.

    Example:
        >>> train = PennFudanDataset("train", transform=InstanceAugment(256))
        >>> image, targets = train[0]  # targets["energy"]: (256, 256) int64 levels
    """

    def __init__(
        self,
        split: str,
        data_dir: str | os.PathLike | None = None,
        transform: InstanceTransform | None = None,
        *,
        short_side: int = 256,
        max_size: int = 512,
        num_energy_levels: int = NUM_ENERGY_LEVELS,
        limit: int | None = None,
        split_seed: int = PENNFUDAN_SPLIT_SEED,
        val_size: int = PENNFUDAN_VAL_SIZE,
        test_size: int = PENNFUDAN_TEST_SIZE,
    ) -> None:
        self.root = pennfudan_dir(data_dir)
        self.split = split
        stems = split_stems(list_pennfudan(self.root), split, split_seed, val_size, test_size)
        self.stems = stems[:limit]
        self.transform = transform
        self.edges = level_edges(num_energy_levels)
        self.short_side, self.max_size = short_side, max_size
        self.sizes: list[tuple[int, int]] = []  # original (H, W)
        self._items = [self._load(i) for i in range(len(self.stems))]

    def raw(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Original-size ``(uint8 (3, H, W), uint8 (H, W) instance ids)`` read from disk."""
        stem = self.stems[i]
        image = read_image(self.root / "PNGImages" / f"{stem}.png")  # (3, H, W)
        mask = read_instance_mask(self.root / "PedMasks" / f"{stem}_mask.png")  # (H, W)
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise ValueError(
                f"PedMasks/{stem}_mask.png: size {tuple(mask.shape)} differs from "
                f"PNGImages/{stem}.png {tuple(image.shape[1:])} (H, W)"
            )
        return image, mask

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.raw(i)
        self.sizes.append((int(mask.shape[0]), int(mask.shape[1])))
        return resize_pair(image, mask, working_size(*mask.shape, self.short_side, self.max_size))

    def __len__(self) -> int:
        return len(self.stems)

    def resized(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Working-size, un-augmented ``(uint8 (3, h, w), uint8 (h, w))``."""
        return self._items[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, instances = self._items[i]  # (3, h, w), (h, w) uint8
        if self.transform is not None:
            image, instances = self.transform(image, instances)
        else:
            image, instances = pad_to_multiple(image, instances)
        return image.float().div_(255), instance_targets(instances.numpy(), self.edges)

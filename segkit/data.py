"""Stanford Background (course layout) as a PyTorch dataset, with paired crop + flip augmentation.

Layout: ``<root>/sbd/classes.txt`` and ``<root>/sbd/{train,val,test}/img_NNNN.{jpg,png}`` (RGB JPEG,
"P"-mode label PNG, 288 wide x 224 high, labels 0..8). Images are decoded once into uint8 tensors
(``preload=True``), so the per-step cost is the augmentation only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .constants import IMAGE_SIZE, NUM_CLASSES, SPLITS
from .sources import check_split_folder
from .utils import find_dataset_dir, seed_worker

Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Augment:
    """Paired augmentation settings: random resized crop back to ``size`` and horizontal flip.

    ``scale=None`` disables the crop, ``flip_p=0`` the flip. One random draw serves the image and
    its mask (torchvision v2 transforms both together); masks are resampled nearest-neighbour.

    Example:
        >>> ds = SegmentationDataset("train", transform=Augment(scale=(0.8, 1.0), flip_p=0.5))
    """

    scale: tuple[float, float] | None = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    size: tuple[int, int] = IMAGE_SIZE

    def build(self) -> v2.Transform:
        ops: list[v2.Transform] = []
        if self.scale is not None:
            ops.append(
                v2.RandomResizedCrop(self.size, scale=self.scale, ratio=self.ratio, antialias=True)
            )
        if self.flip_p > 0:
            ops.append(v2.RandomHorizontalFlip(p=self.flip_p))
        return v2.Compose(ops) if ops else v2.Identity()

    def __call__(self, image: tv_tensors.Image, mask: tv_tensors.Mask):
        return self.build()(image, mask)

    @property
    def name(self) -> str:
        crop = "nocrop" if self.scale is None else f"crop{self.scale[0]:g}-{self.scale[1]:g}"
        return f"{crop}_flip{self.flip_p:g}"


NO_AUGMENT = Augment(scale=None, flip_p=0.0)


def read_image(path: Path) -> torch.Tensor:
    """Decode an RGB image to uint8 (3, H, W); a corrupt or truncated file raises, naming it."""
    try:
        with Image.open(path) as im:
            im.load()  # forces the full decode, so truncation is caught here
            arr = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot decode image (corrupt or truncated?): {e}") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (3, H, W) uint8


def read_label(path: Path, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Decode a label PNG ("P" or "L" mode) to uint8 (H, W); every value must be < num_classes."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path}: label map has mode {im.mode!r}, expected 'P' or 'L'")
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot decode label map (corrupt or truncated?): {e}") from e
    if arr.size and int(arr.max()) >= num_classes:
        bad = sorted(int(v) for v in np.unique(arr[arr >= num_classes]))[:5]
        raise ValueError(f"{path}: label values {bad} outside 0..{num_classes - 1}")
    return torch.from_numpy(arr.copy())  # (H, W) uint8


def list_split(split_dir: Path) -> list[str]:
    """Stems ``img_NNNN`` of a split folder, checked by :func:`segkit.sources.check_split_folder`
    (the same rule ``segkit data verify`` applies)."""
    return check_split_folder(split_dir, split_dir.name)


def sbd_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The course-layout folder (with ``classes.txt``) under data_dir / $SEGKIT_DATA / ./data."""
    return find_dataset_dir("sbd", "classes.txt", data_dir)


class SegmentationDataset(Dataset):
    """Stanford Background, course layout.

    Items: ``(image float32 (3, 224, 288) in [0, 1], mask int64 (224, 288))``.

    Args:
        split: "train", "val" or "test".
        data_dir: the ``sbd`` folder or a root holding ``sbd/``; default $SEGKIT_DATA, then ./data.
        transform: an :class:`Augment`, any callable ``(Image, Mask) -> (image, mask)`` on
            ``tv_tensors``, or None.
        preload: decode everything once into uint8 tensors (fast epochs, ~0.2 MB per image).
        limit: keep only the first ``limit`` images (quick runs, tests).
        progress: show a progress bar while preloading.
    """

    def __init__(
        self,
        split: str,
        data_dir: str | os.PathLike | None = None,
        transform: Augment | Transform | None = None,
        preload: bool = True,
        limit: int | None = None,
        progress: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        self.root = sbd_dir(data_dir)
        self.split = split
        self.classes = self._read_classes(self.root / "classes.txt")
        self.stems = list_split(self.root / split)[:limit]
        self.transform = transform.build() if isinstance(transform, Augment) else transform
        self._images: list[torch.Tensor] | None = None
        self._masks: list[torch.Tensor] | None = None
        if preload:
            ids = tqdm(
                range(len(self.stems)), desc=f"load {split}", leave=False, disable=not progress
            )
            pairs = [self._load(i) for i in ids]
            self._images = [p[0] for p in pairs]
            self._masks = [p[1] for p in pairs]

    @staticmethod
    def _read_classes(path: Path) -> list[str]:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) != NUM_CLASSES:
            raise ValueError(f"{path}: expected {NUM_CLASSES} class names, found {len(names)}")
        return names

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        stem = self.root / self.split / self.stems[i]
        image = read_image(stem.with_suffix(".jpg"))  # (3, H, W) uint8
        mask = read_label(stem.with_suffix(".png"), len(self.classes))  # (H, W) uint8
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise ValueError(
                f"{stem}.png: label size {tuple(mask.shape)} differs from image size "
                f"{tuple(image.shape[1:])} (H, W)"
            )
        return image, mask

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the split's images (the first one's; the course images all share it)."""
        return tuple(self.raw(0)[0].shape[1:])  # type: ignore[return-value]

    def raw(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-augmented ``(uint8 (3, H, W), uint8 (H, W))`` pair."""
        if self._images is not None and self._masks is not None:
            return self._images[i], self._masks[i]
        return self._load(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.raw(i)
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        image = image.as_subclass(torch.Tensor).float().div_(255)  # (3, H, W) float32 in [0, 1]
        return image, mask.as_subclass(torch.Tensor).long()  # (H, W) int64


def label_counts(dataset: SegmentationDataset) -> torch.Tensor:
    """Pixel count per class over the un-augmented labels of ``dataset``: (num_classes,) int64."""
    counts = torch.zeros(len(dataset.classes), dtype=torch.int64)
    for i in range(len(dataset)):
        counts += torch.bincount(dataset.raw(i)[1].flatten().long(), minlength=len(counts))
    return counts


def split_label_counts(split: str, data_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Pixel count per class over every label map of a split (labels only, no images decoded):
    (NUM_CLASSES,) int64."""
    root = sbd_dir(data_dir)
    counts = torch.zeros(NUM_CLASSES, dtype=torch.int64)
    for stem in list_split(root / split):
        labels = read_label(root / split / f"{stem}.png")  # (H, W) uint8
        counts += torch.bincount(labels.flatten().long(), minlength=NUM_CLASSES)
    return counts


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    collate_fn: Callable | None = None,
) -> DataLoader:
    """A DataLoader with a seeded generator (reproducible shuffles and augmentations).

    ``num_workers=None`` picks by device: on CUDA worker processes (up to 8) augment the next
    batches into pinned memory while the GPU trains, so the data pipeline does not starve it; on
    the CPU the main process augments (workers would compete with the training threads).
    ``collate_fn``: e.g. lists for detection samples of different sizes.
    """
    cuda = torch.device(device).type == "cuda"
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if cuda else 0
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=g,
        worker_init_fn=seed_worker,
        pin_memory=cuda,
        persistent_workers=num_workers > 0,
        drop_last=False,
        collate_fn=collate_fn,
    )

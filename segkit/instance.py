"""Detection-free instance segmentation in the manner of the Deep Watershed Transform (Bai &
Urtasun, CVPR 2017) on Penn-Fudan: a UNet with a semantic head and a quantised-energy head,
the DWT energy loss, and the ``segkit instance`` runs. The watershed post-processing, mask AP
and the val/test evaluation live in :mod:`segkit.instance_metrics` (re-exported here).

Penn-Fudan split (fixed, documented): the 170 sorted image stems are permuted with
``numpy.random.default_rng(0)``; the first 50 are *test*, the next 20 *val*, the other 100
*train*. Thresholds and the checkpoint are chosen on val; test is used once for the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from scipy import ndimage as ndi
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .data import make_loader, read_image
from .instance_metrics import (  # noqa: F401  (post-processing and evaluation, re-exported)
    POSTPROCESS_GRID,
    InstanceEvaluator,
    evaluate_instance_run,
    evaluate_maps,
    expected_energy,
    load_instance_run,
    predict_maps,
    remove_small,
    score_instances,
    tune_postprocessing,
    watershed_from_maps,
    watershed_instances,
)
from .utils import find_dataset_dir, get_device, seed_everything

IGNORE_INDEX = 255  # padding in instance maps (not a pedestrian, not background)
NUM_ENERGY_LEVELS = 16  # K, as in the DWT paper
MAX_DISTANCE = 32.0  # px at working size where the top level starts (~half a pedestrian's width)
SPLIT_SEED, VAL_SIZE, TEST_SIZE = 0, 20, 50
SPLITS = ("train", "val", "test")
PREPARE_HINT = "run `segkit data prepare-pennfudan` (official zip, checksummed) or pass --data-dir"

InstanceTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------------- data
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
    seed: int = SPLIT_SEED,
    val_size: int = VAL_SIZE,
    test_size: int = TEST_SIZE,
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


def working_size(h: int, w: int, short_side: int, max_size: int) -> tuple[int, int]:
    """Resize rule: shorter side to ``short_side`` unless the longer one would pass ``max_size``."""
    s = min(short_side / min(h, w), max_size / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def resize_pair(image: torch.Tensor, instances: torch.Tensor, size: tuple[int, int]):
    """Bilinear (antialiased) image, nearest-neighbour instance map ("nearest-exact": the same
    half-pixel grid as bilinear, so the two stay aligned). Shape: (3, H, W), (H, W)."""
    image = TF.resize(image, list(size), antialias=True)
    instances = TF.resize(instances[None], list(size), InterpolationMode.NEAREST_EXACT)[0]
    return image, instances


def pad_to_multiple(image: torch.Tensor, instances: torch.Tensor, multiple: int = 32):
    """Pad bottom/right to a multiple of ``multiple``: image with 0, instances with IGNORE_INDEX."""
    h, w = instances.shape
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph))
        instances = F.pad(instances, (0, pw, 0, ph), value=IGNORE_INDEX)
    return image, instances


class InstanceAugment:
    """Paired random rescale, crop (padding with IGNORE_INDEX when needed) and horizontal flip.

    One draw from torch's global RNG serves the image and its instance map (nearest for masks).
    Shape: ``(uint8 (3, H, W), uint8 (H, W)) -> (uint8 (3, h, w), uint8 (h, w))``, h, w = crop.
    """

    def __init__(
        self, crop_size: int = 256, scale: tuple[float, float] = (0.75, 1.25), flip_p: float = 0.5
    ) -> None:
        if crop_size % 32:
            raise ValueError(f"crop_size {crop_size} must be a multiple of 32")
        self.crop_size, self.scale, self.flip_p = crop_size, scale, flip_p

    def __call__(self, image: torch.Tensor, instances: torch.Tensor):
        s = float(torch.empty(()).uniform_(*self.scale))
        h, w = instances.shape
        if s != 1.0:
            image, instances = resize_pair(image, instances, (round(h * s), round(w * s)))
        c = self.crop_size
        h, w = instances.shape
        if h < c or w < c:
            ph, pw = max(0, c - h), max(0, c - w)
            image = F.pad(image, (0, pw, 0, ph))
            instances = F.pad(instances, (0, pw, 0, ph), value=IGNORE_INDEX)
            h, w = instances.shape
        y = int(torch.randint(0, h - c + 1, ()))
        x = int(torch.randint(0, w - c + 1, ()))
        image, instances = image[:, y : y + c, x : x + c], instances[y : y + c, x : x + c]
        if float(torch.rand(())) < self.flip_p:
            image, instances = image.flip(-1), instances.flip(-1)
        return image.contiguous(), instances.contiguous()


def distance_to_boundary(instances: np.ndarray) -> np.ndarray:
    """Per-instance Euclidean distance to the nearest pixel outside the instance.

    Other instances, background and the image border all count as boundary, so touching
    instances get separate basins. Computed per instance on its padded bounding box.

    Shape: instances (H, W) int (0 = background); returns (H, W) float32, 0 on background.
    """
    dist = np.zeros(instances.shape, np.float32)
    for i, box in enumerate(ndi.find_objects(instances), start=1):
        if box is None:
            continue
        inside = instances[box] == i
        d = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        dist[box][inside] = d[inside]
    return dist


def level_edges(num_levels: int = NUM_ENERGY_LEVELS, max_distance: float = MAX_DISTANCE):
    """``K - 1`` distance edges (px): 2, 3, ..., 8, then geometric up to ``max_distance``.

    Level 0 is the one-pixel boundary ring; levels are finest next to the boundary, where
    touching instances must be split, and coarse in the interior (as in the DWT paper's K=16).
    """
    n = num_levels - 1
    lin = np.arange(2.0, 2.0 + min(n, 7))
    return np.concatenate([lin, np.geomspace(lin[-1], max_distance, n - len(lin) + 1)[1:]])


def quantise_distance(dist: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Energy level = number of edges <= distance (0..K-1); background is level 0.

    Shape: dist (H, W) float; returns (H, W) int64.
    """
    return np.searchsorted(edges, dist, side="right").astype(np.int64)


def instance_targets(instances: torch.Tensor | np.ndarray, edges: np.ndarray) -> dict:
    """Training targets from one instance map (IGNORE_INDEX marks padding).

    Shape:
        instances: (H, W) int. Returns a dict of (H, W) tensors: ``instances`` int64 (padding 0),
        ``semantic`` float32 {0, 1}, ``distance`` float32, ``energy`` int64 level,
        ``weight`` float32 = 1 / sqrt(instance area) on instance pixels, 0 elsewhere,
        ``valid`` float32 (0 on padding).
    """
    inst = np.asarray(instances).astype(np.int64)
    valid = inst != IGNORE_INDEX
    inst = np.where(valid, inst, 0)
    dist = distance_to_boundary(inst)
    area = np.bincount(inst.ravel())[inst].astype(np.float32)  # (H, W) area of own instance
    weight = np.where(inst > 0, 1.0 / np.sqrt(np.maximum(area, 1)), 0.0).astype(np.float32)
    return {
        "instances": torch.from_numpy(inst),
        "semantic": torch.from_numpy((inst > 0).astype(np.float32)),
        "distance": torch.from_numpy(dist),
        "energy": torch.from_numpy(quantise_distance(dist, edges)),
        "weight": torch.from_numpy(weight),
        "valid": torch.from_numpy(valid.astype(np.float32)),
    }


class PennFudanDataset(Dataset):
    """Penn-Fudan pedestrians: ``(image float32 (3, h, w) in [0, 1], targets dict)``.

    Images are resized once (shorter side ``short_side``, longer <= ``max_size``) and kept as
    uint8; ``transform`` (e.g. :class:`InstanceAugment`) then crops/flips image and instance
    map together, or, when None, both are padded to a multiple of 32. Targets
    (:func:`instance_targets`) are computed on the fly after augmentation.

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
        split_seed: int = SPLIT_SEED,
        val_size: int = VAL_SIZE,
        test_size: int = TEST_SIZE,
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
        image = read_image(self.root / "PNGImages" / f"{stem}.png")
        mask = read_instance_mask(self.root / "PedMasks" / f"{stem}_mask.png")
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise ValueError(
                f"PedMasks/{stem}_mask.png: size {tuple(mask.shape)} differs from "
                f"PNGImages/{stem}.png {tuple(image.shape[1:])} (H, W)"
            )
        return image, mask

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.raw(i)
        self.sizes.append(tuple(mask.shape))
        return resize_pair(image, mask, working_size(*mask.shape, self.short_side, self.max_size))

    def __len__(self) -> int:
        return len(self.stems)

    def resized(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Working-size, un-augmented ``(uint8 (3, h, w), uint8 (h, w))``."""
        return self._items[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image, instances = self._items[i]
        if self.transform is not None:
            image, instances = self.transform(image, instances)
        else:
            image, instances = pad_to_multiple(image, instances)
        return image.float().div_(255), instance_targets(instances.numpy(), self.edges)


# ---------------------------------------------------------------------------------- model
class InstanceUNet(nn.Module):
    """UNet body with a semantic head (1 logit) and an energy head (K quantised levels).

    The energy is *classified* into K = 16 DWT levels, not regressed: the level-weighted
    cross-entropy concentrates on the few levels next to boundaries, which are what split
    touching pedestrians, and the softmax's expected level is a smooth watershed relief.
    Both heads are the body's 1x1 ``head`` with 1 + K outputs, so ``forward`` keeps segkit's
    contract (one logits tensor); :func:`split_logits` separates them.

    Shape: images (N, 3, H, W) in [0, 1], H, W multiples of 32 -> logits (N, 1 + K, H, W).
    """

    def __init__(
        self,
        body: str = "effnet_unet",
        num_energy_levels: int = NUM_ENERGY_LEVELS,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        from .models import create_model  # late: the registry imports this module

        self.body = create_model(body, 1 + num_energy_levels, weights)
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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)  # (N, 1 + K, H, W)


def instance_unet(
    num_classes: int = 1 + NUM_ENERGY_LEVELS, weights: str | None = None, body: str = "effnet_unet"
) -> InstanceUNet:
    """Registry entry: ``num_classes`` = 1 semantic + K energy channels."""
    return InstanceUNet(body, num_classes - 1, weights)


def split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape: (N, 1 + K, H, W) -> semantic (N, 1, H, W), energy (N, K, H, W)."""
    return logits[:, :1], logits[:, 1:]


# ----------------------------------------------------------------------------------- loss
def default_level_weights(num_levels: int = NUM_ENERGY_LEVELS) -> torch.Tensor:
    """w_k: 3, 3, 3, 2 for the levels nearest the boundary (mistakes there merge instances), 1
    above, as in public DWT implementations. Shape: (K,)."""
    w = torch.ones(num_levels)
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
    c_p = ``weight`` = 1 / sqrt(area of p's instance) on object pixels, 0 elsewhere (so the loss
    is restricted to the semantic mask and small instances count as much as large ones).

    Shape: energy_logits (N, K, H, W); energy (N, H, W) int64; weight (N, H, W) float.
    """
    num_levels = energy_logits.shape[1]
    w = default_level_weights(num_levels) if level_weights is None else level_weights
    w = w.to(energy_logits.device, torch.float32).view(1, -1, 1, 1)
    logp = F.log_softmax(energy_logits.float(), dim=1)  # (N, K, H, W)
    log1mp = torch.log((1 - logp.exp()).clamp_min(eps))  # (N, K, H, W)
    onehot = F.one_hot(energy.clamp(0, num_levels - 1), num_levels).permute(0, 3, 1, 2)
    per_pixel = -(w * torch.where(onehot.bool(), logp, log1mp)).sum(1)  # (N, H, W)
    return (weight * per_pixel).sum() / weight.sum().clamp_min(eps)


def dwt_loss(
    logits: torch.Tensor,
    targets: dict,
    energy_weight: float = 1.0,
    level_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE-with-logits of the semantic head on valid pixels + ``energy_weight`` x
    :func:`dwt_energy_loss`. Shape: logits (N, 1 + K, H, W); targets as :func:`instance_targets`
    (batched)."""
    sem, energy = split_logits(logits.float())
    valid = targets["valid"]
    bce = F.binary_cross_entropy_with_logits(sem[:, 0], targets["semantic"], reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp_min(1)
    return bce + energy_weight * dwt_energy_loss(
        energy, targets["energy"], targets["weight"], level_weights
    )


class DWTLoss(nn.Module):
    """``criterion(logits, targets)`` wrapper of :func:`dwt_loss`."""

    def __init__(self, energy_weight: float = 1.0, level_weights: torch.Tensor | None = None):
        super().__init__()
        self.energy_weight, self.level_weights = energy_weight, level_weights

    def forward(self, logits: torch.Tensor, targets: dict) -> torch.Tensor:
        return dwt_loss(logits, targets, self.energy_weight, self.level_weights)


# ------------------------------------------------------------------------------ runs, CLI
MASK_RCNN_REFERENCE = {
    "model": "torchvision tutorial Mask R-CNN ResNet-50-FPN, COCO-pretrained, 10 epochs",
    "mask_ap": 0.761,
    "note": "its own random 50-image test split; COCO mask AP at original resolution",
}
PREVIEW_COUNT = 5


@dataclass
class InstanceConfig:
    """One instance-segmentation run; saved in the checkpoint and in every results file."""

    # model
    body: str = "effnet_unet"  # "effnet_unet" (ImageNet encoder, offline) | "unet" (scratch)
    weights: str | None = "imagenet"  # None for "unet"
    num_energy_levels: int = NUM_ENERGY_LEVELS
    # data
    data_dir: str | None = None
    short_side: int = 256
    max_size: int = 512
    crop_size: int = 256
    scale: tuple[float, float] = (0.75, 1.25)
    flip_p: float = 0.5
    batch_size: int = 4
    limit_train: int | None = None
    limit_val: int | None = None
    limit_test: int | None = None
    split_seed: int = SPLIT_SEED
    val_size: int = VAL_SIZE
    test_size: int = TEST_SIZE
    # optimisation
    epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    energy_weight: float = 1.0
    # post-processing defaults (``train`` tunes them on val and writes postprocess.json)
    sem_threshold: float = 0.5
    core_level: float = 3.0
    min_size: int = 200
    # system
    device: str = "auto"
    num_threads: int | None = None
    seed: int = 0
    out_dir: str = "runs/instance"

    @classmethod
    def from_dict(cls, d: dict) -> InstanceConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        )

    def dataset(
        self, split: str, transform: InstanceTransform | None = None, data_dir: str | None = None
    ) -> PennFudanDataset:
        limit = {"train": self.limit_train, "val": self.limit_val, "test": self.limit_test}
        return PennFudanDataset(
            split,
            data_dir or self.data_dir,
            transform,
            short_side=self.short_side,
            max_size=self.max_size,
            num_energy_levels=self.num_energy_levels,
            limit=limit[split],
            split_seed=self.split_seed,
            val_size=self.val_size,
            test_size=self.test_size,
        )


def _optimizer(cfg: InstanceConfig, model: nn.Module, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, min(cfg.warmup_steps, steps // 10))

    def factor(step: int) -> float:  # linear warmup, then cosine to 0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def save_instance_figures(
    run_dir: Path, split: str, dataset: PennFudanDataset, maps: list, preds: list[np.ndarray]
) -> None:
    """instances_<split>.png (image / GT / prediction) and energy_<split>.png, first 5 images."""
    import matplotlib.pyplot as plt

    from . import viz

    ids = list(range(min(PREVIEW_COUNT, len(dataset))))
    raws = [dataset.raw(i) for i in ids]
    titles = [dataset.stems[i] for i in ids]
    fig = viz.show_instances(
        [r[0] for r in raws], [r[1] for r in raws], [preds[i] for i in ids], titles=titles
    )
    fig.savefig(run_dir / f"instances_{split}.png", dpi=100, bbox_inches="tight")
    fig = viz.show_energy(
        [r[0] for r in raws],
        [maps[i][0] for i in ids],
        [maps[i][1] for i in ids],
        [preds[i] for i in ids],
        titles=titles,
    )
    fig.savefig(run_dir / f"energy_{split}.png", dpi=100, bbox_inches="tight")
    plt.close("all")


def train_instance(
    cfg: InstanceConfig,
    *,
    progress: bool = True,
    figures: bool = True,
    grid: dict[str, tuple] | None = None,
) -> dict:
    """Train on train, pick the checkpoint (val loss) and watershed thresholds (val AP over
    ``grid``, default ``POSTPROCESS_GRID``), and write ``<out_dir>/``: checkpoint.pt,
    history.json, postprocess.json, results_val.json, loss_curve.png, instances_val.png,
    energy_val.png. Returns the val results."""
    from .experiment import hardware, write_json
    from .train import train

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_set = cfg.dataset("train", InstanceAugment(cfg.crop_size, cfg.scale, cfg.flip_p))
    val_set = cfg.dataset("val")
    train_loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_loader = make_loader(val_set, 1, shuffle=False)  # sizes differ between images
    model = InstanceUNet(cfg.body, cfg.num_energy_levels, cfg.weights)
    optimizer, scheduler = _optimizer(cfg, model, cfg.epochs * len(train_loader))
    t0 = time.perf_counter()
    model, history = train(
        model,
        optimizer,
        DWTLoss(cfg.energy_weight),
        train_loader,
        device,
        scheduler,
        epochs=cfg.epochs,
        valloader=val_loader,
        save_path=run_dir / "checkpoint.pt",
        select_metric="val_loss",
        config=dataclasses.asdict(cfg),
        progress=progress,
    )
    train_seconds = time.perf_counter() - t0
    maps = predict_maps(model, val_set, device)
    gts = [val_set.raw(i)[1].numpy() for i in range(len(val_set))]
    params, table = tune_postprocessing(maps, gts, grid or POSTPROCESS_GRID)
    metrics, preds = evaluate_maps(maps, gts, **params)
    write_json(
        {"selected_on": "val", "params": params, "grid": table}, run_dir / "postprocess.json"
    )
    out = {
        "run": run_dir.name,
        "split": "val",
        "stems": val_set.stems,
        "config": dataclasses.asdict(cfg),
        "epochs_run": len(history["epoch"]),
        "best_epoch": history["best_epoch"],
        "train_seconds": train_seconds,
        "hardware": hardware(),
        "postprocess": params,
        "metrics": metrics,
    }
    write_json(history, run_dir / "history.json")
    write_json(out, run_dir / "results_val.json")
    if figures:
        from . import viz

        viz.plot_history(history).savefig(run_dir / "loss_curve.png", dpi=100, bbox_inches="tight")
        save_instance_figures(run_dir, "val", val_set, maps, preds)
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    over = {
        k: v
        for k, v in dict(
            epochs=args.epochs,
            body=args.body,
            device=args.device,
            out_dir=args.out,
            data_dir=args.data_dir,
            num_threads=args.threads,
        ).items()
        if v is not None
    }
    if args.quick:
        over = {"epochs": 1, "limit_train": 8, "limit_val": 4, "limit_test": 4, **over}
    if over.get("body") == "unet":
        over["weights"] = None
    out = train_instance(InstanceConfig(**over))
    m = out["metrics"]
    print(
        f"instance ({out['config']['body']}): val mask AP {m['ap']:.3f}  AP50 {m['ap50']:.3f}"
        f"  AP75 {m['ap75']:.3f}  best-match IoU {m['mean_best_iou']:.3f}  "
        f"({out['train_seconds'] / 60:.1f} min) -> {out['config']['out_dir']}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    out = evaluate_instance_run(args.run, args.split, args.device, args.data_dir)
    m = out["metrics"]
    print(
        f"{args.run} on {args.split}: mask AP {m['ap']:.3f}  AP50 {m['ap50']:.3f}  "
        f"AP75 {m['ap75']:.3f}  best-match IoU {m['mean_best_iou']:.3f}  "
        f"(Mask R-CNN reference {MASK_RCNN_REFERENCE['mask_ap']})"
    )
    return 0


def add_instance_subparser(subparsers: argparse._SubParsersAction) -> None:
    """``segkit instance train|evaluate`` (Penn-Fudan, Deep-Watershed-style)."""
    p = subparsers.add_parser("instance", help="instance segmentation on Penn-Fudan (DWT)")
    sub = p.add_subparsers(dest="instance_command", required=True)
    t = sub.add_parser("train", help="train, then tune the watershed on val")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--body", choices=["effnet_unet", "unet"], default=None)
    t.add_argument("--device", default=None)
    t.add_argument("--out", default=None, help="run folder (default runs/instance)")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--quick", action="store_true", help="1 epoch on 8 images (smoke test)")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="evaluate a run folder (test: the reported numbers)")
    e.add_argument("run")
    e.add_argument("--split", default="test", choices=list(SPLITS))
    e.add_argument("--device", default="auto")
    e.add_argument("--data-dir", default=None)
    e.set_defaults(func=_cmd_evaluate)

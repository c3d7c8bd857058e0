"""Tiny fake datasets in the exact on-disk layouts segkit reads, for tests and CI without the data.

``make_sbd`` writes the Stanford Background course layout, ``make_pennfudan`` the Penn-Fudan one,
``make_all`` both; ``python -m segkit.synthetic ROOT`` does the same from a shell. Each dataset
folder gets a ``SYNTHETIC`` marker file, so loaders can tell it from the real data.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .constants import (
    CLASSES,
    IMAGE_SIZE,
    JPEG_QUALITY,
    PALETTE,
    PENNFUDAN_TEST_SIZE,
    PENNFUDAN_VAL_SIZE,
    SPLITS,
    SYNTHETIC_MARKER,
)

MARKER = SYNTHETIC_MARKER  # beside sbd/classes.txt and in PennFudanPed/; segkit.sources reads it
MARKER_TEXT = (
    "Synthetic data written by segkit.synthetic (not the real dataset): split sizes and image "
    "ids differ from the course lists, so loaders skip that check here.\n"
)
SBD_SIZES = {"train": 24, "val": 8, "test": 8}
# 90 images keep the default Penn-Fudan split (test 50, val 20) with 20 left for train, so
# `reproduce --quick` and the notebook run on it with InstanceConfig's defaults.
PENNFUDAN_N = PENNFUDAN_TEST_SIZE + PENNFUDAN_VAL_SIZE + 20
HALF_WIDTH = 0.16  # of a synthetic pedestrian, as a fraction of its height
SKY, TREE, ROAD, GRASS, WATER, BUILDING, MOUNTAIN, FOREGROUND, MISC = range(len(CLASSES))


# ---------------------------------------------------------------------------------- helpers
def _prepare(folder: Path) -> None:
    """Create ``folder`` with its marker; an existing synthetic folder is replaced, a real one
    (no marker) is never touched."""
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise FileExistsError(f"{folder} exists and is not synthetic (no {MARKER} file)")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(MARKER_TEXT)


def _noisy(colors: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """uint8 image from float colours (H, W, 3) plus Gaussian pixel noise."""
    noise = rng.standard_normal(colors.shape, dtype=np.float32) * sigma
    return np.clip(colors + noise, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------ Stanford Background
def draw_scene(
    rng: np.random.Generator, size: tuple[int, int] = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """One outdoor-like scene: sky (maybe mountains) above a random horizon, ground below
    (grass or road, maybe water), buildings and trees on the horizon, foreground objects
    standing on the ground, sometimes a small misc patch. Every class has its own colour (the
    course PALETTE) with per-image jitter and pixel noise, so colour and layout both carry signal.

    Shape: returns image uint8 (H, W, 3) and labels uint8 (H, W), values 0..8; (H, W) = size.
    """
    h, w = size
    horizon = int(rng.uniform(0.35, 0.6) * h)
    labels = Image.new("L", (w, h), SKY)
    draw = ImageDraw.Draw(labels)
    if rng.random() < 0.5:  # a ridge of mountains rising from the horizon
        xs = np.linspace(0, w, int(rng.integers(3, 7)))
        ys = horizon - rng.uniform(0.1, 0.3, len(xs)) * h
        ridge = list(zip(xs.tolist(), ys.tolist(), strict=True))
        draw.polygon([(0, horizon), *ridge, (w, horizon)], fill=MOUNTAIN)
    draw.rectangle([0, horizon, w, h], fill=int(rng.choice([GRASS, ROAD])))
    if rng.random() < 0.3:  # a lake band just below the horizon
        draw.rectangle([0, horizon, w, horizon + int(rng.uniform(0.08, 0.2) * h)], fill=WATER)
    if rng.random() < 0.5:  # a road narrowing towards the horizon
        cx, half = rng.uniform(0.3, 0.7) * w, rng.uniform(0.2, 0.45) * w
        draw.polygon([(cx - half, h), (cx + half, h), (cx + 8, horizon), (cx - 8, horizon)], ROAD)
    for _ in range(int(rng.integers(0, 4))):  # buildings standing on the horizon
        x0, bw, bh = rng.uniform(0, w - 20), rng.uniform(25, 80), rng.uniform(0.15, 0.4) * h
        draw.rectangle([x0, horizon - bh, x0 + bw, horizon + 4], fill=BUILDING)
    for _ in range(int(rng.integers(0, 4))):  # tree crowns around the horizon
        cx, r = rng.uniform(0, w), rng.uniform(12, 35)
        draw.ellipse([cx - r, horizon - 2.2 * r, cx + r, horizon + 0.2 * r], fill=TREE)
    for _ in range(int(rng.integers(1, 4))):  # upright foreground objects on the ground
        fh = rng.uniform(0.2, 0.5) * h
        bottom = rng.uniform(horizon + 0.5 * (h - horizon), h + 10)
        cx, fw = rng.uniform(0, w), fh * rng.uniform(0.3, 0.7)
        draw.ellipse([cx - fw / 2, bottom - fh, cx + fw / 2, bottom], fill=FOREGROUND)
    if rng.random() < 0.3:  # a small misc patch anywhere
        x0, y0 = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
        draw.rectangle([x0, y0, x0 + rng.uniform(8, 20), y0 + rng.uniform(8, 20)], fill=MISC)
    labels = np.asarray(labels)  # (H, W) uint8

    colors = np.asarray(PALETTE, np.float64) + rng.normal(0.0, 12.0, (len(PALETTE), 3))
    shade = np.linspace(1.1, 0.9, h)[:, None, None]  # mild vertical lighting gradient
    image = _noisy(colors[labels] * shade, rng, sigma=10.0)  # (H, W, 3)
    return image, labels


def make_sbd(
    root: Path,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    image_size: tuple[int, int] = IMAGE_SIZE,
) -> Path:
    """Write a synthetic Stanford Background in the course layout under ``root``.

    Files: ``<root>/sbd/classes.txt``, ``<root>/sbd/SYNTHETIC`` and
    ``<root>/sbd/{train,val,test}/img_NNNN.jpg`` (RGB, 288 x 224) with ``img_NNNN.png`` ("P"
    mode, values 0..8). ``sizes`` overrides the images per split (default train 24, val 8,
    test 8). Deterministic in ``seed``. Returns the ``sbd`` folder.

    Example:
        >>> make_sbd(tmp_path)
        >>> SegmentationDataset("train", data_dir=tmp_path)
    """
    unknown = set(sizes or {}) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; choose from {SPLITS}")
    sizes = {**SBD_SIZES, **(sizes or {})}
    folder = Path(root) / "sbd"
    _prepare(folder)
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    palette = [v for rgb in PALETTE for v in rgb]
    for s, split in enumerate(SPLITS):
        (folder / split).mkdir()
        for i in range(sizes[split]):
            image, labels = draw_scene(np.random.default_rng((seed, s, i)), image_size)
            Image.fromarray(image).save(folder / split / f"img_{i:04d}.jpg", quality=JPEG_QUALITY)
            label = Image.fromarray(labels)
            label.putpalette(palette)  # "L" -> "P", indices unchanged
            label.save(folder / split / f"img_{i:04d}.png")
    return folder


# ---------------------------------------------------------------------------------- Penn-Fudan
def _pedestrian(draw: ImageDraw.ImageDraw, x: float, foot: float, height: float, fill: int) -> None:
    """Head, torso and two legs of an upright figure with feet at ``foot``, centred on ``x``."""
    width = 2 * HALF_WIDTH * height
    head = 0.09 * height
    top = foot - height
    draw.ellipse([x - head, top, x + head, top + 2 * head], fill=fill)
    draw.rounded_rectangle(
        [x - width / 2, top + 1.8 * head, x + width / 2, foot - 0.42 * height], 0.1 * width, fill
    )
    for side in (-1, 1):  # legs with a gap between them
        x0 = x + side * 0.04 * width
        x1 = x + side * 0.42 * width
        draw.rectangle([min(x0, x1), foot - 0.45 * height, max(x0, x1), foot], fill=fill)


def draw_pedestrians(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One street-like image with 1..4 upright pedestrians of varying size, some side by side
    and touching; nearer ones (lower feet) occlude farther ones. Each pedestrian has a skin-tone
    head, its own clothing colour and a dark outline; the background is low-saturation.

    Shape: returns image uint8 (H, W, 3) and instance ids uint8 (H, W), 0 = background, ids
    1..k consecutive; H, W in about 300..420.
    """
    h, w = int(rng.integers(320, 421)), int(rng.integers(300, 401))
    people: list[tuple[float, float, float]] = []  # (x, foot, height)
    for _ in range(int(rng.integers(1, 5))):
        height = rng.uniform(0.45, 0.85) * h
        foot = rng.uniform(max(height, 0.75 * h), h - 2)
        if people and rng.random() < 0.4:  # right beside the previous one: the masks touch
            px, _, ph = people[-1]
            x = px + rng.choice([-1, 1]) * HALF_WIDTH * (ph + height) * rng.uniform(0.9, 1.0)
        else:  # somewhere free, if a few tries find a place
            for _ in range(20):
                x = rng.uniform(0.1 * w, 0.9 * w)
                if all(abs(x - px) > HALF_WIDTH * (ph + height) for px, _, ph in people):
                    break
        people.append((float(x), float(foot), float(height)))
    people.sort(key=lambda p: p[1])  # farther (higher feet) first, so nearer ones paint over
    ids = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(ids)
    for k, (x, foot, height) in enumerate(people, start=1):
        _pedestrian(draw, x, foot, height, k)
    ids = np.asarray(ids)  # (H, W)
    # keep instances that stayed visible (>= 150 px), renumbered 1..k
    kept = [k for k in range(1, len(people) + 1) if (ids == k).sum() >= 150]
    lut = np.zeros(256, np.uint8)
    lut[kept] = np.arange(1, len(kept) + 1)
    ids = lut[ids]  # (H, W) uint8

    gray = rng.uniform(90, 170) + rng.normal(0.0, 8.0, 3)  # low-saturation street
    shade = np.linspace(1.15, 0.85, h, dtype=np.float32)[:, None, None]  # lighting gradient
    colors = np.broadcast_to(gray.astype(np.float32) * shade, (h, w, 3)).copy()  # (H, W, 3)
    for _ in range(int(rng.integers(2, 6))):  # walls, windows, cars: grey-ish blocks
        x0, y0 = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
        x1, y1 = x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120))
        colors[y0:y1, x0:x1] = rng.uniform(60, 200) + rng.normal(0.0, 10.0, 3)
    rows = np.arange(h)[:, None]
    for k in range(1, len(kept) + 1):
        _, foot, height = people[kept[k - 1] - 1]
        mask = ids == k
        clothes = rng.choice([rng.uniform(0, 80, 3), rng.uniform(120, 255, 3)])
        colors[mask] = clothes
        legs = mask & (rows > foot - 0.45 * height)
        colors[legs] = rng.uniform(20, 90, 3)
        head = mask & (rows < foot - height + 0.18 * height)
        colors[head] = np.array([224.0, 172.0, 135.0]) * rng.uniform(0.6, 1.05)
    edge = np.zeros((h, w), bool)  # an instance pixel next to anything else: dark outline
    edge[1:] |= ids[1:] != ids[:-1]
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    colors[edge & (ids > 0)] *= 0.45
    return _noisy(colors, rng, sigma=6.0), ids


def make_pennfudan(root: Path, n: int = PENNFUDAN_N, seed: int = 0) -> Path:
    """Write a synthetic Penn-Fudan under ``root``: ``PennFudanPed/PNGImages/FudanPedNNNNN.png``
    (RGB) and ``PedMasks/FudanPedNNNNN_mask.png`` ("L", 0 = background, ids 1..k), plus a
    ``SYNTHETIC`` marker. No ``Annotation/`` (segkit reads the masks only).

    The default ``n=90`` holds the default split (test 50, val 20, train 20); with fewer
    images pass smaller ``InstanceConfig.val_size`` / ``test_size``. Returns the folder.
    """
    folder = Path(root) / "PennFudanPed"
    _prepare(folder)
    (folder / "PNGImages").mkdir()
    (folder / "PedMasks").mkdir()
    for i in range(1, n + 1):
        image, ids = draw_pedestrians(np.random.default_rng((seed, i)))
        stem = f"FudanPed{i:05d}"  # noisy pixels barely compress: store them
        Image.fromarray(image).save(folder / "PNGImages" / f"{stem}.png", compress_level=0)
        Image.fromarray(ids).save(folder / "PedMasks" / f"{stem}_mask.png", compress_level=1)
    return folder


def make_all(root: Path, seed: int = 0) -> Path:
    """Both synthetic datasets under ``root`` (default sizes); returns ``root``, usable as any
    ``data_dir`` / ``--data-dir`` / ``$SEGKIT_DATA``."""
    make_sbd(root, seed=seed)
    make_pennfudan(root, seed=seed)
    return Path(root)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to write sbd/ and PennFudanPed/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_all(args.root, args.seed))

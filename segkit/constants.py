"""Facts shared by every module, each defined once: the course classes, palette, ignore index and
sizes, image suffixes, the Penn-Fudan split and the energy levels of the watershed model.

Nothing here imports torch, so any module may import it.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "sky", "tree", "road", "grass", "water", "building", "mountain", "foreground", "misc",
)  # fmt: skip
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = (224, 288)  # (H, W) of every Stanford Background image in the course layout
IGNORE_INDEX = 255  # label of pixels that count nowhere (void, padding)
SPLITS = ("train", "val", "test")
SYNTHETIC_MARKER = "SYNTHETIC"  # a file marking a generated (not course) dataset folder
SPLIT_SIZES = {"train": 572, "val": 72, "test": 71}  # the course split of Stanford Background
# PIL's default quality (4:2:0), the setting of the course JPEGs (rebuilt and synthetic ones): a
# rebuilt JPEG is ~44 dB PSNR from the course one, against ~36 dB at quality 95 (which keeps
# detail the course files lost)
JPEG_QUALITY = 75
# files read as images: `segkit predict` in a folder, `segkit data verify`'s unexpected files
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Penn-Fudan's fixed split (segkit.pennfudan.split_stems; InstanceConfig's defaults): the sorted
# stems permuted with numpy.random.default_rng(PENNFUDAN_SPLIT_SEED), first test, then val
PENNFUDAN_SPLIT_SEED, PENNFUDAN_VAL_SIZE, PENNFUDAN_TEST_SIZE = 0, 20, 50
NUM_ENERGY_LEVELS = 16  # K, the distance-to-boundary levels of the watershed model (DWT paper)

# The course palette (RGB, one row per class in CLASSES order), used by every figure and by
# `segkit predict`'s label PNGs.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (70, 130, 180),  # sky
    (34, 139, 34),  # tree
    (128, 64, 128),  # road
    (152, 251, 152),  # grass
    (0, 0, 230),  # water
    (220, 20, 60),  # building
    (139, 90, 43),  # mountain
    (255, 215, 0),  # foreground
    (128, 128, 128),  # misc
)

# the class weightings of the loss (segkit.losses.weighting; TrainConfig.class_weighting)
CLASS_WEIGHTINGS = ("inverse", "sqrt", "none")

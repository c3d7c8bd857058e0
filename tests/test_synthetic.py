"""The synthetic datasets: exact on-disk layouts, loadable by segkit, learnable but not trivial."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.constants import CLASSES, IMAGE_SIZE, PALETTE, SPLITS
from segkit.synthetic import MARKER, PENNFUDAN_N, SBD_SIZES, make_pennfudan, make_sbd


# ------------------------------------------------------------------------------------- sbd
def test_sbd_layout(synthetic_root: Path) -> None:
    sbd = synthetic_root / "sbd"
    assert (sbd / MARKER).read_text().strip()
    assert (sbd / "classes.txt").read_text().split() == list(CLASSES)
    for split in SPLITS:
        names = sorted(p.name for p in (sbd / split).iterdir())
        n = SBD_SIZES[split]
        assert names == sorted(f"img_{i:04d}.{e}" for i in range(n) for e in ("jpg", "png"))
    with Image.open(sbd / "train" / "img_0000.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == IMAGE_SIZE[::-1]
    with Image.open(sbd / "train" / "img_0000.png") as im:
        assert im.mode == "P" and im.size == IMAGE_SIZE[::-1]
        assert np.asarray(im).max() < len(CLASSES)


def test_sbd_loads_through_the_dataset(synthetic_root: Path) -> None:
    from segkit.data import SegmentationDataset

    for split in SPLITS:
        ds = SegmentationDataset(split, data_dir=synthetic_root, progress=False)
        assert len(ds) == SBD_SIZES[split] and ds.classes == list(CLASSES)
    image, mask = ds[0]
    assert image.shape == (3, *IMAGE_SIZE) and image.dtype == torch.float32
    assert mask.shape == IMAGE_SIZE and mask.dtype == torch.int64 and mask.max() < len(CLASSES)


def _labels(root: Path, split: str) -> np.ndarray:
    files = sorted((root / "sbd" / split).glob("*.png"))
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int64)  # (N, H, W)


def test_sbd_is_learnable_but_not_trivial(synthetic_root: Path) -> None:
    """Colour predicts the class (nearest palette colour is ~99% right), but the per-pixel
    frequency baseline is not (about 0.44 pixel accuracy, close to the real data's 0.40-0.46)."""
    from segkit.baseline import simple_predict, simple_train

    train, val = _labels(synthetic_root, "train"), _labels(synthetic_root, "val")
    assert set(np.unique(train)) == set(range(len(CLASSES)))  # every class occurs
    freq = simple_train(len(CLASSES), [(None, torch.from_numpy(train))])  # (C, H, W)
    gts, preds = simple_predict([(None, torch.from_numpy(val))], freq)
    baseline_acc = (preds.argmax(1) == gts[:, 0]).mean()
    assert 0.25 < baseline_acc < 0.6

    files = sorted((synthetic_root / "sbd" / "val").glob("*.jpg"))
    images = np.stack([np.asarray(Image.open(f), np.float32) for f in files])  # (N, H, W, 3)
    dist = ((images[..., None, :] - np.asarray(PALETTE, np.float32)) ** 2).sum(-1)  # (N,H,W,C)
    assert (dist.argmin(-1) == val).mean() > 0.9


def test_sbd_is_deterministic_and_never_overwrites_real_data(tmp_path: Path) -> None:
    sizes = {"train": 2, "val": 1, "test": 1}
    a, b = make_sbd(tmp_path / "a", sizes), make_sbd(tmp_path / "b", sizes)
    c = make_sbd(tmp_path / "c", sizes, seed=1)
    jpg = "train/img_0001.jpg"
    assert (a / jpg).read_bytes() == (b / jpg).read_bytes() != (c / jpg).read_bytes()
    # writing again replaces a synthetic folder, stale files included
    make_sbd(tmp_path / "a", {"train": 1, "val": 1, "test": 1})
    assert not (a / jpg).exists() and (a / "train" / "img_0000.png").exists()
    (tmp_path / "real" / "sbd").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not synthetic"):
        make_sbd(tmp_path / "real")
    with pytest.raises(ValueError, match="unknown splits"):
        make_sbd(tmp_path / "d", {"training": 3})


# ------------------------------------------------------------------------------ Penn-Fudan
def test_pennfudan_layout(synthetic_root: Path) -> None:
    from segkit.pennfudan import list_pennfudan, read_instance_mask

    root = synthetic_root / "PennFudanPed"
    assert (root / MARKER).is_file()
    stems = list_pennfudan(root)
    assert stems == [f"FudanPed{i:05d}" for i in range(1, PENNFUDAN_N + 1)]
    touching = 0
    for stem in stems:
        with Image.open(root / "PNGImages" / f"{stem}.png") as im:
            assert im.mode == "RGB" and all(300 <= s <= 420 for s in im.size)
        with Image.open(root / "PedMasks" / f"{stem}_mask.png") as im:
            assert im.mode == "L" and im.size == Image.open(root / "PNGImages" / f"{stem}.png").size
        ids = read_instance_mask(root / "PedMasks" / f"{stem}_mask.png").numpy()  # (H, W)
        k = int(ids.max())
        assert 1 <= k <= 8 and set(np.unique(ids)) == set(range(k + 1))  # ids 1..k, consecutive
        a, b = ids[:, 1:], ids[:, :-1]  # horizontal neighbours of two different pedestrians
        touching += bool(((a != b) & (a > 0) & (b > 0)).any())
    assert touching >= 5


def test_pennfudan_default_split_and_dataset(synthetic_root: Path) -> None:
    """90 images hold InstanceConfig's default split (test 50, val 20), so quick runs need no
    override."""
    from segkit.config import InstanceConfig
    from segkit.pennfudan import PennFudanDataset, list_pennfudan, split_stems

    cfg = InstanceConfig()
    stems = list_pennfudan(synthetic_root / "PennFudanPed")
    sizes = {
        s: len(split_stems(stems, s, cfg.split_seed, cfg.val_size, cfg.test_size)) for s in SPLITS
    }
    assert sizes == {"train": 20, "val": 20, "test": 50}
    ds = PennFudanDataset("val", data_dir=synthetic_root, limit=2, short_side=128, max_size=256)
    image, targets = ds[0]
    assert image.dtype == torch.float32 and image.shape[0] == 3
    assert targets["instances"].max() >= 1


def test_pennfudan_small(tmp_path: Path) -> None:
    root = make_pennfudan(tmp_path, n=3, seed=1)
    assert sorted(p.name for p in (root / "PedMasks").iterdir())[0] == "FudanPed00001_mask.png"
    assert len(list((root / "PNGImages").iterdir())) == 3


def test_entry_point_refuses_a_real_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sbd").mkdir()  # no SYNTHETIC marker: must not be touched
    monkeypatch.setattr(sys, "argv", ["segkit.synthetic", str(tmp_path)])
    monkeypatch.delitem(sys.modules, "segkit.synthetic")  # run it afresh as __main__
    with pytest.raises(FileExistsError):
        runpy.run_module("segkit.synthetic", run_name="__main__")
    assert not any((tmp_path / "sbd").iterdir())


# ------------------------------------------------------------------------- conftest fixtures
def test_data_root_is_real_or_synthetic(data_root: Path, synthetic_root: Path) -> None:
    """``data_root`` always holds both layouts; ``SEGKIT_TEST_NO_DATA=1`` makes it synthetic."""
    from segkit.data import SegmentationDataset

    assert (data_root / "PennFudanPed" / "PedMasks").is_dir()
    assert len(SegmentationDataset("val", data_dir=data_root, limit=2, progress=False)) == 2
    synthetic = (data_root / "sbd" / MARKER).is_file()
    assert synthetic == (data_root == synthetic_root)

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from segkit.constants import CLASSES
from segkit.data import NO_AUGMENT, Augment, SegmentationDataset, label_counts


def _fake_sbd(root, n=3, size=(224, 288)):
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "SYNTHETIC").write_text("test data: any number of images\n")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                root / split / f"img_{i:04d}.jpg"
            )
            lab = Image.fromarray(rng.integers(0, 9, size, dtype=np.uint8), mode="L").convert("P")
            lab.save(root / split / f"img_{i:04d}.png")
    return root


def test_real_splits(real_data):
    sizes = {
        s: len(SegmentationDataset(s, real_data, preload=False)) for s in ("train", "val", "test")
    }
    assert sizes == {"train": 572, "val": 72, "test": 71}
    ds = SegmentationDataset("val", real_data, limit=4)
    image, mask = ds[0]
    assert image.shape == (3, 224, 288) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert mask.shape == (224, 288) and mask.dtype == torch.int64
    assert mask.max() <= 8 and ds.classes == list(CLASSES)


def test_augmentation_pairs_image_and_mask():
    # the mask is a function of the image (class = red channel // 32): after crop + flip the
    # pair must still agree wherever nearest-neighbour resampling keeps the exact value
    h, w = 224, 288
    ramp = torch.arange(w).div(w / 8, rounding_mode="floor").to(torch.uint8)  # 8 vertical bands
    mask = ramp.expand(h, w).clone()
    image = (mask * 32).expand(3, h, w).clone()
    aug = Augment(scale=(0.3, 0.6), flip_p=0.5).build()
    torch.manual_seed(0)
    for _ in range(20):
        im, m = aug(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert im.shape == (3, h, w) and m.shape == (h, w)
        assert set(m.unique().tolist()) <= set(range(8))  # nearest: no interpolated labels
        agree = (im[0].float() / 32).round() == m.float()
        assert agree.float().mean() > 0.95  # only band edges may differ (image is antialiased)


def test_flip_only_is_exact_and_twice_is_identity():
    image = torch.randint(0, 255, (3, 8, 12), dtype=torch.uint8)
    mask = torch.randint(0, 9, (8, 12), dtype=torch.uint8)
    flip = Augment(scale=None, flip_p=1.0).build()
    im, m = flip(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert torch.equal(im, image.flip(-1)) and torch.equal(m, mask.flip(-1))
    im2, m2 = flip(im, m)
    assert torch.equal(im2, image) and torch.equal(m2, mask)
    im3, m3 = NO_AUGMENT.build()(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert torch.equal(im3, image) and torch.equal(m3, mask)


def test_same_seed_same_sample(tmp_path):
    ds = SegmentationDataset("train", _fake_sbd(tmp_path / "sbd"), transform=Augment())
    torch.manual_seed(3)
    a = ds[1]
    torch.manual_seed(3)
    b = ds[1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_label_counts(tmp_path):
    ds = SegmentationDataset("val", _fake_sbd(tmp_path / "sbd"))
    expected = sum(
        np.bincount(
            np.asarray(Image.open(tmp_path / "sbd" / "val" / f"{s}.png")).ravel(), minlength=9
        )
        for s in ds.stems
    )
    np.testing.assert_array_equal(label_counts(ds).numpy(), expected)


def test_missing_data_dir_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGKIT_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="SEGKIT_DATA.*prepare"):
        SegmentationDataset("train", tmp_path / "nowhere")


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing_png", "images without a label png"),
        ("extra_file", "unexpected files"),
        ("truncated_jpg", "cannot decode image"),
        ("size_mismatch", "differs from image size"),
        ("label_range", r"label values \[9\] outside 0..8"),
    ],
)
def test_bad_input_errors_name_the_file(tmp_path, problem, message):
    root = _fake_sbd(tmp_path / "sbd")
    split = root / "train"
    if problem == "missing_png":
        (split / "img_0001.png").unlink()
    elif problem == "extra_file":
        (split / "notes.txt").write_text("x")
    elif problem == "truncated_jpg":
        data = (split / "img_0001.jpg").read_bytes()
        (split / "img_0001.jpg").write_bytes(data[: len(data) // 2])
    elif problem == "size_mismatch":
        Image.new("P", (100, 80)).save(split / "img_0001.png")
    elif problem == "label_range":
        Image.fromarray(np.full((224, 288), 9, np.uint8), mode="L").save(split / "img_0001.png")
    with pytest.raises(ValueError, match=message) as err:
        SegmentationDataset("train", root)
    assert "img_0001" in str(err.value) or problem == "extra_file"
    assert str(split) in str(err.value)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        SegmentationDataset("dev", _fake_sbd(tmp_path / "sbd"))


def test_preload_false_matches_preload(tmp_path):
    root = _fake_sbd(tmp_path / "sbd")
    a, b = SegmentationDataset("test", root), SegmentationDataset("test", root, preload=False)
    assert torch.equal(a[2][0], b[2][0]) and torch.equal(a[2][1], b[2][1])
    shutil.rmtree(root)

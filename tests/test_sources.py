"""Dataset acquisition: safe extraction, checksums, the sbd rebuild (synthetic, real), the CLI."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit import sources
from segkit.archives import ChecksumError, UnsafeArchiveError, check_sha256, safe_extract
from segkit.cli import build_parser
from segkit.constants import CLASSES


def _tar(path: Path, members: list[tuple[str, bytes | None, dict]]) -> Path:
    """Write a tar(.gz) of (name, data or None, TarInfo attributes) triples."""
    with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as tf:
        for name, data, attrs in members:
            info = tarfile.TarInfo(name)
            for k, v in attrs.items():
                setattr(info, k, v)
            info.size = len(data) if data is not None else 0
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _no_leftovers(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "members, culprit",
    [
        ([("ok.txt", b"x", {}), ("../evil.txt", b"x", {})], "../evil.txt"),
        ([("/abs/evil.txt", b"x", {})], "/abs/evil.txt"),
        ([("d/link", None, {"type": tarfile.SYMTYPE, "linkname": "../../etc"})], "d/link"),
        ([("abs", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})], "abs"),
        ([("hard", None, {"type": tarfile.LNKTYPE, "linkname": "../outside"})], "hard"),
        ([("dev", None, {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})], "dev"),
        ([("l", None, {"type": tarfile.SYMTYPE, "linkname": "."}), ("l/x", b"x", {})], "l/x"),
    ],
)
def test_tar_rejects_unsafe_members(tmp_path: Path, members: list, culprit: str) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", members)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError, match=repr(culprit).replace(".", r"\.")):
        safe_extract(archive, out / "x")
    assert list(out.iterdir()) == []  # nothing extracted, no temporary folder left
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/abs.txt", "C:/win.txt"])
def test_zip_rejects_unsafe_members(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "bad.zip", {"ok.txt": b"x", name: b"x"})
    with pytest.raises(UnsafeArchiveError, match=name.replace(".", r"\.")):
        safe_extract(archive, tmp_path / "out" / "x")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".zip"])
def test_good_archive_extracts(tmp_path: Path, suffix: str) -> None:
    files = {"ds/a.txt": b"hello", "ds/sub/b.bin": bytes(range(10))}
    archive = tmp_path / f"good{suffix}"
    if suffix == ".zip":
        _zip(archive, files)
    else:
        links = [("ds/link", None, {"type": tarfile.SYMTYPE, "linkname": "a.txt"})]
        _tar(archive, [(k, v, {}) for k, v in files.items()] + links)
    out = safe_extract(archive, tmp_path / "out")
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    with pytest.raises(FileExistsError):
        safe_extract(archive, out)
    _no_leftovers(tmp_path)


def test_checksum_mismatch_names_file(tmp_path: Path) -> None:
    path = tmp_path / "archive.zip"
    path.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert check_sha256(path, None) == good == check_sha256(path, good.upper())
    with pytest.raises(ChecksumError, match="archive.zip"):
        check_sha256(path, "0" * 64)


# ---- the sbd rebuild on a synthetic iccv09Data folder --------------------------------------


def _checksums(folder: Path) -> dict[str, str]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {p.relative_to(folder).as_posix(): sources.sha256_file(p) for p in files}


def _fake_iccv09(root: Path) -> dict[str, np.ndarray]:
    """Three images with random labels: 36x14 and 18x28 (scale exactly 16) and 320x240."""
    rng = np.random.default_rng(0)
    folder = root / "iccv09Data"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "horizons.txt").write_text("")
    labels = {}
    sizes = {"0000001": (36, 14), "0000002": (18, 28), "0000003": (320, 240)}
    for image_id, (w, h) in sizes.items():
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{image_id}.jpg")
        lab = rng.integers(-1, 8, (h, w))
        text = "\n".join(" ".join(str(v) for v in row) for row in lab) + "\n"
        (folder / "labels" / f"{image_id}.regions.txt").write_text(text)
        labels[image_id] = lab
    return labels


@pytest.fixture
def fake_sbd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    """A fake iccv09Data folder plus monkeypatched split list and checksum lists."""
    labels = _fake_iccv09(tmp_path / "src")
    lab1 = np.where(labels["0000001"] < 0, 8, labels["0000001"])
    lab2 = np.where(labels["0000002"] < 0, 8, labels["0000002"])
    yy, xx = np.mgrid[0:224, 0:288]
    expected = {  # integer upscaling by 16, then the centre crop (144 px from the left / 112 top)
        "train/img_0000.png": lab1[yy // 16, 9 + xx // 16],
        "train/img_0001.png": lab2[7 + yy // 16, xx // 16],
    }
    splits = {"train": ["0000001", "0000002"], "val": ["0000003"], "test": []}
    names = ["classes.txt"] + [
        f"{s}/img_{i:04d}.{e}"
        for s, n in (("train", 2), ("val", 1))
        for i in range(n)
        for e in ("jpg", "png")
    ]
    lists = {
        "iccv09Data": _checksums(tmp_path / "src" / "iccv09Data"),
        "sbd": dict.fromkeys(names, "0" * 64),
        "sbd_labels": {
            k: hashlib.sha256(v.astype(np.uint8).tobytes()).hexdigest() for k, v in expected.items()
        },
    }
    monkeypatch.setattr(sources, "load_sbd_splits", lambda: splits)
    monkeypatch.setattr(sources, "load_checksums", lambda name: lists[name])
    return tmp_path / "src" / "iccv09Data", expected


def test_prepare_sbd_synthetic(tmp_path: Path, fake_sbd: tuple) -> None:
    original, expected = fake_sbd
    out = sources.prepare_sbd(original, tmp_path / "data")
    assert out == tmp_path / "data" / "sbd"
    assert (out / "classes.txt").read_text().split() == list(CLASSES)
    for rel, want in expected.items():
        label = Image.open(out / rel)
        assert label.mode == "P" and label.size == (288, 224)
        np.testing.assert_array_equal(np.asarray(label), want)
    image = Image.open(out / "val" / "img_0000.jpg")
    assert image.mode == "RGB" and image.size == (288, 224)
    assert np.asarray(Image.open(out / "val" / "img_0000.png")).max() <= 8
    sources.verify_dataset("sbd", tmp_path / "data")
    assert sources.prepare_sbd(original, tmp_path / "data") == out  # already there: verified only
    _no_leftovers(tmp_path / "data")

    # the same from a .tar.gz, which also leaves the verified original at <root>/iccv09Data
    archive = tmp_path / "iccv09Data.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(original, arcname="iccv09Data")
    out2 = sources.prepare_sbd(archive, tmp_path / "data2")
    np.testing.assert_array_equal(
        np.asarray(Image.open(out2 / "train" / "img_0001.png")), expected["train/img_0001.png"]
    )
    assert (tmp_path / "data2" / "iccv09Data" / "horizons.txt").exists()
    _no_leftovers(tmp_path / "data2")


def test_rebuilt_sbd_label_change_is_caught(tmp_path: Path, fake_sbd: tuple) -> None:
    out = sources.prepare_sbd(fake_sbd[0], tmp_path)
    label = np.asarray(Image.open(out / "train" / "img_0001.png")).copy()
    label[0, 0] = (label[0, 0] + 1) % 9
    Image.fromarray(label).save(out / "train" / "img_0001.png")
    with pytest.raises(ChecksumError, match="train/img_0001.png"):
        sources.verify_dataset("sbd", tmp_path)


def test_prepare_without_source_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="--source") as e:
        sources.prepare_sbd(data_dir=tmp_path)
    assert sources.SOURCES["iccv09Data"].url in str(e.value)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="manually") as e:
        sources.prepare_pennfudan(data_dir=tmp_path, download=True)
    assert sources.SOURCES["PennFudanPed"].url in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_prepare_pennfudan_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "PennFudanPed/readme.txt": b"readme",
        "PennFudanPed/PedMasks/a_mask.png": b"m",
        "PennFudanPed/PNGImages/a.png": b"i",
    }
    archive = _zip(tmp_path / "PennFudanPed.zip", files)
    good = {k.split("/", 1)[1]: hashlib.sha256(v).hexdigest() for k, v in files.items()}
    bad = {**good, "PNGImages/a.png": "0" * 64}
    monkeypatch.setattr(sources, "load_checksums", lambda name: bad)
    with pytest.raises(ChecksumError, match="PNGImages/a.png"):
        sources.prepare_pennfudan(archive, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # nothing half-installed

    monkeypatch.setattr(sources, "load_checksums", lambda name: good)
    with pytest.raises(ChecksumError, match="sha256"):
        sources.prepare_pennfudan(archive, tmp_path / "data", archive_sha256="0" * 64)
    out = sources.prepare_pennfudan(archive, tmp_path / "data")
    assert (out / "PNGImages" / "a.png").read_bytes() == b"i"
    sources.verify_dataset("PennFudanPed", tmp_path / "data")


# ---- real data (skipped when absent) --------------------------------------------------------


def _agreement(real_data: Path, split: str, ids: list[str]) -> float:
    equal = total = 0
    for i, image_id in enumerate(ids):
        original = real_data / "iccv09Data"
        image, label = sources.convert_sbd_image(
            original / "images" / f"{image_id}.jpg", original / "labels" / f"{image_id}.regions.txt"
        )
        assert image.size == label.size == (288, 224) and label.mode == "P"
        course = np.asarray(Image.open(real_data / "sbd" / split / f"img_{i:04d}.png"))
        equal += int((np.asarray(label) == course).sum())
        total += course.size
    return equal / total


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_convert_matches_course_labels(real_data: Path, split: str) -> None:
    ids = sources.load_sbd_splits()[split][:4]
    assert _agreement(real_data, split, ids) >= 0.98


def test_verify_real_datasets(real_data: Path) -> None:
    for name in ("sbd", "iccv09Data", "PennFudanPed"):
        sources.verify_dataset(name, real_data)


def test_verify_reports_offending_files(real_data: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(real_data / "sbd", tmp_path / "sbd")
    sources.verify_dataset("sbd", tmp_path)
    target = copy / "train" / "img_0003.png"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="wrong sha256.*train/img_0003.png"):
        sources.verify_dataset("sbd", tmp_path)
    (copy / "val" / "img_0001.jpg").unlink()
    shutil.copy(copy / "val" / "img_0002.jpg", copy / "val" / "img_9999.jpg")
    with pytest.raises(ChecksumError, match="val: images without a label png: .'img_9999'") as e:
        sources.verify_dataset("sbd", copy)
    assert "label pngs without an image: ['img_0001']" in str(e.value)
    assert "not in the course val split: ['img_9999']" in str(e.value)


def test_loader_and_verifier_share_one_rule(real_data: Path, tmp_path: Path) -> None:
    """An extra image pair or a stray file: the loader and `segkit data verify` both refuse,
    with the same words."""
    from segkit.data import SegmentationDataset

    copy = shutil.copytree(real_data / "sbd", tmp_path / "sbd")
    for stray, words in (
        (("img_9999.jpg", "img_9999.png"), "1 images not in the course train split: ['img_9999']"),
        (("notes.txt",), "unexpected files: ['notes.txt']"),
    ):
        for name in stray:
            shutil.copy(copy / "train" / "img_0000.png", copy / "train" / name)
        with pytest.raises(ValueError) as loader_err:
            SegmentationDataset("train", tmp_path, preload=False)
        with pytest.raises(ChecksumError) as verify_err:
            sources.verify_dataset("sbd", tmp_path)
        assert words in str(loader_err.value) and words in str(verify_err.value)
        assert str(copy / "train") in str(loader_err.value)
        for name in stray:
            (copy / "train" / name).unlink()


def test_data_subparser(real_data: Path, capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    args = parser.parse_args(["data", "prepare-sbd", "--source", "x.tar.gz", "--download"])
    assert (args.source, args.download, args.data_dir) == ("x.tar.gz", True, None)
    args = parser.parse_args(["data", "prepare-pennfudan", "--data-dir", "d", "--sha256", "ab"])
    assert (args.data_dir, args.sha256, args.download) == ("d", "ab", False)
    args = parser.parse_args(["data", "verify", "sbd", "--data-dir", str(real_data)])
    assert args.func(args) == 0
    assert "sbd at" in capsys.readouterr().out


@pytest.mark.slow
def test_full_rebuild_matches_course(real_data: Path, tmp_path: Path) -> None:
    out = sources.prepare_sbd(real_data / "iccv09Data", tmp_path)  # verifies every label map
    for split in ("train", "val", "test"):
        course = sorted((real_data / "sbd" / split).glob("*.png"))
        assert len(course) == len(list((out / split).glob("*.png")))
        equal = sum(
            int((np.asarray(Image.open(p)) == np.asarray(Image.open(out / split / p.name))).sum())
            for p in course
        )
        assert equal / (len(course) * 288 * 224) >= 0.98

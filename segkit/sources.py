"""Dataset acquisition: unpack the official archives, rebuild the course layout ``sbd/`` from the
original Stanford Background data, and verify every file against checksum lists shipped in
``segkit/resources`` (``<name>.sha256``, paths relative to the dataset folder)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .archives import ChecksumError, check_sha256, download, safe_extract, sha256_file
from .constants import CLASSES, IMAGE_SIZE, IMAGE_SUFFIXES, JPEG_QUALITY, SPLITS, SYNTHETIC_MARKER
from .utils import data_root, find_dataset_dir


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from and how its folder is recognised."""

    name: str
    marker: str  # file or folder inside the dataset folder that identifies it
    url: str | None = None
    archive: str | None = None  # file name of the official archive
    sha256: str | None = None  # of the archive; not published, so unknown until downloaded


SOURCES: dict[str, DatasetSource] = {
    "iccv09Data": DatasetSource(
        "iccv09Data",
        "horizons.txt",
        "http://dags.stanford.edu/data/iccv09Data.tar.gz",
        "iccv09Data.tar.gz",
    ),
    "PennFudanPed": DatasetSource(
        "PennFudanPed",
        "PedMasks",
        "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",
        "PennFudanPed.zip",
    ),
    "sbd": DatasetSource("sbd", "classes.txt"),  # rebuilt from iccv09Data by prepare_sbd
}
MISC = CLASSES.index("misc")  # regions.txt marks unknown pixels -1; the course maps them here
# The course palette: a 9-colour jet for classes 0..8, padded to 16 entries with greys.
SBD_PALETTE = list(bytes.fromhex("00007f 0000fe 0060ff 00d4ff 4cffaa aaff4c ffe500 ff7a00 fe1200"))
SBD_PALETTE += [v for g in range(9, 16) for v in (g, g, g)]
MANIFEST = "REBUILT.sha256"  # written by prepare_sbd: sha256 of every file it produced


def _source(name: str) -> DatasetSource:
    if name not in SOURCES:
        raise KeyError(f"unknown dataset {name!r}; available: {sorted(SOURCES)}")
    return SOURCES[name]


def _resource(filename: str) -> str:
    return resources.files("segkit").joinpath("resources", filename).read_text()


def parse_checksums(text: str) -> dict[str, str]:
    """``sha256sum``-style lines (``<hex>  <relative path>``) -> {path: hex}."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            digest, rel = line.split(maxsplit=1)
            out[rel.strip().removeprefix("*").removeprefix("./")] = digest.lower()
    return out


def load_checksums(name: str) -> dict[str, str]:
    """Shipped per-file sha256 for ``name`` ("iccv09Data", "PennFudanPed", "sbd").

    ``"sbd_labels"`` gives, per course label png, the sha256 of its decoded pixels
    (``np.asarray(Image.open(p), np.uint8).tobytes()``): it checks a rebuild, whose png bytes
    differ from the course ones.
    """
    return parse_checksums(_resource(f"{name}.sha256"))


def load_sbd_splits() -> dict[str, list[str]]:
    """Course split membership: {"train": [original ids in img_NNNN order], "val": [...], ...}."""
    return json.loads(_resource("sbd_splits.json"))


def course_stems(split: str) -> list[str]:
    """The stems (``img_NNNN``) of a course split, from the shipped checksum list."""
    prefix = f"{split}/"
    return sorted({Path(rel).stem for rel in load_checksums("sbd") if rel.startswith(prefix)})


def check_split_folder(split_dir: Path, split: str) -> list[str]:
    """The one rule for a course split folder, shared by the loader and ``segkit data verify``.

    Every ``img_NNNN.jpg`` has its ``.png`` and vice versa, no other files (hidden ones aside),
    and the stems are exactly the course split's shipped id list (572 / 72 / 71 images; a
    synthetic dataset, marked by a ``SYNTHETIC`` file beside ``classes.txt``, only needs pairs).
    Returns the sorted stems; raises ``ValueError`` naming the folder and the first offenders.
    """
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder {split_dir} does not exist")
    jpgs, pngs, other = set(), set(), []
    for name in os.listdir(split_dir):
        stem, ext = os.path.splitext(name)
        if ext == ".jpg":
            jpgs.add(stem)
        elif ext == ".png":
            pngs.add(stem)
        elif not name.startswith("."):
            other.append(name)
    problems = []
    if jpgs - pngs:
        problems.append(f"images without a label png: {sorted(jpgs - pngs)[:5]}")
    if pngs - jpgs:
        problems.append(f"label pngs without an image: {sorted(pngs - jpgs)[:5]}")
    if other:
        problems.append(f"unexpected files: {sorted(other)[:5]}")
    synthetic = (split_dir.parent / SYNTHETIC_MARKER).is_file()
    course = set() if synthetic else set(course_stems(split))
    if not synthetic:
        extra, missing = sorted((jpgs | pngs) - course), sorted(course - (jpgs | pngs))
        if extra:
            problems.append(f"{len(extra)} images not in the course {split} split: {extra[:5]}")
        if missing:
            problems.append(f"{len(missing)} course images missing: {missing[:5]}")
    if problems:
        raise ValueError(
            f"{split_dir}: " + "; ".join(problems) + f" (the course {split} split has "
            f"{len(course_stems(split))} image/label pairs; `segkit data prepare-sbd` rebuilds it)"
        )
    if not jpgs and (synthetic or course):
        raise ValueError(f"{split_dir}: no images found")
    return sorted(jpgs)


def _check_files(folder: Path, expected: dict[str, str], what: str) -> None:
    """Raise ``ChecksumError`` listing missing, corrupt and unexpected image files."""
    missing, bad = [], []
    for rel, digest in tqdm(sorted(expected.items()), desc=f"verify {what}", leave=False):
        path = folder / rel
        if not path.is_file():
            missing.append(rel)
        elif sha256_file(path) != digest:
            bad.append(rel)
    extra = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.relative_to(folder).as_posix() not in expected
    )
    problems = [
        f"{len(files)} {kind} (first: {', '.join(files[:5])})"
        for kind, files in (
            ("files with a wrong sha256", bad),
            ("missing files", missing),
            ("unexpected image files", extra),
        )
        if files
    ]
    if problems:
        raise ChecksumError(f"{what} at {folder} failed verification: " + "; ".join(problems))


def _check_label_pixels(folder: Path, expected: dict[str, str]) -> None:
    bad = []
    for rel, digest in tqdm(sorted(expected.items()), desc="verify sbd labels", leave=False):
        with Image.open(folder / rel) as im:
            if hashlib.sha256(np.asarray(im, dtype=np.uint8).tobytes()).hexdigest() != digest:
                bad.append(rel)
    if bad:
        raise ChecksumError(
            f"sbd at {folder}: {len(bad)} label maps differ from the course "
            f"labels (first: {', '.join(bad[:5])})"
        )


def _verify(name: str, folder: Path) -> str:
    """Verify ``folder`` as dataset ``name``; return a one-line summary."""
    expected = load_checksums(name)
    if name == "sbd":
        for split in SPLITS:  # the loader's rule first: unknown files are reported the same way
            try:
                check_split_folder(folder / split, split)
            except (ValueError, FileNotFoundError) as e:
                raise ChecksumError(f"sbd at {folder} failed verification: {e}") from None
    if name == "sbd" and (folder / MANIFEST).is_file():
        # A rebuild: same files as the course copy, intact since the rebuild, and label pixels
        # identical to the course ones (JPEG/PNG bytes depend on the encoder, pixels do not).
        manifest = parse_checksums((folder / MANIFEST).read_text())
        if set(manifest) != set(expected):
            diff = sorted(set(manifest) ^ set(expected))
            raise ChecksumError(
                f"{folder / MANIFEST} does not list the course files "
                f"(first differences: {', '.join(diff[:5])})"
            )
        _check_files(folder, manifest, name)
        _check_label_pixels(folder, load_checksums("sbd_labels"))
        return f"{name} at {folder}: {len(manifest)} files ok (rebuilt; labels match the course)"
    _check_files(folder, expected, name)
    return f"{name} at {folder}: {len(expected)} files ok"


def verify_dataset(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """Check every listed file of dataset ``name`` ("sbd", "iccv09Data", "PennFudanPed").

    ``data_dir`` is the dataset folder or a root holding it (default ``$SEGKIT_DATA``, ``./data``).
    Returns a one-line summary. Raises ``ChecksumError`` naming the first few missing, corrupt or
    unexpected image files.

    Example:
        >>> verify_dataset("PennFudanPed", "data")
    """
    return _verify(name, find_dataset_dir(name, _source(name).marker, data_dir))


def _locate(folder: Path, marker: str) -> Path | None:
    for cand in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if (cand / marker).exists():
            return cand
    return None


def _obtain(
    name: str,
    source: str | os.PathLike | None,
    root: Path,
    download_ok: bool,
    archive_sha256: str | None,
    install: bool,
) -> Path:
    """A verified original dataset folder from ``source`` (archive or folder), the data root or
    the official URL. Archives are extracted to ``<root>/<name>``; folders are copied there when
    ``install`` (else used in place)."""
    info, target = _source(name), root / name
    if source is None:
        if (target / info.marker).exists():
            source = target
        elif (root / info.archive).is_file():
            source = root / info.archive
        elif download_ok:
            source = download(info.url, root / info.archive)
        else:
            raise FileNotFoundError(
                f"{name} not found (looked for {target} and {root / info.archive}). Download "
                f"{info.url} manually and pass its path with --source PATH (source=...), "
                f"or use --download (download=True) when online"
            )
    source = Path(source).expanduser()
    if source.is_dir():
        folder = _locate(source, info.marker)
        if folder is None:
            raise FileNotFoundError(f"{source} is not a {name} folder (no {info.marker} inside)")
        print(_verify(name, folder))
        if not install or folder.resolve() == target.resolve():
            return folder
        if target.exists():
            raise FileExistsError(f"{target} already exists; remove it or pass it as the source")
        work = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.copy-"))
        try:
            shutil.copytree(folder, work / name)
            os.replace(work / name, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"copied {folder} -> {target}")
        return target
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist; download {info.url} and pass its path")
    if target.exists():
        raise FileExistsError(f"{target} already exists; remove it or pass it as the source")
    expected = archive_sha256 or info.sha256
    digest = check_sha256(source, expected)
    note = "matches the expected value" if expected else "no published value to compare with"
    print(f"{source.name}: sha256 {digest} ({note}); verifying the extracted files")
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}.") as work:
        folder = _locate(safe_extract(source, Path(work) / "x"), info.marker)
        if folder is None:
            raise FileNotFoundError(f"{source} holds no {name} folder (no {info.marker} inside)")
        print(_verify(name, folder))
        os.replace(folder, target)
    print(f"extracted {source} -> {target}")
    return target


def load_regions(path: str | os.PathLike) -> np.ndarray:
    """``labels/<id>.regions.txt`` -> int64 array (H, W); -1 = unknown, 0..7 = classes."""
    text = Path(path).read_text()
    rows = sum(1 for line in text.splitlines() if line.strip())
    values = np.array(text.split(), dtype=np.int64)
    if rows == 0 or values.size % rows:
        raise ValueError(f"{path}: {values.size} values do not form {rows} equal rows")
    return values.reshape(rows, -1)


def sbd_geometry(width: int, height: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Resize size and crop box taking a ``width`` x ``height`` image to the course 288 x 224.

    Scale by ``s = max(288 / W, 224 / H)`` (sizes rounded), then centre-crop with the offsets
    rounded as torchvision's ``Resize`` + ``CenterCrop`` do (Python ``round``); with nearest
    resampling this reproduces the course labels pixel for pixel.
    """
    h0, w0 = IMAGE_SIZE
    s = max(w0 / width, h0 / height)
    size = (max(w0, round(width * s)), max(h0, round(height * s)))
    left, top = round((size[0] - w0) / 2), round((size[1] - h0) / 2)
    return size, (left, top, left + w0, top + h0)


def convert_sbd_image(
    image_path: str | os.PathLike, regions_path: str | os.PathLike
) -> tuple[Image.Image, Image.Image]:
    """One original image + ``regions.txt`` -> (RGB image, mode "P" label map 0..8), 288 x 224.

    Images are resampled bilinearly (antialiased), labels with nearest neighbour; -1 -> 8 (misc).
    """
    with Image.open(image_path) as im:
        image = im.convert("RGB")
    regions = load_regions(regions_path)  # (H, W) int64
    if regions.shape != (image.height, image.width):
        raise ValueError(
            f"{regions_path}: labels are {regions.shape[::-1]} (W, H) but the image "
            f"{image_path} is {image.size}"
        )
    regions = np.where(regions < 0, MISC, regions)
    if regions.max() > MISC:
        raise ValueError(f"{regions_path}: class {regions.max()} out of range -1..7")
    size, box = sbd_geometry(image.width, image.height)
    image = image.resize(size, Image.Resampling.BILINEAR).crop(box)
    label = Image.fromarray(regions.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)
    label = label.crop(box)
    label.putpalette(SBD_PALETTE)  # "L" -> "P", indices unchanged
    return image, label


def build_sbd(original: Path, out: Path, splits: dict[str, list[str]]) -> None:
    """Write the course layout into the empty folder ``out`` from an ``iccv09Data`` folder."""
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    jobs = [(split, i, image_id) for split, ids in splits.items() for i, image_id in enumerate(ids)]
    for split in splits:
        (out / split).mkdir(parents=True)
    for split, i, image_id in tqdm(jobs, desc="rebuild sbd"):
        image, label = convert_sbd_image(
            original / "images" / f"{image_id}.jpg", original / "labels" / f"{image_id}.regions.txt"
        )
        image.save(out / split / f"img_{i:04d}.jpg", quality=JPEG_QUALITY)
        label.save(out / split / f"img_{i:04d}.png")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    lines = [f"{sha256_file(out / rel)}  {rel}\n" for rel in files]
    (out / MANIFEST).write_text("".join(lines))


def prepare_sbd(
    source: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    archive_sha256: str | None = None,
) -> Path:
    """Rebuild the course layout ``<root>/sbd/`` from the original Stanford Background data.

    Args:
        source: ``iccv09Data.tar.gz`` or an extracted ``iccv09Data/`` folder; default
            ``<root>/iccv09Data`` or ``<root>/iccv09Data.tar.gz``, else the official URL when
            ``download``.
        data_dir: the data root (default ``$SEGKIT_DATA``, then ``./data``).
        archive_sha256: expected sha256 of the archive, when known.
    Returns:
        The verified ``sbd`` folder (built in a temporary folder, then renamed).

    Example:
        >>> prepare_sbd("~/Downloads/iccv09Data.tar.gz", "data")
    """
    root = data_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / "sbd"
    if target.exists():
        print(_verify("sbd", target) + " (already prepared)")
        return target
    original = _obtain("iccv09Data", source, root, download, archive_sha256, install=False)
    work = Path(tempfile.mkdtemp(dir=root, prefix=".sbd.build-"))
    try:
        build_sbd(original, work, load_sbd_splits())
        print(_verify("sbd", work))
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"rebuilt {target} from {original}")
    return target


def prepare_pennfudan(
    source: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    archive_sha256: str | None = None,
) -> Path:
    """Unpack ``PennFudanPed.zip`` (or copy a folder) to ``<root>/PennFudanPed/`` and verify it.

    Example:
        >>> prepare_pennfudan("~/Downloads/PennFudanPed.zip", "data")
    """
    root = data_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    return _obtain("PennFudanPed", source, root, download, archive_sha256, install=True)


PREPARED = {"sbd": prepare_sbd, "PennFudanPed": prepare_pennfudan}  # the folders the loaders read


def ensure_datasets(data_dir: str | os.PathLike | None = None, *, download: bool = False) -> Path:
    """Both prepared datasets under the data root (``data_dir``, ``$SEGKIT_DATA``, ``./data``):
    each one already there is verified as ``segkit data verify`` does, each one missing is
    prepared from an archive beside it or, with ``download``, from its official source. A
    synthetic folder (``segkit.synthetic``, marked ``SYNTHETIC``) is reported as such, not
    checked against the course checksums. Returns the data root.

    Example:
        >>> ensure_datasets(download=True)  # Colab: use what is there, fetch what is missing
    """
    root = data_root(data_dir)
    for name, prepare in PREPARED.items():
        folder = root / name
        if (folder / SYNTHETIC_MARKER).is_file() and (folder / _source(name).marker).exists():
            print(f"{name} at {folder}: synthetic (segkit.synthetic), not the course data")
        else:
            prepare(data_dir=root, download=download)
    return root

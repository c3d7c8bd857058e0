"""`segkit predict`: run a trained run folder (semantic, watershed or Mask R-CNN) on a user's
own images and write label PNGs, overlays and, optionally, probabilities.

Any size and mode (grayscale, RGBA, palette, 16-bit, EXIF-rotated JPEG) is accepted. The model
sees the image *resized* to the scale it was trained at, with H and W multiples of 32. The
outputs are resized back to the input size: probabilities bilinearly, and labels as their
arg-max.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision.transforms.v2 import functional as TF

from . import constants, viz
from .checkpoint import CheckpointError, describe_config, load_checkpoint
from .config import config_task
from .constants import IMAGE_SUFFIXES
from .energy import watershed_from_maps
from .experiment import load_run_model
from .instance import image_maps, load_instance_run
from .maskrcnn import load_maskrcnn_run
from .maskrcnn import predict_instances as mrcnn_instances
from .pennfudan import working_size
from .utils import SegkitError, get_device

PALETTE = viz.PALETTE  # (C, 3) uint8: the course classes' colours
TRAIN_AREA = constants.IMAGE_SIZE[0] * constants.IMAGE_SIZE[1]  # pixels the models were trained on
OVERLAY_ALPHA = 0.5  # weight of the class colour in the semantic overlay


@dataclass
class PredictResult:
    """What happened to one input: the files written, or why it failed or was skipped."""

    source: Path
    written: list[Path] = field(default_factory=list)
    error: str | None = None  # the file could not be predicted (counts as a failure)
    skipped: str | None = None  # a non-image file found in a folder (not a failure)

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None


@dataclass
class Predictor:
    """A loaded run: ``kind`` "semantic" or "instance", its ``task`` (semantic, watershed,
    maskrcnn), its model (eval mode) and config, and (instance runs) the post-processing
    parameters chosen on val."""

    kind: str
    model: nn.Module
    cfg: Any  # TrainConfig, InstanceConfig or MaskRCNNConfig
    params: dict = field(default_factory=dict)
    task: str = "semantic"


# ------------------------------------------------------------------------------ reading
def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode any image PIL reads to RGB uint8 (3, H, W), with EXIF orientation applied.

    Transparency is flattened onto white. 16-bit grayscale is scaled to 8 bits. Palette and
    grayscale images are expanded to RGB.

    Raises:
        ValueError: ``"{path}: not a readable image ({reason})"``.
    """
    try:
        with Image.open(path) as im:
            im.load()  # the full decode: truncation is caught here
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({_reason(e)})") from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)  # (3, H, W) uint8


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale
        arr = np.asarray(im).astype(np.float64)
        im = Image.fromarray(np.clip(arr / 257, 0, 255).round().astype(np.uint8))
    if "A" in im.getbands() or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("RGB")


def _reason(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):  # its message only repeats the path
        return "not an image format PIL can decode, or the file is corrupt"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:160] if text else type(e).__name__


def collect_images(inputs: list[str | os.PathLike]) -> list[Path | PredictResult]:
    """Expand folders into their entries (sorted, not recursive), keeping the input order.

    An image file (by suffix) found in a folder, or any file named explicitly (whatever its
    suffix), is returned as its ``Path`` to be predicted. A missing input is returned as a
    failed :class:`PredictResult`. Other folder entries are returned as skipped results.
    """
    entries: list[Path | PredictResult] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for p in sorted(item.iterdir()):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    entries.append(p)
                elif p.is_dir():
                    entries.append(PredictResult(p, skipped="a folder (folders are not searched)"))
                else:
                    entries.append(PredictResult(p, skipped="not an image file by its suffix"))
        elif item.is_file():
            entries.append(item)
        else:
            entries.append(PredictResult(item, error=f"{item}: no such file or folder"))
    return entries


# ------------------------------------------------------------------------------ models
def model_input_size(h: int, w: int, stride: int = 32, area: int = TRAIN_AREA) -> tuple[int, int]:
    """The (h, w) the model sees: the training image area at the image's aspect, each side
    rounded to a multiple of ``stride``. Objects then appear at the scale the model learnt
    (a 4000x3000 photo is not run at 4000x3008, and a thumbnail is not run at 64x64)."""
    s = math.sqrt(area / (h * w))
    return max(stride, round(h * s / stride) * stride), max(stride, round(w * s / stride) * stride)


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _as_float(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    image = image.to(device)
    return image.float().div(255) if image.dtype == torch.uint8 else image.float()


@torch.inference_mode()
def predict_image(
    model: nn.Module,
    image: torch.Tensor,
    device: str | torch.device | None = None,
    *,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class labels and probabilities of one image at its own size, from a semantic model.

    The image is resized (antialiased bilinear) to ``size`` (default :func:`model_input_size`:
    the training scale, H and W multiples of 32). The softmax probabilities are resized back
    bilinearly, and the labels are their arg-max, so ``labels == probs.argmax(0)``.
    ``device``: where to run (default: the model's device). The model is moved there, and its
    train/eval mode is restored afterwards.

    Shape:
        image: (3, H, W) uint8, or float in [0, 1].
        returns labels (H, W) int64 and probs (C, H, W) float32, both on the CPU.

    Example:
        >>> model, cfg = segkit.load_run_model("runs/unet")
        >>> labels, probs = predict_image(model, load_image("photo.jpg"))
    """
    dev = _device(model, device)
    h, w = image.shape[-2:]
    size = size or model_input_size(h, w, getattr(model, "stride", 32))
    was_training = model.training
    model.to(dev).eval()
    try:
        x = TF.resize(_as_float(image, dev)[None], list(size), antialias=True)  # (1, 3, h', w')
        probs = model(x.clamp(0, 1)).float().softmax(dim=1)  # (1, C, h', w')
        probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)[0]
    finally:
        model.train(was_training)
    return probs.argmax(dim=0).cpu(), probs.cpu()  # (H, W) int64, (C, H, W) float32


@torch.inference_mode()
def predict_instances(
    model: nn.Module,
    image: torch.Tensor,
    params: dict,
    short_side: int = 256,
    max_size: int = 512,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance labels and pedestrian probability of one image at its own size.

    The model sees the image as in evaluation. It is resized to the run's working size (short
    side ``short_side``, long side at most ``max_size``) and zero-padded bottom/right to a
    multiple of 32. Both maps are cut back, then resized bilinearly to the input size. The
    watershed then runs with the run's tuned ``params`` (sem_threshold, core_level, min_size).

    Shape:
        image: (3, H, W) uint8, or float in [0, 1].
        returns labels (H, W) int64 (0 = background, ids 1..M) and prob (H, W) float32.
    """
    dev = _device(model, device)
    h, w = image.shape[-2:]
    wh, ww = working_size(h, w, short_side, max_size)
    was_training = model.training
    model.to(dev).eval()
    try:
        x = TF.resize(_as_float(image, dev), [wh, ww], antialias=True)  # (3, wh, ww)
        prob, energy = image_maps(model, x, (h, w))  # (H, W) each: evaluation's forward pass
    finally:
        model.train(was_training)
    labels = watershed_from_maps(prob, energy, **params)
    return torch.from_numpy(labels), torch.from_numpy(prob)


# ------------------------------------------------------------------------------ writing
def overlay_labels(
    image: torch.Tensor, labels: torch.Tensor, alpha: float = OVERLAY_ALPHA
) -> np.ndarray:
    """The image blended with the class colours. Shape: (3, H, W) uint8, (H, W) -> (H, W, 3)
    uint8."""
    img = image.permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 3)
    colours = PALETTE[labels.numpy()].astype(np.float32)  # (H, W, 3)
    return ((1 - alpha) * img + alpha * colours).round().astype(np.uint8)


def label_png(labels: torch.Tensor, palette: np.ndarray) -> Image.Image:
    """A "P"-mode PNG: the pixel values are the labels (as in the dataset's label PNGs), and
    the embedded palette shows them in colour. Shape: labels (H, W) with values < 256."""
    im = Image.fromarray(labels.numpy().astype(np.uint8))  # "L"; putpalette makes it "P"
    im.putpalette(palette[:256].astype(np.uint8).ravel().tolist())
    return im


def instance_palette(num: int) -> np.ndarray:
    """Colours of instance ids 0..num-1 (0 black, then tab10 cycling, as in the figures)."""
    return viz.colorize_instances(np.arange(num)[None])[0]  # (num, 3) uint8


def _write_semantic(
    model: nn.Module, image: torch.Tensor, stem: Path, probs: bool, device: torch.device
) -> list[Path]:
    labels, p = predict_image(model, image, device)  # (H, W), (C, H, W)
    paths = [_named(stem, "_labels.png"), _named(stem, "_overlay.png")]
    label_png(labels, PALETTE).save(paths[0])
    Image.fromarray(overlay_labels(image, labels)).save(paths[1])
    if probs:
        paths.append(_named(stem, "_probs.npy"))
        np.save(paths[2], p.numpy().astype(np.float16))  # (C, H, W)
    return paths


def _write_instance(
    pred: Predictor, image: torch.Tensor, stem: Path, probs: bool, device: torch.device
) -> list[Path]:
    if pred.task == "maskrcnn":  # the model is on ``device`` already
        labels, prob = map(torch.from_numpy, mrcnn_instances(pred.model, image, pred.params))
    else:
        labels, prob = predict_instances(
            pred.model, image, pred.params, pred.cfg.short_side, pred.cfg.max_size, device
        )  # (H, W), (H, W)
    paths = [_named(stem, "_instances.png"), _named(stem, "_overlay.png")]
    if int(labels.max()) < 256:
        label_png(labels, instance_palette(256)).save(paths[0])
    else:  # ids past a palette's 256 entries: a 16-bit grayscale PNG of the ids
        Image.fromarray(labels.numpy().astype(np.uint16)).save(paths[0])
    overlay = viz.overlay_instances(image, labels.numpy())  # (H, W, 3) float in [0, 1]
    Image.fromarray((overlay * 255).round().astype(np.uint8)).save(paths[1])
    if probs:
        paths.append(_named(stem, "_probs.npy"))
        np.save(paths[2], prob[None].numpy().astype(np.float16))  # (1, H, W): pedestrian
    return paths


def _named(stem: Path, suffix: str) -> Path:
    return stem.parent / f"{stem.name}{suffix}"


def _output_stems(images: list[Path], out_dir: Path) -> list[Path]:
    """``out_dir/<stem>``, or ``<stem>-2``, ``-3``... when the name is taken in this batch
    (case-insensitively: ``X.jpg`` and ``x.png`` would be one file on some file systems)."""
    used: set[str] = set()
    stems = []
    for p in images:
        name, n = p.stem, 1
        while name.lower() in used:
            n += 1
            name = f"{p.stem}-{n}"
        used.add(name.lower())
        stems.append(out_dir / name)
    return stems


# ------------------------------------------------------------------------------ runs
def load_predictor(run_dir: str | os.PathLike, device: torch.device) -> Predictor:
    """The model of a run folder, semantic or instance. The kind is the task of the checkpoint's
    config (:func:`segkit.config.config_task`).

    Raises:
        SegkitError: a missing folder, or one that holds no segkit checkpoint.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SegkitError(f"{run_dir}: no such run folder (expected <out_dir>/<run name>)")
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise SegkitError(
            f"{run_dir}: not a segkit run folder (no checkpoint.pt; train one with "
            "`segkit train` or `segkit instance train`)"
        )
    config = load_checkpoint(path, require=("model", "config"))["config"]
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a segkit checkpoint (its config is not a dict)")
    task = config_task(config)
    if task not in ("semantic", "watershed", "maskrcnn"):
        raise CheckpointError(f"{path}: holds {describe_config(config)}, which predict cannot run")
    try:
        if task == "watershed":
            return Predictor("instance", *load_instance_run(run_dir, device), task=task)
        if task == "maskrcnn":
            return Predictor("instance", *load_maskrcnn_run(run_dir, device), task=task)
        model, cfg = load_run_model(run_dir, device)
    except SegkitError:
        raise
    except (KeyError, TypeError, ValueError) as e:  # e.g. an unknown model name in the config
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise CheckpointError(
            f"{path}: holds {describe_config(config)}, which this segkit cannot build ({reason})"
        ) from None
    return Predictor("semantic", model, cfg)


def _predict_one(
    pred: Predictor, src: Path, stem: Path, probs: bool, device: torch.device
) -> PredictResult:
    try:
        image = load_image(src)  # (3, H, W) uint8
        if pred.kind == "semantic":
            return PredictResult(src, _write_semantic(pred.model, image, stem, probs, device))
        return PredictResult(src, _write_instance(pred, image, stem, probs, device))
    except ValueError as e:  # load_image's message names the file; others may not
        msg = str(e) if str(e).startswith(f"{src}: ") else f"{src}: {_reason(e)}"
        return PredictResult(src, error=msg)
    except OSError as e:  # the outputs could not be written
        return PredictResult(src, error=f"{src}: could not write the outputs ({_reason(e)})")
    except RuntimeError as e:  # e.g. out of memory on a huge image: the batch goes on
        return PredictResult(src, error=f"{src}: prediction failed ({_reason(e)})")


def predict_paths(
    run_dir: str | os.PathLike,
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    probs: bool = False,
    device: str = "auto",
    on_result: Callable[[PredictResult], None] | None = None,
) -> list[PredictResult]:
    """Predict every image among ``inputs`` (files or folders) with a run, into ``out_dir``.

    Each image gets ``<stem>_labels.png`` (semantic) or ``<stem>_instances.png`` (instance),
    plus ``<stem>_overlay.png``. With ``probs``, it also gets ``<stem>_probs.npy`` (float16,
    (C, H, W); instance runs save the pedestrian probability, (1, H, W)). An unreadable image
    is recorded in its result, and the batch goes on. ``on_result`` is called with each result
    as soon as it is known (the CLI prints it).

    Raises:
        SegkitError: the run folder is missing or is not a segkit run (nothing is predicted).
    """
    try:
        dev = get_device(device)
    except RuntimeError as e:  # "cuda" without CUDA
        raise SegkitError(str(e)) from None
    pred = load_predictor(run_dir, dev)
    entries = collect_images(inputs)
    images = [e for e in entries if isinstance(e, Path)]
    stems = iter(_output_stems(images, Path(out_dir)))
    if images:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for entry in entries:
        r = _predict_one(pred, entry, next(stems), probs, dev) if isinstance(entry, Path) else entry
        results.append(r)
        if on_result is not None:
            on_result(r)
    return results


def _print_result(r: PredictResult) -> None:
    if r.error is not None:
        print(f"error: {r.error}", file=sys.stderr, flush=True)
    elif r.skipped is not None:
        print(f"skipped: {r.source}: {r.skipped}", flush=True)
    else:
        print(f"{r.source} -> {', '.join(str(p) for p in r.written)}", flush=True)


def main_predict(
    run_dir: str | os.PathLike,
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    probs: bool = False,
    device: str = "auto",
) -> int:
    """`segkit predict`: one line per input and a summary. Returns the exit code: 0 when every
    image was predicted, 1 when any failed (or none was found), and 2 when the run folder is
    unusable."""
    try:
        results = predict_paths(
            run_dir, inputs, out_dir, probs=probs, device=device, on_result=_print_result
        )
    except SegkitError as e:
        print(f"segkit: error: {e}", file=sys.stderr)
        return 2
    done = sum(r.ok for r in results)
    failed = sum(r.error is not None for r in results)
    skipped = sum(r.skipped is not None for r in results)
    summary = f"{failed} failed, {skipped} skipped"
    print(f"predicted {done} of {done + failed} images into {out_dir} ({summary})")
    if done + failed == 0:
        print("segkit: error: no image files among the inputs", file=sys.stderr)
        return 1
    return 1 if failed else 0

"""The trainings of one reproduction, in one list, and what each is expected to cost.

``segkit reproduce`` trains :func:`trainings`; ``segkit reproduce --plan [--device cuda|cpu]``
prints :func:`plan` without training: one line per run (name, model, epochs, weights, estimated
minutes from the per-epoch costs in :data:`segkit.config.MODEL_TABLE`) and the total. On CUDA the
recipes follow the assignment's protocol (50 epochs, ImageNet ResNets); :func:`protocol_recipe`
trains the ResNets from scratch, saying so in one line, where torchvision cannot get the weights.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from .config import (
    IMAGENET,
    INSTANCE_EPOCH_SECONDS,
    INSTANCE_GPU_EPOCH_SECONDS,
    MASKRCNN_EPOCH_SECONDS,
    MASKRCNN_GPU_EPOCH_SECONDS,
    MODEL_TABLE,
    QUICK_INSTANCE,
    QUICK_MASKRCNN,
    QUICK_SEMANTIC,
    SEMANTIC_MODELS,
    InstanceConfig,
    MaskRCNNConfig,
    RunConfig,
    TrainConfig,
    on_cuda,
    recipe,
)
from .constants import SPLIT_SIZES
from .models import weights_label
from .models.pretrained import resnet18_imagenet_source
from .study import (
    AUGMENT_EPOCHS,
    AUGMENT_MODEL,
    LEVER_EPOCHS,
    augmentation_configs,
    lever_configs,
)

CPU_BASIS = "measured in the full run behind the report (2-core CPU)"
PENNFUDAN_TRAIN_IMAGES = 100  # of the fixed split (170 - val - test); for quick-mode scaling
RUN_OVERHEAD_SECONDS = {"cpu": 30.0, "cuda": 15.0}  # per run: data preload, loader, test, figures


@dataclass(frozen=True)
class PlannedRun:
    """One line of the plan."""

    name: str
    model: str
    epochs: int
    weights: str
    minutes: float
    basis: str  # where the per-epoch cost comes from


@functools.cache
def _imagenet_resnet() -> tuple[bool, str]:
    return resnet18_imagenet_source()


def protocol_recipe(model: str, **overrides: object) -> TrainConfig:
    """:func:`segkit.config.recipe`, except that a recipe asking for ImageNet ResNet weights
    that torchvision cannot get here (no cache, no internet) trains from scratch, and says so
    in one line."""
    cfg = recipe(model, **overrides)
    if cfg.weights == IMAGENET and model.startswith("resnet"):
        ok, why = _imagenet_resnet()
        if not ok:
            print(f"{model}: ImageNet weights unavailable ({why}); training from scratch")
            cfg = dataclasses.replace(cfg, weights="none")
    return cfg


def instance_config(common: dict, quick: bool) -> InstanceConfig:
    """The watershed run of a reproduction (``common``: device, out_dir, data_dir)."""
    keys = ("device", "out_dir", "data_dir")
    return InstanceConfig(
        **{k: common[k] for k in keys if k in common}, **(QUICK_INSTANCE if quick else {})
    )


def maskrcnn_config(common: dict, quick: bool) -> MaskRCNNConfig:
    """The Mask R-CNN run of a reproduction (``common``: device, out_dir, data_dir)."""
    keys = ("device", "out_dir", "data_dir")
    return MaskRCNNConfig(
        **{k: common[k] for k in keys if k in common}, **(QUICK_MASKRCNN if quick else {})
    )


def trainings(
    common: dict, quick: bool, instance: bool = True, *, check_weights: bool = True
) -> list[RunConfig]:
    """Every training of the reproduction, longest expected first. ``common``: the fields
    every run shares (device, out_dir, data_dir, and the quick sizes in quick mode).
    ``check_weights=False`` keeps the protocol's weights without checking that they can be
    had (the plan reports that once)."""
    study = recipe(AUGMENT_MODEL, **{"epochs": AUGMENT_EPOCHS, **common})
    levers = recipe(AUGMENT_MODEL, **{"epochs": LEVER_EPOCHS, **common})
    runs: list[RunConfig] = [*augmentation_configs(study), *lever_configs(levers)]
    model = protocol_recipe if check_weights else recipe
    runs += [model(m, **common) for m in SEMANTIC_MODELS]
    runs += [instance_config(common, quick), maskrcnn_config(common, quick)] if instance else []
    cuda = on_cuda(str(common.get("device", "auto")))
    return sorted(runs, key=lambda cfg: estimated_seconds(cfg, cuda)[0], reverse=True)


def estimated_seconds(cfg: RunConfig, cuda: bool) -> tuple[float, str]:
    """Expected training seconds of ``cfg`` on the CPU or one GPU, and their basis."""
    overhead = RUN_OVERHEAD_SECONDS["cuda" if cuda else "cpu"]
    if isinstance(cfg, InstanceConfig):
        per_epoch = INSTANCE_GPU_EPOCH_SECONDS if cuda else INSTANCE_EPOCH_SECONDS
        basis = "estimate" if cuda else CPU_BASIS
    elif isinstance(cfg, MaskRCNNConfig):
        per_epoch = MASKRCNN_GPU_EPOCH_SECONDS if cuda else MASKRCNN_EPOCH_SECONDS
        basis = "estimate" if cuda else "measured 2026-12-05 (2 threads)"
    else:
        spec = MODEL_TABLE[cfg.model]  # type: ignore[attr-defined]
        per_epoch = spec.gpu_epoch_seconds if cuda else spec.epoch_seconds
        basis = spec.gpu_basis if cuda else CPU_BASIS
    scale = 1.0
    if cfg.limit_train and isinstance(cfg, TrainConfig):  # quick runs: a fraction of the epoch
        scale = min(1.0, cfg.limit_train / SPLIT_SIZES["train"])
    elif cfg.limit_train:  # Penn-Fudan: about 100 training images
        scale = min(1.0, cfg.limit_train / PENNFUDAN_TRAIN_IMAGES)
    return overhead + cfg.epochs * per_epoch * scale, basis


def plan(device: str = "auto", quick: bool = False, instance: bool = True) -> list[PlannedRun]:
    """The runs :func:`segkit.reproduce.reproduce` would train on ``device``, with estimated
    minutes, in training order. Trains nothing and downloads nothing."""
    common = dict(device=device, **(QUICK_SEMANTIC if quick else {}))
    cuda = on_cuda(device)
    rows = []
    for cfg in trainings(common, quick, instance, check_weights=False):
        seconds, basis = estimated_seconds(cfg, cuda)
        model = getattr(cfg, "model", None) or cfg.task  # Mask R-CNN has no model field
        weights = weights_label(model, getattr(cfg, "weights", None))
        rows.append(PlannedRun(cfg.name, model, cfg.epochs, weights, seconds / 60, basis))
    return rows


def format_plan(rows: list[PlannedRun], device: str) -> str:
    """The plan as a text table, the total, and a line on the ImageNet ResNet weights."""
    where = "one GPU (CUDA)" if on_cuda(device) else "the CPU"
    lines = [f"segkit reproduce on {where}: {len(rows)} trainings (nothing is trained now)"]
    lines.append(f"{'run':24s}{'model':15s}{'epochs':>7s}  {'weights':10s}{'est. min':>9s}  basis")
    for r in rows:
        lines.append(
            f"{r.name:24s}{r.model:15s}{r.epochs:7d}  {r.weights:10s}{r.minutes:9.1f}  {r.basis}"
        )
    total = sum(r.minutes for r in rows)
    lines.append(f"{'total':24s}{'':15s}{'':7s}  {'':10s}{total:9.1f}  (one run at a time)")
    if not on_cuda(device):  # the CPU minutes were measured with two trainings side by side
        lines.append(f"with --jobs 2 (the CPU default), about {total / 2:.0f} minutes of wall time")
    if any(r.weights == IMAGENET for r in rows):
        ok, why = _imagenet_resnet()
        lines.append(
            "ImageNet ResNet-18 weights: "
            + (
                f"available ({why})"
                if ok
                else f"unavailable here ({why}): the ResNets would "
                "train from scratch on this machine"
            )  # fmt: skip
        )
    return "\n".join(lines)

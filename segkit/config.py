"""Run configurations (one convention for both tasks), the model table, recipes and quick mode.

Every field carries its help text in ``metadata``; ``segkit.cli`` turns the fields into flags, with
the help, the default and (for ``choices``) the valid values. ``out_dir`` is always the parent of
the run folder, and the run folder is ``<out_dir>/<name>``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .constants import CLASS_WEIGHTINGS, NUM_CLASSES

DEFAULT_WEIGHTS = "default"  # the model's own default (ImageNet for effnet_unet, none otherwise)


def opt(default: Any, help: str, choices: tuple | None = None, **kw: Any) -> Any:
    """A dataclass field with CLI help (and valid values) in its metadata."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class ModelSpec:
    """One row of the model table: the label used in tables and figures, and its recipe."""

    label: str
    recipe: dict[str, Any]
    epoch_seconds: float  # one training epoch + validation, one thread of the 2-core CPU


# The quality levers of the lever study (`segkit study --levers`, report/generated/levers.json):
# square-root class weights, an exponential moving average of the weights, horizontal-flip
# test-time augmentation. A run with EMA/TTA also reports its val numbers without each
# (results_val.json "ablation").
LEVERS: dict[str, Any] = dict(class_weighting="sqrt", ema_decay=0.995, tta=True)
# What the recipes take from them: all three, the setting with the best val AP in the lever study
# (one short run per setting, within the seed spread; report Q4/Q5).
RECIPE_LEVERS: dict[str, Any] = dict(LEVERS)

# The semantic models of the assignment, in report order: labels and recipes come from here only.
# epoch_seconds: measured in the 2026-11-24 full run (one thread of that run's 2-core CPU);
# `segkit reproduce --jobs 2` starts the longest trainings first.
MODEL_TABLE: dict[str, ModelSpec] = {
    "baseconv": ModelSpec("BaseConv", dict(epochs=14, **RECIPE_LEVERS), 115),
    "unet": ModelSpec("UNet", dict(epochs=20, **RECIPE_LEVERS), 174),
    "resnet18": ModelSpec("ResNet-18, no skips", dict(epochs=4, **RECIPE_LEVERS), 236),
    "resnet18_unet": ModelSpec("ResNet-18 UNet", dict(epochs=5, **RECIPE_LEVERS), 205),
    "effnet_unet": ModelSpec("EfficientNet-Lite0 UNet", dict(epochs=15, **RECIPE_LEVERS), 107),
}
INSTANCE_EPOCH_SECONDS = 22.0  # one Penn-Fudan epoch, measured like epoch_seconds
SEMANTIC_MODELS: tuple[str, ...] = tuple(MODEL_TABLE)


def model_label(name: str) -> str:
    """The label of a model in tables and figures (its registry name when not in the table)."""
    spec = MODEL_TABLE.get(name)
    return spec.label if spec else name


@dataclass
class RunConfig:
    """Fields every run has: optimisation, system, and where the run folder goes."""

    # optimisation
    epochs: int = opt(12, "training epochs")
    batch_size: int = opt(8, "images per training step")
    optimizer: str = opt("adamw", "optimiser", choices=("adamw", "sgd"))
    lr: float = opt(1e-3, "peak learning rate")
    weight_decay: float = opt(1e-4, "decoupled weight decay (AdamW) or L2 (SGD)")
    scheduler: str = opt(
        "cosine",
        "learning-rate schedule: linear warmup then cosine per step, plateau on val loss, or none",
        choices=("cosine", "plateau", "none"),
    )
    warmup_steps: int = opt(50, "warmup steps of the cosine schedule (at most a tenth of all)")
    # data
    data_dir: str | None = opt(None, "dataset root (default: $SEGKIT_DATA, then ./data)")
    flip_p: float = opt(0.5, "probability of a horizontal flip in training")
    limit_train: int | None = opt(None, "use only the first N training images (smoke tests)")
    limit_val: int | None = opt(None, "use only the first N validation images (smoke tests)")
    # system
    device: str = opt(
        "auto", "where to train: auto picks CUDA when present", ("auto", "cpu", "cuda")
    )
    amp: bool = opt(True, "mixed precision (CUDA only)")
    channels_last: bool | None = opt(
        None, "channels-last memory format; none: on CUDA only (25-30%% slower on this CPU)"
    )
    num_threads: int | None = opt(None, "torch CPU threads (default: torch's choice)")
    seed: int = opt(0, "random seed (model init, shuffling, augmentation)")
    out_dir: str = opt("runs", "parent folder of the run folder <out_dir>/<name>")
    run_name: str | None = opt(None, "run folder name (default: the model name)")

    @property
    def name(self) -> str:
        return self.run_name or self.default_name()

    def default_name(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """Rebuild from ``to_dict()`` output (lists back to tuples; unknown keys dropped)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        )


@dataclass
class TrainConfig(RunConfig):
    """Everything that defines a semantic-segmentation run; saved in checkpoints and results.

    Example:
        >>> cfg = recipe("unet")                       # the tuned recipe
        >>> cfg = dataclasses.replace(cfg, epochs=1)    # a quick variant
    """

    model: str = opt(
        "unet", "model name", choices=(*SEMANTIC_MODELS, "effnet_lite1_unet", "effnet_lite2_unet")
    )
    weights: str | None = opt(
        DEFAULT_WEIGHTS, "'default' (the model's own), 'imagenet', 'none', or a local weights file"
    )
    num_classes: int = opt(NUM_CLASSES, "number of classes (the dataset's)")
    freeze_encoder: bool = opt(False, "train the decoder only")
    aug_scale: tuple[float, float] | None = opt(
        (0.5, 1.0), "random-resized-crop area range, 'none' for no crop"
    )
    aug_ratio: tuple[float, float] = opt((3 / 4, 4 / 3), "random-resized-crop aspect range")
    class_weighting: str = opt(
        "inverse",
        "loss weights per class from the FULL train split's pixel counts: inverse frequency "
        "(mean 1, then capped), sqrt (square root of it, capped, then mean 1) or none",
        choices=CLASS_WEIGHTINGS,
    )
    weight_cap: float = opt(10.0, "largest class weight")
    dice_weight: float = opt(0.0, "weight of a soft Dice term beside the cross-entropy")
    ema_decay: float | None = opt(
        None, "keep an exponential moving average of the weights with this decay (e.g. 0.999)"
    )
    tta: bool = opt(False, "evaluate with horizontal-flip test-time augmentation")
    cpu_bf16: bool = opt(False, "bf16 autocast on the CPU (fast on CPUs with AVX512-BF16/AMX)")
    early_stop: int | None = opt(None, "stop after N epochs without improvement")
    select_metric: str = opt(
        "val_map", "best checkpoint on", choices=("val_map", "val_miou", "val_loss")
    )
    extra: dict = opt({}, "free-form notes stored with the run")

    def default_name(self) -> str:
        return self.model


@dataclass
class InstanceConfig(RunConfig):
    """One Penn-Fudan instance-segmentation run; saved in the checkpoint and every results file."""

    model: str = opt("effnet_unet", "body of the two-head UNet", choices=("effnet_unet", "unet"))
    weights: str | None = opt(DEFAULT_WEIGHTS, "'default', 'imagenet', 'none' or a local file")
    num_energy_levels: int = opt(16, "K, the quantised distance-to-boundary levels")
    short_side: int = opt(256, "images are resized so the short side is this")
    max_size: int = opt(512, "... and the long side at most this")
    crop_size: int = opt(256, "square training crop")
    aug_scale: tuple[float, float] = opt((0.75, 1.25), "random rescale range in training")
    batch_size: int = opt(4, "images per training step")
    limit_test: int | None = opt(None, "use only the first N test images (smoke tests)")
    split_seed: int = opt(0, "seed of the fixed Penn-Fudan split")
    val_size: int = opt(20, "validation images in the split")
    test_size: int = opt(50, "test images in the split")
    epochs: int = opt(40, "training epochs")
    energy_weight: float = opt(1.0, "weight of the energy loss beside the mask BCE")
    # post-processing defaults (training tunes them on val and writes postprocess.json)
    sem_threshold: float = opt(0.5, "pedestrian probability threshold")
    core_level: float = opt(3.0, "energy level that seeds the watershed")
    min_size: int = opt(200, "smallest instance kept, in pixels")

    def default_name(self) -> str:
        return "instance"


RECIPES: dict[str, dict[str, Any]] = {
    name: dict(model=name, **spec.recipe) for name, spec in MODEL_TABLE.items()
}

# Quick mode, everywhere (CLI --quick, reproduce --quick, the notebook): small but not degenerate.
QUICK_SEMANTIC: dict[str, Any] = dict(epochs=3, limit_train=28, limit_val=12, batch_size=2)
QUICK_INSTANCE: dict[str, Any] = dict(
    epochs=8, limit_train=32, limit_val=6, limit_test=6, short_side=128, max_size=256,
    crop_size=128,
)  # fmt: skip
QUICK_OUT_DIR = "runs/quick"  # quick runs never mix with real ones


def field_defaults(config: dict) -> dict[str, Any]:
    """Today's defaults of the config class a saved ``config`` dict came from. A field added
    later defaults to the earlier behaviour, so a saved config lacking it means that default."""
    cls = InstanceConfig if "num_energy_levels" in config else TrainConfig
    fields = dataclasses.fields(cls)
    return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}


def recipe(model: str, **overrides: Any) -> TrainConfig:
    """The tuned :class:`TrainConfig` for ``model`` (any registered name), with overrides."""
    base = RECIPES.get(model, dict(model=model))
    return TrainConfig(**{**base, **overrides})

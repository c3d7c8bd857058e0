"""Run configurations (one convention for every task), the model table, recipes and quick mode.

Every field carries its help text in ``metadata``; ``segkit.cli`` turns the fields into flags, with
the help, the default and (for ``choices``) the valid values. ``out_dir`` is always the parent of
the run folder, and the run folder is ``<out_dir>/<name>``. Every config names its ``task``
("semantic", "watershed", "maskrcnn"); :func:`config_task` reads it from a saved config (inferring
it for run folders saved before the field existed) and :func:`config_class` maps it to the class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from .constants import (
    CLASS_WEIGHTINGS,
    NUM_CLASSES,
    NUM_ENERGY_LEVELS,
    PENNFUDAN_SPLIT_SEED,
    PENNFUDAN_TEST_SIZE,
    PENNFUDAN_VAL_SIZE,
)

DEFAULT_WEIGHTS = "default"  # the model's own default (ImageNet for effnet_unet, none otherwise)


def opt(default: Any, help: str, choices: tuple | None = None, **kw: Any) -> Any:
    """A dataclass field with CLI help (and valid values) in its metadata."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def task_field(task: str) -> Any:
    """The ``task`` field of a config class: fixed by the class (not an argument, not a flag),
    saved with every config so a run folder says what kind of run it holds."""
    return opt(task, "the kind of run (fixed by the config class)", init=False)


@dataclass(frozen=True)
class ModelSpec:
    """One row of the model table: the label used in tables and figures, its recipe on the CPU
    and on a GPU, and the measured (or estimated) seconds of one epoch on each."""

    label: str
    recipe: dict[str, Any]
    epoch_seconds: float  # one training epoch + validation, one thread of the 2-core CPU
    gpu_recipe: dict[str, Any]  # overrides of ``recipe`` on CUDA (the assignment's protocol)
    gpu_epoch_seconds: float  # one epoch + validation on one H100/H200-class GPU, AMP
    gpu_basis: str  # where gpu_epoch_seconds comes from


# The quality levers of the lever study (`segkit study --levers`, report/generated/levers.json):
# square-root class weights, an exponential moving average of the weights, horizontal-flip
# test-time augmentation. A run with EMA/TTA also reports its val numbers without each
# (results_val.json "ablation").
LEVERS: dict[str, Any] = dict(class_weighting="sqrt", ema_decay=0.995, tta=True)
# What the recipes take from them: all three, the setting with the best val AP in the lever study
# (one short run per setting, within the seed spread; report Q4/Q5).
RECIPE_LEVERS: dict[str, Any] = dict(LEVERS)

# The assignment's protocol for Q6/Q7: every model of the comparison trains 50 epochs. The CPU
# recipes cannot afford it (a UNet epoch is minutes on the 2-core CPU); on CUDA the recipes follow
# it (GPU_RECIPE below), the ResNets starting from ImageNet weights where torchvision can download
# them (segkit.plan.protocol_recipe trains them from scratch, saying so, where it cannot).
PROTOCOL_EPOCHS = 50
IMAGENET = "imagenet"
# GPU seconds per epoch: the H200 check (bench/results/gpu_check_h200_2026-11-27.md) measured UNet
# and EfficientNet training at 668 and 240 img/s, i.e. 0.86 s and 2.4 s for the 572 training
# images; GPU_VAL_SECONDS (validation on 72 images with the per-pixel AP) is an estimate. The
# others scale the UNet's GPU epoch by their CPU cost relative to the UNet's.
GPU_VAL_SECONDS = 1.0
_UNET_GPU = 572 / 668 + GPU_VAL_SECONDS
_MEASURED = "H200 training throughput + estimated validation"
_SCALED = "estimate: the UNet's GPU epoch scaled by CPU cost"

# CPU seconds per epoch (training + validation): the full run behind the report (results.json,
# two trainings side by side, one torch thread each, on the 2-core CPU): train_seconds / epochs.
_CPU_EPOCH = {"baseconv": 365, "unet": 597, "resnet18": 534, "resnet18_unet": 597,
              "effnet_unet": 403}  # fmt: skip


def _scaled_gpu(model: str) -> float:
    return _UNET_GPU * _CPU_EPOCH[model] / _CPU_EPOCH["unet"]


# The semantic models of the assignment, in report order: labels and recipes come from here only.
# `segkit reproduce --jobs 2` starts the longest trainings first.
MODEL_TABLE: dict[str, ModelSpec] = {
    "baseconv": ModelSpec(
        "BaseConv", dict(epochs=14, **RECIPE_LEVERS), _CPU_EPOCH["baseconv"],
        dict(epochs=PROTOCOL_EPOCHS), _scaled_gpu("baseconv"), _SCALED,
    ),
    "unet": ModelSpec(
        "UNet", dict(epochs=20, **RECIPE_LEVERS), _CPU_EPOCH["unet"],
        dict(epochs=PROTOCOL_EPOCHS), _UNET_GPU, _MEASURED,
    ),
    "resnet18": ModelSpec(
        "ResNet-18, no skips", dict(epochs=4, **RECIPE_LEVERS), _CPU_EPOCH["resnet18"],
        dict(epochs=PROTOCOL_EPOCHS, weights=IMAGENET), _scaled_gpu("resnet18"), _SCALED,
    ),
    "resnet18_unet": ModelSpec(
        "ResNet-18 UNet", dict(epochs=5, **RECIPE_LEVERS), _CPU_EPOCH["resnet18_unet"],
        dict(epochs=PROTOCOL_EPOCHS, weights=IMAGENET), _scaled_gpu("resnet18_unet"), _SCALED,
    ),
    "effnet_unet": ModelSpec(
        "EfficientNet-Lite0 UNet", dict(epochs=15, **RECIPE_LEVERS), _CPU_EPOCH["effnet_unet"],
        dict(epochs=PROTOCOL_EPOCHS), 572 / 240 + GPU_VAL_SECONDS, _MEASURED,
    ),
}  # fmt: skip
# Penn-Fudan epochs, measured like _CPU_EPOCH: the watershed run (one thread, the other core busy)
# and the Mask R-CNN run (2 threads, 2026-12-05); GPU: estimates, not measured on a GPU.
INSTANCE_EPOCH_SECONDS = 58.5
INSTANCE_GPU_EPOCH_SECONDS = 2.0  # 100 images at 256 px
MASKRCNN_EPOCH_SECONDS = 187.0
MASKRCNN_GPU_EPOCH_SECONDS = 10.0  # 100 images at 400-720 px, batch 2
SEMANTIC_MODELS: tuple[str, ...] = tuple(MODEL_TABLE)


def model_label(name: str) -> str:
    """The label of a model in tables and figures (its registry name when not in the table)."""
    spec = MODEL_TABLE.get(name)
    return spec.label if spec else name


# config fields that count something and must be at least 1
POSITIVE_FIELDS = ("epochs", "batch_size")


@dataclass
class RunConfig:
    """Fields every run has: its task, optimisation, system, and where the run folder goes."""

    task: str = task_field("")  # each registered subclass sets its own (see register_task)
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

    def __post_init__(self) -> None:
        """Counts that must be positive; a bad value is one clear line (ValueError)."""
        for name in POSITIVE_FIELDS:
            value = getattr(self, name, None)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (got {value})")

    @property
    def name(self) -> str:
        return self.run_name or self.default_name()

    def default_name(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """Rebuild from ``to_dict()`` output (lists back to tuples; unknown keys dropped). A
        saved config of another task is refused (ValueError); one saved before the ``task``
        field existed gets its task from :func:`config_task`."""
        if config_task(d) != cls.task:
            raise ValueError(f"a {config_task(d)!r} config is not a {cls.__name__} ({cls.task!r})")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        )


# task -> its config class; register_task adds one ("maskrcnn" -> MaskRCNNConfig is registered
# where that class is defined)
TASKS: dict[str, type[RunConfig]] = {}


def register_task(cls: type[RunConfig]) -> type[RunConfig]:
    """Class decorator: ``cls`` (a :class:`RunConfig` whose ``task`` field is
    ``task_field(name)``) is the config class of the runs of task ``name``."""
    if not cls.task or TASKS.get(cls.task, cls) is not cls:
        raise ValueError(f"{cls.__name__}: task {cls.task!r} is empty or taken")
    TASKS[cls.task] = cls
    return cls


@register_task
@dataclass
class TrainConfig(RunConfig):
    """Everything that defines a semantic-segmentation run; saved in checkpoints and results.

    Example:
        >>> cfg = recipe("unet")                       # the tuned recipe
        >>> cfg = dataclasses.replace(cfg, epochs=1)    # a quick variant
    """

    task: str = task_field("semantic")
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


@register_task
@dataclass
class InstanceConfig(RunConfig):
    """One Penn-Fudan instance-segmentation run (two-head UNet + watershed); saved in the
    checkpoint and every results file."""

    task: str = task_field("watershed")
    model: str = opt("effnet_unet", "body of the two-head UNet", choices=("effnet_unet", "unet"))
    weights: str | None = opt(DEFAULT_WEIGHTS, "'default', 'imagenet', 'none' or a local file")
    num_energy_levels: int = opt(NUM_ENERGY_LEVELS, "K, the quantised distance-to-boundary levels")
    short_side: int = opt(256, "images are resized so the short side is this")
    max_size: int = opt(512, "... and the long side at most this")
    crop_size: int = opt(256, "square training crop")
    aug_scale: tuple[float, float] = opt((0.75, 1.25), "random rescale range in training")
    batch_size: int = opt(4, "images per training step")
    limit_test: int | None = opt(None, "use only the first N test images (smoke tests)")
    split_seed: int = opt(PENNFUDAN_SPLIT_SEED, "seed of the fixed Penn-Fudan split")
    val_size: int = opt(PENNFUDAN_VAL_SIZE, "validation images in the split")
    test_size: int = opt(PENNFUDAN_TEST_SIZE, "test images in the split")
    epochs: int = opt(40, "training epochs")
    energy_weight: float = opt(1.0, "weight of the energy loss beside the mask BCE")
    # post-processing defaults (training tunes them on val and writes postprocess.json)
    sem_threshold: float = opt(0.5, "pedestrian probability threshold")
    core_level: float = opt(3.0, "energy level that seeds the watershed")
    min_size: int = opt(200, "smallest instance kept, in pixels")

    def default_name(self) -> str:
        return "instance"


# --------------------------------------------------------------- Mask R-CNN (detection-based)
@register_task
@dataclass
class MaskRCNNConfig(RunConfig):
    """One Penn-Fudan Mask R-CNN run (torchvision ``MaskRCNN`` on the ImageNet EfficientNet-Lite0
    encoder under an FPN); its defaults are the recipe (``segkit reproduce`` trains exactly it).

    Example:
        >>> cfg = MaskRCNNConfig(epochs=2, limit_train=8)   # a smoke variant
    """

    task: str = task_field("maskrcnn")
    weights: str | None = opt(
        "imagenet",
        "'imagenet' (EfficientNet-Lite0 encoder, offline), 'none', 'coco' (torchvision's COCO "
        "maskrcnn_resnet50_fpn, needs the internet or the torch hub cache) or a local file of "
        "those COCO weights",
    )
    short_side: int = opt(400, "images are resized so the short side is this (about native)")
    max_size: int = opt(720, "... and the long side at most this")
    fpn_channels: int = opt(128, "FPN channels over the EfficientNet-Lite0 maps")
    rois_per_image: int = opt(256, "RoIs sampled per image for the box and mask heads")
    frozen_stages: int = opt(2, "EfficientNet stages frozen after the stem (2: up to stride 4)")
    anchor_size: int = opt(32, "anchor size on the stride-4 FPN map; each coarser map doubles it")
    aug_scale: tuple[float, float] = opt(
        (0.85, 1.15), "random rescale range in training (image, masks and boxes together)"
    )
    batch_size: int = opt(2, "images per training step")
    epochs: int = opt(12, "training epochs")
    optimizer: str = opt("sgd", "optimiser (SGD: momentum 0.9)", choices=("adamw", "sgd"))
    lr: float = opt(0.01, "peak learning rate")
    warmup_steps: int = opt(100, "warmup steps of the cosine schedule (at most a tenth of all)")
    clip_grad: float | None = opt(10.0, "clip the gradient norm at this ('none': do not clip)")
    limit_test: int | None = opt(None, "use only the first N test images (smoke tests)")
    split_seed: int = opt(PENNFUDAN_SPLIT_SEED, "seed of the fixed Penn-Fudan split")
    val_size: int = opt(PENNFUDAN_VAL_SIZE, "validation images in the split")
    test_size: int = opt(PENNFUDAN_TEST_SIZE, "test images in the split")
    select_metric: str = opt(
        "val_ap", "checkpoint.pt: the epoch of the best val mask AP, or the last epoch",
        choices=("val_ap", "last"),
    )  # fmt: skip
    # post-processing defaults (training tunes them on val and writes postprocess.json)
    score_threshold: float = opt(0.05, "detections below this score are dropped")
    mask_threshold: float = opt(0.5, "RoI mask probability threshold")

    def default_name(self) -> str:
        return "maskrcnn"


RECIPES: dict[str, dict[str, Any]] = {
    name: dict(model=name, **spec.recipe) for name, spec in MODEL_TABLE.items()
}

# Quick mode, everywhere (CLI --quick, reproduce --quick, the notebook): small but not degenerate.
QUICK_SEMANTIC: dict[str, Any] = dict(epochs=3, limit_train=28, limit_val=12, batch_size=2)
QUICK_INSTANCE: dict[str, Any] = dict(
    epochs=8, limit_train=32, limit_val=6, limit_test=6, short_side=128, max_size=256,
    crop_size=128,
)  # fmt: skip
QUICK_MASKRCNN: dict[str, Any] = dict(
    epochs=3, limit_train=12, limit_val=6, limit_test=6, short_side=160, max_size=288,
    warmup_steps=10,
)  # fmt: skip
QUICK_OUT_DIR = "runs/quick"  # quick runs never mix with real ones
REPORT_GENERATED = "report/generated"  # what the report reads: full runs only, never quick ones


def config_task(config: dict[str, Any]) -> str:
    """The task of a saved config dict: its ``task``; for a config saved before that field
    existed, the one place that infers it (watershed configs have ``num_energy_levels``, or
    ``body`` before the redesign; every other config was semantic)."""
    task = config.get("task")
    if task is not None:
        return task
    return "watershed" if "num_energy_levels" in config or "body" in config else "semantic"


def config_class(task: str) -> type[RunConfig]:
    """The config class of ``task`` (see :data:`TASKS`); ValueError naming the known ones."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; this segkit knows {sorted(TASKS)}")
    return TASKS[task]


def load_config(config: dict[str, Any]) -> RunConfig:
    """A saved config dict (results or checkpoint) as its config class."""
    return config_class(config_task(config)).from_dict(config)


def field_defaults(config: dict) -> dict[str, Any]:
    """Today's defaults of the config class a saved ``config`` dict came from. A field added
    later defaults to the earlier behaviour, so a saved config lacking it means that default
    (``task`` included: a config saved before it existed has the task :func:`config_task` says)."""
    cls = config_class(config_task(config))
    fields = dataclasses.fields(cls)
    return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}


def on_cuda(device: str) -> bool:
    """Whether ``device`` ("auto", "cpu", "cuda", "cuda:1") means the GPU recipes."""
    if device == "auto":
        return torch.cuda.is_available()
    return device.startswith("cuda")


def recipe(model: str, **overrides: Any) -> TrainConfig:
    """The tuned :class:`TrainConfig` for ``model`` (any registered name), with overrides. On
    CUDA (``device="cuda"``, or "auto" with a GPU present) the model table's GPU recipe applies:
    the assignment's 50 epochs, ImageNet weights for the ResNets."""
    base = RECIPES.get(model, dict(model=model))
    if on_cuda(str(overrides.get("device", "auto"))) and model in MODEL_TABLE:
        base = {**base, **MODEL_TABLE[model].gpu_recipe}
    return TrainConfig(**{**base, **overrides})

"""One dataclass per run (``TrainConfig``), the per-model recipes, and nothing else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    """Everything that defines a semantic-segmentation run; saved in checkpoints and results.

    Example:
        >>> cfg = recipe("unet")                       # the tuned recipe
        >>> cfg = dataclasses.replace(cfg, epochs=1)    # a quick variant
    """

    # model
    model: str = "unet"
    weights: str | None = None  # None | "imagenet" | path to a local weights file
    num_classes: int = 9
    freeze_encoder: bool = False
    # data
    data_dir: str | None = None  # default: $SEGKIT_DATA, then ./data
    batch_size: int = 8
    aug_scale: tuple[float, float] | None = (0.5, 1.0)  # random resized crop; None: no crop
    aug_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    limit_train: int | None = None  # first N images only (quick runs)
    limit_val: int | None = None
    # optimisation
    epochs: int = 12
    optimizer: str = "adamw"  # "adamw" | "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # "cosine" (per step, with warmup) | "plateau" | "none"
    warmup_steps: int = 50
    class_weighting: str = "inverse"  # "inverse" (capped, mean 1) | "none"
    weight_cap: float = 10.0
    early_stop: int | None = None  # epochs without improvement of select_metric
    select_metric: str = "val_map"  # best checkpoint on: "val_map" (higher) or "val_loss" (lower)
    # system
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = True  # takes effect on CUDA only
    channels_last: bool = True
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default
    seed: int = 0
    out_dir: str = "runs"
    run_name: str | None = None  # default: the model name
    extra: dict = field(default_factory=dict)  # free-form notes stored with the run

    @property
    def name(self) -> str:
        return self.run_name or self.model

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)


# Recipes sized so that all five models train on a 2-core CPU in well under 4 hours in total.
RECIPES: dict[str, dict] = {
    "baseconv": dict(model="baseconv", epochs=14),
    "unet": dict(model="unet", epochs=20),
    "resnet18": dict(model="resnet18", epochs=4),
    "resnet18_unet": dict(model="resnet18_unet", epochs=5),
    "effnet_unet": dict(model="effnet_unet", weights="imagenet", epochs=15),
}


def recipe(model: str, **overrides) -> TrainConfig:
    """The tuned :class:`TrainConfig` for ``model`` (any registered name), with overrides."""
    base = RECIPES.get(model, dict(model=model))
    return TrainConfig(**{**base, **overrides})

"""The one optimiser + learning-rate schedule builder, shared by semantic and instance runs."""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel

from .config import InstanceConfig, TrainConfig

SGD_MOMENTUM = 0.9  # optimizer="sgd": torch SGD with this momentum


def warmup_length(warmup_steps: int, steps: int) -> int:
    """The linear warm-up a run of ``steps`` optimiser steps gets: ``warmup_steps``, capped at a
    tenth of the run so that short runs (studies, quick mode) spend most steps at full rate."""
    return max(1, min(warmup_steps, steps // 10))


def run_warmup_steps(config: dict, train_images: int) -> int:
    """The warm-up a saved run config got, from its epochs, batch size and ``limit_train`` on a
    training split of ``train_images`` (the loaders keep the last, smaller batch)."""
    n = min(config.get("limit_train") or train_images, train_images)
    steps = config["epochs"] * math.ceil(n / config["batch_size"])
    return warmup_length(config["warmup_steps"], steps)


def build_optimizer(cfg: TrainConfig | InstanceConfig, model: torch.nn.Module, steps: int):
    """AdamW (or SGD) over trainable parameters and a per-step warmup + cosine schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            params, lr=cfg.lr, momentum=SGD_MOMENTUM, weight_decay=cfg.weight_decay
        )
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose 'adamw' or 'sgd'")
    if cfg.scheduler == "cosine":
        warm = warmup_length(cfg.warmup_steps, steps)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    elif cfg.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    elif cfg.scheduler == "none":
        sched = None
    else:
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; choose cosine, plateau or none")
    return opt, sched


def ema_decay_at(decay: float, step: int) -> float:
    """The decay used at update ``step`` (0-based): ``min(decay, (1 + step) / (10 + step))``.

    The warmup keeps the average from holding on to the first steps' weights in short runs
    (with a constant 0.995, 144 steps leave 49% of the weight on the first step)."""
    return min(decay, (1 + step) / (10 + step))


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics (decay with
    warmup: :func:`ema_decay_at`), updated with ``ema.update_parameters(model)`` after every
    optimiser step; evaluate ``ema.module``. Integer buffers (BatchNorm's batch counter) are
    copied, not averaged."""

    @torch.no_grad()
    def update(averaged: list, current: list, num_averaged: torch.Tensor) -> None:
        if not torch.is_floating_point(averaged[0]):
            torch._foreach_copy_(averaged, current)
            return
        # int() reads the step count from the device; AveragedModel.update_parameters already
        # does so every step (`bool(self.n_averaged == 0)`), so this adds no CUDA sync
        torch._foreach_lerp_(averaged, current, 1.0 - ema_decay_at(decay, int(num_averaged)))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)

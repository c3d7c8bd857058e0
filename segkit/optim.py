"""The one optimiser + learning-rate schedule builder, shared by semantic and instance runs."""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import InstanceConfig, TrainConfig


def build_optimizer(cfg: TrainConfig | InstanceConfig, model: torch.nn.Module, steps: int):
    """AdamW (or SGD) over trainable parameters and a per-step warmup + cosine schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose 'adamw' or 'sgd'")
    if cfg.scheduler == "cosine":
        warm = max(1, min(cfg.warmup_steps, steps // 10))

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


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm buffers, updated with
    ``ema.update_parameters(model)`` after every optimiser step; evaluate ``ema.module``."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

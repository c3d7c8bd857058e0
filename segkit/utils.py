"""Small shared helpers: device choice, seeding, AMP context, atomic saves and data location."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA_ENV = "SEGKIT_DATA"


def get_device(pref: str | torch.device = "auto") -> torch.device:
    """CUDA for ``"auto"`` when available, else CPU; ``"cuda"`` without CUDA raises."""
    if isinstance(pref, torch.device):
        return pref
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(pref)


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a generator for DataLoader shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` giving each DataLoader worker its own numpy/python seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only (bf16 when supported, else fp16); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write text atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where datasets live: the argument, else ``$SEGKIT_DATA``, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path("data")


def find_dataset_dir(name: str, marker: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Locate dataset folder ``name`` (identified by the file/folder ``marker`` inside it).

    ``data_dir`` may be the dataset folder itself or a root that contains ``name/``. Raises
    ``FileNotFoundError`` saying every place that was looked at and how to get the data.
    """
    root = data_root(data_dir)
    candidates = [root, root / name]
    for c in candidates:
        if (c / marker).exists():
            return c
    how = (
        f"pass data_dir=..., set ${DATA_ENV} to the folder holding '{name}/', "
        f"or run `segkit data prepare-sbd` / `prepare-pennfudan` (see data/README.md)"
    )
    looked = ", ".join(str(c / marker) for c in candidates)
    raise FileNotFoundError(f"dataset '{name}' not found (looked for {looked}); {how}")

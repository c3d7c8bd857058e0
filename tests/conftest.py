"""Shared fixtures: the real data folder (skipped when absent), tiny synthetic batches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    env = os.environ.get("SEGKIT_DATA")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (cand / "sbd" / "classes.txt").exists():
            return cand
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not found: set SEGKIT_DATA or place it at ../shared/data")
    return root


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("SEGKIT_TEST_DEVICE", "cpu"))

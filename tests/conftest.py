"""Shared fixtures: the data folders (real when present, else synthetic), the test device.

* ``synthetic_root``: a folder holding synthetic ``sbd/`` and ``PennFudanPed/``
  (:func:`segkit.synthetic.make_all`), written once per session.
* ``data_root``: the real data root when found, else ``synthetic_root``; for tests that only need
  the layout (experiment, reproduce, report, CLI, notebook).
* ``real_data``: the real data root; the test is skipped when it is absent. For tests that check
  facts of the real datasets (split sizes, checksums, course numbers).

``SEGKIT_TEST_NO_DATA=1`` hides the real data, to try the no-data path (as CI sees it) here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """$SEGKIT_DATA, else ``../shared/data``, if it holds ``sbd/classes.txt``; else None."""
    if os.environ.get("SEGKIT_TEST_NO_DATA") == "1":
        return None
    env = os.environ.get("SEGKIT_DATA")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (cand / "sbd" / "classes.txt").exists():
            return cand
    return None


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segkit.synthetic import make_all  # imported here: a broken package fails only users

    return make_all(tmp_path_factory.mktemp("synthetic_data"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not found: set SEGKIT_DATA or place it at ../shared/data")
    return root


@pytest.fixture(scope="session")
def data_root(request: pytest.FixtureRequest) -> Path:
    root = shared_data_root()
    # the synthetic set is written only when a test falls back to it
    return root if root is not None else request.getfixturevalue("synthetic_root")


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("SEGKIT_TEST_DEVICE", "cpu"))


QUICK_RUN_SIZES = {"train": 8, "val": 4, "test": 8}  # one training step per epoch at batch 8


@pytest.fixture(scope="session")
def quick_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest synthetic data the quick pipeline runs on (both layouts)."""
    from segkit.synthetic import make_pennfudan, make_sbd

    root = tmp_path_factory.mktemp("quick_data")
    make_sbd(root, sizes=QUICK_RUN_SIZES, image_size=(64, 96))  # 10x fewer pixels than 224x288
    make_pennfudan(root)
    return root


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory, quick_data: Path) -> Path:
    """ONE ``segkit reproduce --quick`` per test session, shared by the reproduce, report and
    notebook tests, on the smallest synthetic data (the same with or without the real data, and
    fast): ``<tmp>/runs`` holds the quick run folders, ``<tmp>/runs/generated`` the tables,
    figures and results.json."""
    from segkit.cli import main

    runs = tmp_path_factory.mktemp("quick") / "runs"
    argv = ["reproduce", "--quick", "--device", "cpu", "--data-dir", str(quick_data),
            "--runs", str(runs), "--out", str(runs / "generated")]  # fmt: skip
    assert main(argv) == 0
    return runs

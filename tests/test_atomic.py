"""Atomic writes: a save killed with SIGKILL leaves the previous file intact, and its temporary
debris is removed by the next save (or the next run's start)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from segkit.checkpoint import load_checkpoint
from segkit.utils import atomic_torch_save, remove_stale_temps

SAVER = """
import sys, torch
from segkit.utils import atomic_torch_save
state = {"model": {"w": torch.randn(4_000_000)}, "epoch": 0}  # 16 MB: saving takes a while
while True:
    atomic_torch_save(state, sys.argv[1])
"""


def _kill_during_save(path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # kill while a temporary file is being written
            if path.exists() and list(path.parent.glob("*.tmp")):
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_during_save_leaves_no_debris_after_next_save(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for _ in range(5):  # the kill may land just after a rename: try again
        _kill_during_save(path)
        if list(tmp_path.glob("*.tmp")):
            break
    assert path.exists()
    assert load_checkpoint(path)["model"]["w"].shape == (4_000_000,)  # never half-written
    assert list(tmp_path.glob("*.tmp")), "no kill landed during a save; the test proved nothing"
    atomic_torch_save({"model": {"w": torch.zeros(3)}}, path)  # the next save cleans up
    assert list(tmp_path.glob("*.tmp")) == []
    assert load_checkpoint(path)["model"]["w"].tolist() == [0.0, 0.0, 0.0]


def test_remove_stale_temps_only_touches_that_file(tmp_path):
    (tmp_path / "checkpoint.ptabc123.tmp").write_bytes(b"x")
    (tmp_path / "other.ptdef.tmp").write_bytes(b"x")
    removed = remove_stale_temps(tmp_path / "checkpoint.pt")
    assert [p.name for p in removed] == ["checkpoint.ptabc123.tmp"]
    assert os.listdir(tmp_path) == ["other.ptdef.tmp"]

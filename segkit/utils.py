"""Small shared helpers: device choice, seeding, AMP context, atomic saves and data location."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import tempfile
import threading
import time
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


def resolve_channels_last(setting: bool | None, device: torch.device) -> bool:
    """``None`` means channels-last on CUDA only: on CPUs it slowed training by 25-30% here
    (``bench/train_speed.py --no-channels-last``)."""
    return device.type == "cuda" if setting is None else setting


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


def autocast_context(
    device: torch.device, enabled: bool, cpu_bf16: bool = False
) -> contextlib.AbstractContextManager:
    """Mixed precision: on CUDA when ``enabled`` (bf16 when supported, else fp16); on the CPU
    only with ``cpu_bf16`` (bf16, fast on CPUs with AVX512-BF16/AMX); otherwise a no-op."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class SegkitError(Exception):
    """An error whose message tells the user what went wrong and what to do; the CLI prints it
    as one line (no traceback) and exits non-zero."""


TMP_SUFFIX = ".tmp"


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed :func:`atomic_torch_save` / :func:`atomic_write_text` of
    ``path`` left behind (``<name>*.tmp`` beside it); returns what was removed."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for tmp in path.parent.glob(glob_escape(path.name) + "*" + TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Write through ``write(file_object)`` into a temp file beside ``path``, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # debris of an earlier killed save
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename (never
    half-written; stale temporary files of ``path`` from a killed save are removed first)."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write text atomically (temporary file, fsync, rename)."""
    return _atomic_write(path, lambda f: f.write(text.encode()))


def load_torch_file(
    path: str | os.PathLike, what: str = "checkpoint", error: type[Exception] = SegkitError
) -> Any:
    """``torch.load(weights_only=True)`` with one clear ``error`` naming the file when it is
    missing or is not a tensor file saved by torch (no pickled code ever runs)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's message suggests an unsafe load: never repeat it
        text = str(e)
        if "Unsupported global" in text or "WeightsUnpickler" in text:
            reason = "it holds Python objects besides tensors, so it is not a segkit file"
        else:
            reason = "corrupt, truncated or another format"
        raise error(
            f"{path}: not a segkit {what} ({reason}); expected a file written by segkit "
            "(or a state_dict of tensors saved with torch.save)"
        ) from None


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """JSON with NaN written as null (strict JSON), atomically."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, np.integer)):
            return clean(x.item())
        return x

    return atomic_write_text(json.dumps(clean(obj), indent=2), path)


def hardware(device: torch.device | str | None = None) -> str:
    """A short description of where a run happened (for results files)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        return f"CUDA {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    threads = torch.get_num_threads()
    return (
        f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
        f"{threads} torch threads), torch {torch.__version__}"
    )


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


WALL_LEDGER = "reproduce_wall.json"  # in the runs folder: minutes of each call of one reproduction


class WallClock:
    """Wall minutes of one reproduction, summed over the calls it took.

    ``with WallClock(runs_dir) as clock:`` appends this call to ``<runs>/reproduce_wall.json``;
    a heartbeat thread rewrites its minutes every ``interval`` seconds, so a call that is killed
    midway (a session that ends) or stops on an error keeps its time, and the next call, which
    resumes the runs, adds to it. A call that completes marks the reproduction finished; the call
    after that, ``fresh`` (``--force``) or a new runs folder start a new ledger. A lock file
    refuses a second reproduction on the same runs folder while one is running."""

    def __init__(self, runs_dir: Path, interval: float = 60.0, fresh: bool = False) -> None:
        self.path = runs_dir / WALL_LEDGER
        self.lock = runs_dir / "reproduce.lock"
        self.interval = interval
        old = {} if fresh or not self.path.is_file() else json.loads(self.path.read_text())
        self.calls: list[dict] = [] if old.get("finished") else list(old.get("calls", []))
        self.finished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> WallClock:
        self._take_lock()
        started = dt.datetime.now().isoformat(timespec="seconds")
        self.calls.append(
            {"started": started, "t_start": time.time(), "minutes": 0.0, "hardware": hardware()}
        )
        self.t0 = time.perf_counter()
        self._write()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.finished = exc_type is None  # on an error the minutes so far still count
        self._write()
        self.lock.unlink(missing_ok=True)

    def _take_lock(self) -> None:
        try:
            pid = int(self.lock.read_text())
            os.kill(pid, 0)  # raises when no such process: a stale lock of a killed call
        except (FileNotFoundError, ValueError, ProcessLookupError):
            self.lock.write_text(str(os.getpid()))
            return
        except PermissionError:  # alive, another user's
            pass
        raise SegkitError(
            f"{self.lock}: segkit reproduce (pid {pid}) is already running on "
            f"{self.lock.parent}; wait for it, or stop it, before starting another"
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def _write(self) -> None:
        self.calls[-1]["minutes"] = (time.perf_counter() - self.t0) / 60
        write_json({"finished": self.finished, "calls": self.calls}, self.path)

    @property
    def minutes(self) -> float:
        return sum(c["minutes"] for c in self.calls)

    def reused(self, run_dirs: list[Path]) -> list[str]:
        """The runs that finished before the ledger's first call (their results file is older;
        copy run folders with their times, ``cp -p``): their time is not counted."""
        first = self.calls[0]
        t = first.get("t_start") or dt.datetime.fromisoformat(first["started"]).timestamp()
        done = [d / "results_val.json" for d in run_dirs]
        return [
            d.name
            for d, f in zip(run_dirs, done, strict=True)
            if f.is_file() and f.stat().st_mtime < t
        ]

"""Trainings side by side: worker processes (spawned, one torch thread each) that train, reuse
or resume run folders; used by ``segkit reproduce`` and ``segkit seeds`` on a multi-core CPU."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm.auto import tqdm

from .checkpoint import finished_results
from .config import RunConfig
from .experiment import run_experiment
from .instance import train_instance
from .maskrcnn import train_maskrcnn
from .utils import SegkitError, get_device


def default_jobs(device: str) -> int:
    """2 trainings side by side on a CPU with at least 2 cores (one thread each), else 1."""
    return 2 if get_device(device).type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def resolve_jobs(jobs: int | None, device: str) -> int:
    """``jobs`` checked (at least 1; 1 on CUDA), or :func:`default_jobs` when ``None``."""
    jobs = default_jobs(device) if jobs is None else jobs
    if jobs < 1:
        raise SegkitError(f"jobs must be at least 1 (got {jobs})")
    if jobs > 1 and get_device(device).type == "cuda":
        raise SegkitError(
            f"--jobs {jobs} splits CPU cores; on CUDA the trainings share one GPU and run one "
            "after another: use --jobs 1 (the default there)"
        )
    return jobs


def _log(line: str) -> None:
    print(line, flush=True)


def _train_one(job: tuple[RunConfig, bool]) -> tuple[str, float]:
    """Worker: train (or reuse, or resume) one run; returns its name and wall minutes."""
    cfg, force = job
    t0 = time.perf_counter()
    kw = dict(progress=False, reuse=not force, log=_log)
    if cfg.task == "watershed":  # its figures need the val maps of training
        train_instance(cfg, **kw)  # type: ignore[arg-type]
    elif cfg.task == "maskrcnn":
        train_maskrcnn(cfg, **kw)  # type: ignore[arg-type]
    else:  # figures come later, from the run folder (experiment.save_run_figures)
        run_experiment(cfg, figures=False, **kw)  # type: ignore[arg-type]
    return cfg.name, (time.perf_counter() - t0) / 60


def train_side_by_side(configs: list[RunConfig], jobs: int, force: bool = False) -> None:
    """Train ``configs`` in ``jobs`` worker processes, in the given order (longest first); one
    line per epoch and per finished run. Finished runs with the same config are reused and
    unfinished ones resume, so an interrupted call loses at most one epoch per worker. The first
    failure stops the others (their last checkpoints stay) and is raised here; a worker that
    dies (killed, out of memory) is a :class:`SegkitError`, never a hang."""
    todo = [
        dataclasses.replace(c, num_threads=1)  # one torch thread per worker (a resume-safe field)
        for c in configs
        if force or finished_results(Path(c.out_dir) / c.name, c.to_dict()) is None
    ]
    if not todo:
        return
    tqdm.write(f"training {len(todo)} runs, {jobs} side by side: {', '.join(c.name for c in todo)}")
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch threads
    pool = ProcessPoolExecutor(jobs, mp_context=ctx)  # workers reused: torch is imported once
    finished = False
    try:
        # workers take the runs in submission order (longest first)
        pending = {pool.submit(_train_one, (c, force)) for c in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                name, minutes = future.result()  # a worker's error is raised here
                tqdm.write(f"finished {name} in {minutes:.1f} min")
        finished = True
    except BrokenProcessPool:
        raise SegkitError(
            "a training worker process died (killed, or out of memory?); run the same command "
            "again to resume from the last checkpoints, or use --jobs 1"
        ) from None
    finally:
        if not finished:  # an error: stop the other trainings now (their last checkpoints stay)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public API
                if proc.is_alive():
                    proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

"""Is `--jobs 2` faster here? Training throughput of ONE process with N torch threads against N
processes side by side with one thread each (what ``segkit reproduce --jobs N`` does), from one
run of this script.

Each process times ``--steps`` training steps (forward, backward, AdamW) of ``--model`` on one
preloaded random batch at the course size (after one untimed warm-up step), so only the model
step is measured, not data. Prints images per second of both layouts and their ratio; ends with
one JSON line.

    python bench/side_by_side.py [--model unet] [--jobs 2] [--steps 3] [--batch-size 8]
        [--image-size 224 288]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segkit.constants import IMAGE_SIZE, NUM_CLASSES  # noqa: E402
from segkit.losses import cross_entropy_criterion  # noqa: E402
from segkit.models import create_model  # noqa: E402

_BARRIER = None  # set in side-by-side workers: every process starts timing together


def _init_worker(barrier) -> None:  # noqa: ANN001  (a multiprocessing Barrier proxy)
    global _BARRIER
    _BARRIER = barrier


def step_seconds(
    model_name: str, threads: int, steps: int, batch_size: int, size: tuple[int, int]
) -> float:
    """Seconds per training step of ``model_name`` with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name, NUM_CLASSES, "none")
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(batch_size, 3, *size)  # (B, 3, H, W)
    y = torch.randint(0, NUM_CLASSES, (batch_size, *size))  # (B, H, W)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        cross_entropy_criterion(model(x), y).backward()
        opt.step()

    step()  # warm-up: allocations, kernel selection
    if _BARRIER is not None:
        _BARRIER.wait()  # the timed steps of all processes overlap
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def _one_thread(args: tuple) -> float:
    return step_seconds(args[0], 1, *args[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--model", default="unet")
    p.add_argument("--jobs", type=int, default=2, help="processes side by side (default: 2)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per process (default: 3)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, nargs=2, default=IMAGE_SIZE, metavar=("H", "W"),
                   help="(default: the course size %(default)s)")  # fmt: skip
    a = p.parse_args()
    size = tuple(a.image_size)

    one = step_seconds(a.model, a.jobs, a.steps, a.batch_size, size)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(a.jobs)
    with ctx.Pool(a.jobs, initializer=_init_worker, initargs=(barrier,)) as pool:
        side = pool.map(_one_thread, [(a.model, a.steps, a.batch_size, size)] * a.jobs)
    one_ips = a.batch_size / one
    side_ips = sum(a.batch_size / s for s in side)
    print(f"{a.model}, batch {a.batch_size} at {size[0]}x{size[1]}, {a.steps} timed steps each")
    labels = (f"one process, {a.jobs} threads", f"{a.jobs} processes x 1 thread")
    print(f"{labels[0]:28s}: {one:6.2f} s/step  {one_ips:6.2f} img/s")
    print(f"{labels[1]:28s}: {max(side):6.2f} s/step  {side_ips:6.2f} img/s (together)")
    print(f"{'side by side / one process':28s}: {side_ips / one_ips:.2f}x")
    row = {"model": a.model, "jobs": a.jobs, "one_process_img_s": one_ips,
           "side_by_side_img_s": side_ips, "ratio": side_ips / one_ips}  # fmt: skip
    print(json.dumps(row))


if __name__ == "__main__":
    main()

"""Training throughput from ONE run: segkit's engine vs a plain assignment-style loop vs the pure
model step on a preloaded batch (the physical limit), and the data share of a step.

Loops (same architecture, initial weights, batch size and images; timed steps interleaved in
rounds, so drift in the machine's load hits every loop alike):

* plain: the assignment's way: a Dataset that decodes the JPEG/PNG with PIL on every access,
  ``ToTensor`` and a random flip; ``DataLoader(batch_size, shuffle=True)`` with default settings;
  the model in NCHW float32; ``F.cross_entropy`` with the class weights; Adam; ``loss.item()`` and
  a plain ``.to(device)`` every step.
* segkit: ``SegmentationDataset`` (preloaded uint8, v2 random-resized-crop + flip of the recipe),
  ``make_loader`` (on CUDA: worker processes and pinned memory), ``segkit.engine.train_one_epoch``
  with the recipe's loss, optimiser and schedule, channels_last, AMP on CUDA.
* pure: segkit's model, optimiser and loss, forward + backward + optimiser step on ONE batch that
  already sits on the device: no data, no per-step checks.

``data wait``: seconds spent waiting for the next batch / wall time of the loop. ``--bf16-cpu``
adds the segkit and pure loops under CPU bf16 autocast, ``--compile`` the two loops on
``torch.compile(model)`` (and prints the compile time separately). Ends with one JSON line.

    python bench/train_speed.py [--model unet] [--device cpu] [--steps 4] [--threads 1]
        [--batch-size 8] [--no-channels-last] [--bf16-cpu] [--compile]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segkit.config import SEMANTIC_MODELS, recipe  # noqa: E402
from segkit.data import (  # noqa: E402
    Augment,
    SegmentationDataset,
    list_split,
    make_loader,
    sbd_dir,
    split_label_counts,
)
from segkit.engine import evaluate, to_device, train_one_epoch  # noqa: E402
from segkit.losses import class_weights, segmentation_loss  # noqa: E402
from segkit.models import create_model  # noqa: E402
from segkit.optim import build_optimizer  # noqa: E402
from segkit.utils import autocast_context, hardware  # noqa: E402

DEFAULT_STEPS = {"cpu": 4, "cuda": 60}


class PILDataset(Dataset):
    """The assignment's dataset: open and decode the JPEG and the label PNG on every access."""

    def __init__(self, split_dir: Path, stems: list[str]) -> None:
        self.files = [split_dir / f"{s}.jpg" for s in stems]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.functional import to_tensor

        image = to_tensor(Image.open(self.files[i]).convert("RGB"))  # (3, H, W) float32
        mask = torch.from_numpy(np.array(Image.open(self.files[i].with_suffix(".png")))).long()
        if torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask  # (3, H, W), (H, W)


class Batches:
    """``steps`` batches per pass from an endlessly restarted ``loader``; ``wait`` sums the seconds
    spent waiting for them (the data share of a step)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.steps, self.wait = loader, 0, 0.0
        self._it = iter(loader)

    def take(self, steps: int) -> Batches:
        self.steps = steps
        return self

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            t0 = time.perf_counter()
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = iter(self.loader)
                batch = next(self._it)
            self.wait += time.perf_counter() - t0
            yield batch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", help="folder holding sbd/ (default $SEGKIT_DATA, ../shared/data)")
    p.add_argument("--model", default="unet", choices=SEMANTIC_MODELS)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--steps", type=int, default=None,
        help=f"timed steps per loop, over all rounds (default {DEFAULT_STEPS})",
    )  # fmt: skip
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per loop first (1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=True,
        help="mixed precision in the segkit and pure loops (CUDA only; default on)",
    )  # fmt: skip
    p.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True,
        help="segkit and pure loops in channels_last (default on)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", help="also measure torch.compile(model)")
    p.add_argument("--bf16-cpu", action="store_true", help="also measure CPU bf16 autocast")
    return p


def find_root(data: str | None) -> Path:
    cands = [data] if data else []
    if os.environ.get("SEGKIT_DATA"):
        cands.append(os.environ["SEGKIT_DATA"])
    cands += [str(ROOT.parent / "shared" / "data"), "data"]
    for c in cands:
        try:
            return sbd_dir(c)
        except FileNotFoundError:
            pass
    raise SystemExit(f"no Stanford Background data (sbd/classes.txt) in {cands}; use --data DIR")


def _validation_seconds(
    model: torch.nn.Module,
    root: Path,
    bs: int,
    device: torch.device,
    amp: bool,
    cl: bool,
    num_classes: int,
    sync: Any,
) -> tuple[float, float, int]:
    """Seconds of one validation pass with segkit's evaluator (forward + metrics), seconds of
    the forward passes alone over the same batches, and the number of val images."""
    val_set = SegmentationDataset("val", root, progress=False)
    batches = [to_device(b, device) for b in make_loader(val_set, bs, shuffle=False)]
    evaluate(model, batches, num_classes, amp=amp, channels_last=cl)  # warm-up
    sync()
    t0 = time.perf_counter()
    evaluate(model, batches, num_classes, amp=amp, channels_last=cl)
    sync()
    eval_s = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode(), autocast_context(device, amp):
        sync()
        t0 = time.perf_counter()
        for images, _ in batches:
            model(to_device(images, device, cl))  # (N, C, H, W)
        sync()
    model.train()
    return eval_s, time.perf_counter() - t0, len(val_set)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or DEFAULT_STEPS[device.type]
    rounds = max(1, min(args.rounds, steps))
    per_round = [steps // rounds + (r < steps % rounds) for r in range(rounds)]
    bs = args.batch_size
    amp = args.amp and device.type == "cuda"
    cl = args.channels_last
    load0 = os.getloadavg()[0]
    busy = load0 + torch.get_num_threads() > (os.cpu_count() or 1) + 0.5

    root = find_root(args.data)
    cfg = recipe(args.model, batch_size=bs, weights="none", device=device.type)
    stems = list_split(root / "train")
    n_img = min(len(stems), (args.warmup + steps) * bs)
    n_img = max(bs, n_img // bs * bs) if len(stems) >= bs else len(stems)  # full batches only
    aug = Augment(scale=cfg.aug_scale, ratio=cfg.aug_ratio, flip_p=cfg.flip_p)
    train_set = SegmentationDataset("train", root, transform=aug, limit=n_img, progress=False)
    counts = split_label_counts("train", root)
    sqrt = cfg.class_weighting == "sqrt"
    weights = None
    if cfg.class_weighting != "none":
        weights = class_weights(
            counts, cap=cfg.weight_cap, power=0.5 if sqrt else 1.0, cap_first=sqrt
        ).to(device)
    criterion = partial(segmentation_loss, weights=weights, dice_weight=cfg.dice_weight)

    # the plain loop: its own model (NCHW float32), dataset, loader and optimiser
    torch.manual_seed(0)
    plain_model = create_model(args.model, cfg.num_classes, "none").to(device)
    plain_opt = torch.optim.Adam(plain_model.parameters(), lr=cfg.lr)
    plain_batches = Batches(
        DataLoader(PILDataset(root / "train", stems[:n_img]), batch_size=bs, shuffle=True)
    )
    # segkit: the same initial weights; the pure and variant loops share this model/optimiser
    torch.manual_seed(0)
    model = create_model(args.model, cfg.num_classes, "none").to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    total_steps = (args.warmup + steps) * (1 + args.bf16_cpu) * (1 + args.compile) * 2
    optimizer, scheduler = build_optimizer(cfg, model, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    seg_batches = Batches(make_loader(train_set, bs, shuffle=True, seed=0, device=device))
    fixed = next(iter(make_loader(train_set, bs, shuffle=False)))
    fixed_x = to_device(fixed[0], device, cl)  # (N, 3, H, W)
    fixed_y = to_device(fixed[1], device)  # (N, H, W)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def plain_loop(n: int) -> None:
        plain_model.train()
        for images, masks in plain_batches.take(n):
            images, masks = images.to(device), masks.to(device)
            loss = F.cross_entropy(plain_model(images), masks, weight=weights)
            plain_opt.zero_grad()
            loss.backward()
            plain_opt.step()
            loss.item()  # the assignment logs every step: a host sync

    def segkit_loop(n: int, net: torch.nn.Module, bf16: bool) -> None:
        train_one_epoch(
            net, seg_batches.take(n), optimizer, criterion, device, scheduler=scheduler,
            scaler=scaler, amp=amp, channels_last=cl, cpu_bf16=bf16,
        )  # fmt: skip

    def pure_loop(n: int, net: torch.nn.Module, bf16: bool) -> None:
        net.train()
        for _ in range(n):
            with autocast_context(device, amp, bf16):
                loss = criterion(net(fixed_x), fixed_y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    loops: dict[str, tuple[Any, Batches | None]] = {
        "plain": (plain_loop, plain_batches),
        "segkit": (partial(segkit_loop, net=model, bf16=False), seg_batches),
        "pure": (partial(pure_loop, net=model, bf16=False), None),
    }
    bf16 = args.bf16_cpu and device.type == "cpu"
    cpu_bf16_hw = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if bf16:
        loops["segkit_bf16"] = (partial(segkit_loop, net=model, bf16=True), seg_batches)
        loops["pure_bf16"] = (partial(pure_loop, net=model, bf16=True), None)
    compile_s = None
    if args.compile:
        compiled = torch.compile(model)
        loops["segkit_compiled"] = (partial(segkit_loop, net=compiled, bf16=bf16), seg_batches)
        loops["pure_compiled"] = (partial(pure_loop, net=compiled, bf16=bf16), None)

    # warm-up (allocator, kernels, cuDNN autotune; the first compiled step compiles); a pure loop
    # runs the model its segkit loop has just warmed up
    warm_s = {}
    for name, (fn, batches) in loops.items():
        if batches is None:
            continue
        sync()
        t0 = time.perf_counter()
        fn(max(1, args.warmup) if "compiled" in name else args.warmup)
        sync()
        warm_s[name] = time.perf_counter() - t0
    if args.compile:
        compile_s = warm_s["segkit_compiled"]

    secs = dict.fromkeys(loops, 0.0)
    waits = dict.fromkeys(loops, 0.0)
    for n in per_round:
        for name, (fn, batches) in loops.items():
            w0 = batches.wait if batches is not None else 0.0
            sync()
            t0 = time.perf_counter()
            fn(n)
            sync()
            secs[name] += time.perf_counter() - t0
            waits[name] += (batches.wait - w0) if batches is not None else 0.0
    load1 = os.getloadavg()[0]

    ips = {k: steps * bs / v for k, v in secs.items()}
    eval_s, forward_s, val_images = _validation_seconds(
        model, root, bs, device, amp, cl, cfg.num_classes, sync
    )
    epoch_train_s = len(stems) / ips["segkit"]  # one epoch over every training image
    eval_share = eval_s / (epoch_train_s + eval_s)
    share = {k: waits[k] / secs[k] for k in loops}

    def pure_of(name: str) -> str:
        return name.replace("segkit", "pure") if name.startswith("segkit") else name

    labels = {
        "plain": "plain (assignment-style)", "segkit": "segkit engine", "pure": "pure model step",
        "segkit_bf16": "segkit engine, CPU bf16", "pure_bf16": "pure model step, CPU bf16",
        "segkit_compiled": "segkit engine, compiled", "pure_compiled": "pure model step, compiled",
    }  # fmt: skip
    where = hardware(device)
    print(
        f"train_speed: {args.model}, batch {bs}, {device.type} ({where}), amp {amp}, "
        f"channels_last {cl}; {steps} timed steps per loop in {rounds} interleaved rounds "
        f"(+{args.warmup} warm-up), {n_img} train images; load average {load0:.2f} -> {load1:.2f}"
    )
    if device.type == "cpu":
        print(
            f"CPU: {torch.backends.cpu.get_cpu_capability()} kernels, hardware bf16 (oneDNN) "
            f"{'yes' if cpu_bf16_hw else 'NO: bf16 autocast is emulated, expect it slower'}"
        )
    if busy and device.type == "cpu":
        print(
            f"note: load average {load0:.2f} + {torch.get_num_threads()} torch threads exceed "
            f"{os.cpu_count()} cores: numbers are noisy (other processes share the cores)"
        )
    print(f"{'loop':28s} {'img/s':>8s} {'ms/step':>8s} {'data wait':>9s} {'vs plain':>8s} "
          f"{'vs pure':>8s}")  # fmt: skip
    for name in loops:
        wait = "-" if loops[name][1] is None else f"{100 * share[name]:.1f}%"
        print(
            f"{labels[name]:28s} {ips[name]:8.2f} {1000 * secs[name] / steps:8.1f} {wait:>9s} "
            f"{ips[name] / ips['plain']:7.2f}x {ips[name] / ips[pure_of(name)]:7.2f}x"
        )
    ratios = {
        "segkit_vs_plain": ips["segkit"] / ips["plain"],
        "segkit_vs_pure": ips["segkit"] / ips["pure"],
        "pure_vs_plain": ips["pure"] / ips["plain"],
    }
    if bf16:
        ratios["bf16_vs_fp32_segkit"] = ips["segkit_bf16"] / ips["segkit"]
        ratios["bf16_vs_fp32_pure"] = ips["pure_bf16"] / ips["pure"]
    if args.compile:
        ratios["compiled_vs_eager_segkit"] = ips["segkit_compiled"] / ips["segkit"]
        print(f"torch.compile: first compiled step(s) took {compile_s:.1f} s (compile included)")
    print(
        f"validation ({val_images} val images, segkit's one evaluator, AP keys "
        f"{'on the GPU' if device.type == 'cuda' else 'on the CPU'}): {eval_s:.2f} s, of which "
        f"the model's forward passes {forward_s:.2f} s and the metrics {eval_s - forward_s:.2f} s;"
        f" an epoch of {len(stems)} training images at segkit's rate takes {epoch_train_s:.1f} s,"
        f" so evaluating is {eval_share:.0%} of an epoch"
    )
    print(
        f"segkit: {ratios['segkit_vs_plain']:.2f}x the plain loop, "
        f"{ratios['segkit_vs_pure']:.0%} of the pure model step; data wait "
        f"{share['segkit']:.1%} of segkit's step time (plain loop {share['plain']:.1%})"
    )
    summary = {
        "bench": "train_speed", "model": args.model, "device": device.type, "hardware": where,
        "batch_size": bs, "steps": steps, "rounds": rounds, "amp": amp, "channels_last": cl,
        "threads": torch.get_num_threads(), "train_images": n_img, "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_hw": cpu_bf16_hw,
        "synthetic_data": (root / "SYNTHETIC").exists(), "load_avg": [load0, load1],
        "images_per_s": ips, "data_share": {k: share[k] for k in loops if loops[k][1]},
        "ratios": ratios, "compile_s": compile_s, "date": time.strftime("%Y-%m-%d"),
        "eval_seconds": eval_s, "eval_forward_seconds": forward_s,
        "eval_share_of_epoch": eval_share,
    }  # fmt: skip
    if not all(math.isfinite(v) for v in ips.values()):
        raise SystemExit("non-finite throughput")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

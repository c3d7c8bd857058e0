"""Training throughput: segkit's loop vs a plain loop written the assignment's way.

Reference: PIL decode + ToTensor per item, NCHW, ``loss.item()`` every step. segkit: preloaded uint8
tensors, v2 paired augmentation, channels_last, loss summed on the device. Both train the same model
on the same images for the same number of steps, in this one run. Also prints the data-pipeline
share of segkit's step time (time spent producing batches / total time).

    python bench/train_speed.py [--data DIR] [--images 48] [--models unet effnet_unet]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T

from segkit.data import Augment, SegmentationDataset, make_loader, sbd_dir
from segkit.losses import cross_entropy_criterion
from segkit.models import create_model
from segkit.train import train_one_epoch


class PILDataset(Dataset):
    """The assignment's loader: open and decode the JPEG/PNG on every access."""

    def __init__(self, root: Path, n: int) -> None:
        self.files = sorted((root / "train").glob("*.jpg"))[:n]
        self.to_tensor = T.ToTensor()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        image = self.to_tensor(Image.open(self.files[i]).convert("RGB"))
        mask = torch.from_numpy(np.array(Image.open(self.files[i].with_suffix(".png")))).long()
        if torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


def reference_epoch(model, loader, opt) -> float:
    model.train()
    losses = []
    for images, masks in loader:
        loss = cross_entropy_criterion(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())  # a host sync every step
    return float(np.mean(losses))


def timed(fn, n_images: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=None)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--models", nargs="+", default=["unet", "effnet_unet"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = sbd_dir(args.data)
    n, bs = args.images, args.batch_size
    device = torch.device("cpu")
    ds = SegmentationDataset(
        "train", root, transform=Augment(scale=(0.5, 1.0)), limit=n, progress=False
    )
    print(
        f"{n} training images, batch {bs}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}"
    )
    for name in args.models:
        torch.manual_seed(0)
        ref_model = create_model(name, 9, None)
        ref_opt = torch.optim.AdamW(ref_model.parameters(), 1e-3)
        ref_loader = DataLoader(PILDataset(root, n), batch_size=bs, shuffle=True)
        model = create_model(name, 9, None).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        loader = make_loader(ds, bs, shuffle=True)
        warm = Subset(ds, range(bs))
        # warm-up both (allocator, kernels)
        reference_epoch(ref_model, DataLoader(warm, batch_size=bs), ref_opt)
        train_one_epoch(
            model,
            make_loader(warm, bs, shuffle=False),
            opt,
            partial(cross_entropy_criterion),
            device,
            channels_last=True,
            progress=False,
        )
        ref_ips = timed(partial(reference_epoch, ref_model, ref_loader, ref_opt), n)
        ours = partial(
            train_one_epoch,
            model,
            loader,
            opt,
            cross_entropy_criterion,
            device,
            channels_last=True,
            progress=False,
        )
        ours_ips = timed(ours, n)
        t0 = time.perf_counter()
        for _ in loader:
            pass
        data_s = time.perf_counter() - t0
        share = data_s / (n / ours_ips)
        print(
            f"{name:12s} reference {ref_ips:5.2f} img/s | segkit {ours_ips:5.2f} img/s | "
            f"speed-up {ours_ips / ref_ips:4.2f}x | data pipeline {100 * share:4.1f}% of step time"
        )


if __name__ == "__main__":
    main()

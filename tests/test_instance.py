"""The instance half: Penn-Fudan data and split, DWT energy targets and watershed, the DWT loss,
the two-head UNet, and a run folder (train, tune, evaluate) on a tiny fake Penn-Fudan."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage as ndi

from segkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from segkit.config import InstanceConfig
from segkit.constants import IGNORE_INDEX
from segkit.energy import (
    distance_to_boundary,
    instance_targets,
    level_edges,
    quantise_distance,
    remove_small,
    score_instances,
    watershed_from_maps,
    watershed_instances,
)
from segkit.instance import (
    evaluate_instance_run,
    load_instance_run,
    make_dataset,
    predict_maps,
    train_instance,
)
from segkit.losses import DWTLoss, dwt_energy_loss, dwt_loss
from segkit.metrics.mask_ap import labels_to_masks, mask_iou
from segkit.models import create_model
from segkit.models.instance_unet import InstanceUNet, instance_unet, split_logits
from segkit.pennfudan import (
    InstanceAugment,
    PennFudanDataset,
    list_pennfudan,
    pennfudan_dir,
    split_stems,
)

ROOT = Path(__file__).resolve().parents[1]


def _real_pennfudan() -> Path | None:
    env = os.environ.get("SEGKIT_DATA")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (cand / "PennFudanPed" / "PedMasks").is_dir():
            return cand
    return None


def _fake_pennfudan(root: Path, n: int = 8, size=(60, 84)) -> Path:
    """Penn-Fudan layout; image red channel = 40 * instance id, so pairs can be checked."""
    ped = root / "PennFudanPed"
    (ped / "PNGImages").mkdir(parents=True)
    (ped / "PedMasks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros(size, np.uint8)
        mask[5:50, 6:30] = 1
        mask[10:55, 30 + i % 5 : 52 + i % 5] = 2  # touches instance 1 for some i
        image = rng.integers(0, 30, (*size, 3), dtype=np.uint8)
        image[..., 0] = mask * 40
        Image.fromarray(image).save(ped / "PNGImages" / f"Ped{i:05d}.png")
        Image.fromarray(mask, mode="L").save(ped / "PedMasks" / f"Ped{i:05d}_mask.png")
    return ped


SMALL = dict(short_side=64, max_size=96, val_size=2, test_size=2)


# ------------------------------------------------------------------ distance / energy targets
def _two_touching_discs():
    yy, xx = np.mgrid[:40, :64]
    lab = np.zeros((40, 64), np.int64)
    lab[(yy - 20) ** 2 + (xx - 18) ** 2 <= 14**2] = 1
    lab[((yy - 20) ** 2 + (xx - 44) ** 2 <= 14**2) & (lab == 0)] = 2
    return lab


def test_distance_targets_two_touching_discs():
    lab = _two_touching_discs()
    d = distance_to_boundary(lab)
    assert d[lab == 0].max() == 0 and d[lab > 0].min() == 1  # boundary ring is 1 px away
    contact = np.flatnonzero((lab[20, :-1] == 1) & (lab[20, 1:] == 2))[0]
    assert d[20, contact] == 1 and d[20, contact + 1] == 1  # both sides see the contact line
    assert 14 < d[20, 18] <= 15  # centre of disc 1: about the radius
    # each disc's maximum is at its own centre, so the energy has two separate basins
    assert np.unravel_index(np.argmax(np.where(lab == 2, d, 0)), d.shape)[1] > contact + 5


def test_distance_targets_nested_shapes_and_border():
    lab = np.zeros((30, 30), np.int64)
    lab[2:28, 2:28] = 1
    lab[10:20, 10:20] = 2  # a square inside a ring
    d = distance_to_boundary(lab)
    assert d[14, 14] == 5 and d[10, 10] == 1  # inner distance ignores the outer ring's edge
    assert d[5, 14] == 4 and d[2, 14] == 1  # ring: distance to its own outside
    assert d[14, 9] == 1  # ring pixel next to the inner square
    edge = np.zeros((10, 10), np.int64)
    edge[:, :5] = 1
    assert distance_to_boundary(edge)[5, 0] == 1  # the image border counts as boundary


def test_quantised_levels_and_weights():
    edges = level_edges(16)
    assert len(edges) == 15 and np.all(np.diff(edges) > 0) and edges[0] == 2
    d = np.array([0.0, 1.0, 1.9, 2.0, 8.0, 100.0])
    assert quantise_distance(d, edges).tolist() == [0, 0, 0, 1, 7, 15]
    lab = np.zeros((10, 10), np.int64)
    lab[:2, :2] = 1  # area 4
    lab[5:, 5:] = 2  # area 25
    lab[9, 0] = IGNORE_INDEX  # padding
    t = instance_targets(lab, edges)
    assert t["weight"][0, 0] == pytest.approx(0.5) and t["weight"][9, 9] == pytest.approx(0.2)
    assert t["weight"][3, 3] == 0 and t["valid"][9, 0] == 0 and t["instances"][9, 0] == 0
    assert t["semantic"].sum() == 29 and t["energy"].dtype == torch.int64
    assert t["energy"].max() == quantise_distance(np.array([3.0]), edges)[0]


def test_watershed_separates_touching_instances():
    gt = _two_touching_discs()
    prob = (gt > 0).astype(np.float32)
    energy = distance_to_boundary(gt)  # an ideal energy head
    assert ndi.label(prob > 0.5)[1] == 1  # one blob for plain semantic segmentation
    pred = watershed_from_maps(prob, energy, 0.5, core_level=3.0)
    assert sorted(np.unique(pred)) == [0, 1, 2]
    iou = mask_iou(labels_to_masks(pred)[0], labels_to_masks(gt)[0])
    assert iou.max(1).min() > 0.95
    # a foreground blob without any core still becomes an instance; min_size removes it
    prob2, energy2 = prob.copy(), energy.copy()
    prob2[0:2, 60:63] = 1.0
    assert len(np.unique(watershed_from_maps(prob2, energy2, 0.5, 3.0))) == 4
    assert len(np.unique(watershed_from_maps(prob2, energy2, 0.5, 3.0, min_size=10))) == 3


def test_watershed_instances_on_logits_batched():
    gt = _two_touching_discs()
    t = instance_targets(gt, level_edges(16))
    sem = (t["semantic"] * 20 - 10)[None, None]  # (1, 1, H, W) logits
    energy = torch.nn.functional.one_hot(t["energy"], 16).permute(2, 0, 1)[None] * 20.0
    labels = watershed_instances(torch.cat([sem, sem]), torch.cat([energy, energy]), core_level=3.0)
    assert labels.shape == (2, *gt.shape) and labels.dtype == torch.int64
    assert torch.equal(labels[0], labels[1]) and labels.max() == 2
    single = watershed_instances(sem[0], energy[0], core_level=3.0)
    assert torch.equal(single, labels[0])


def test_scores_and_remove_small():
    lab = np.zeros((6, 6), np.int64)
    lab[0:2, 0:2], lab[3:6, 0:6] = 1, 2
    prob = np.where(lab == 1, 0.5, 0.9)
    assert score_instances(lab, prob) == pytest.approx([0.5, 0.9])
    kept = remove_small(lab, 5)
    assert sorted(np.unique(kept)) == [0, 1] and (kept[3:] == 1).all()


# ------------------------------------------------------------------------------------- loss
def test_energy_loss_hand_computed():
    # two object pixels, K = 2, level weights (3, 1)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    energy = torch.tensor([[[1, 0]]])  # pixel A: level 1 (y = .25, .75); pixel B: level 0
    weight = torch.tensor([[[1.0, 0.5]]])
    lw = torch.tensor([3.0, 1.0])
    a = -(3 * math.log(0.75) + 1 * math.log(0.75))  # (1 - y0) for level 0, y1 for level 1
    b = 3 * math.log(2) + 1 * math.log(2)
    expected = (1.0 * a + 0.5 * b) / 1.5
    assert dwt_energy_loss(logits, energy, weight, lw).item() == pytest.approx(expected, 1e-5)
    # pixels with weight 0 (background) do not count, whatever their logits
    logits2 = torch.cat([logits, torch.tensor([[[[5.0]], [[-5.0]]]])], dim=3)
    energy2 = torch.cat([energy, torch.tensor([[[1]]])], dim=2)
    weight2 = torch.cat([weight, torch.zeros(1, 1, 1)], dim=2)
    assert dwt_energy_loss(logits2, energy2, weight2, lw).item() == pytest.approx(expected, 1e-5)


def test_total_loss_hand_computed_and_good_below_bad():
    lab = np.zeros((8, 8), np.int64)
    lab[2:6, 2:6] = 1
    t = {k: v[None] for k, v in instance_targets(lab, level_edges(4)).items()}
    zeros = torch.zeros(1, 5, 8, 8, requires_grad=True)
    loss = dwt_loss(zeros, t)
    # BCE ln 2 per pixel; energy: every pixel has w_target * ln 4 + sum_other w_k * ln(4/3)
    w = torch.tensor([3.0, 3.0, 3.0, 2.0])
    per = w[t["energy"][t["semantic"] > 0]] * math.log(4) + (
        w.sum() - w[t["energy"][t["semantic"] > 0]]
    ) * math.log(4 / 3)
    assert loss.item() == pytest.approx(math.log(2) + per.mean().item(), 1e-5)
    loss.backward()
    assert torch.isfinite(zeros.grad).all()
    good = torch.zeros(1, 5, 8, 8)
    good[:, 0] = t["semantic"][0] * 20 - 10
    good[:, 1:] = torch.nn.functional.one_hot(t["energy"][0], 4).permute(2, 0, 1) * 10.0
    assert DWTLoss()(good, t) < 0.05 < loss.item()


# ------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("body", ["effnet_unet", "unet"])
def test_instance_unet_heads(body):
    narrow = {"width": 0.125} if body == "unet" else {}
    model = InstanceUNet(body, num_energy_levels=4, weights=None, **narrow)
    x = torch.rand(1, 3, 64, 64)
    out = model(x)
    assert out.shape == (1, 5, 64, 64) and torch.isfinite(out).all()
    assert model.head.out_channels == 5 and model.encoder is model.body.encoder
    sem, energy = split_logits(out)
    assert sem.shape == (1, 1, 64, 64) and energy.shape == (1, 4, 64, 64)
    lab = np.zeros((64, 64), np.int64)
    lab[10:40, 20:30] = 1
    t = {k: v[None] for k, v in instance_targets(lab, level_edges(4)).items()}
    dwt_loss(out, t).backward()
    assert all(p.grad is not None for p in model.parameters())
    built = instance_unet(num_classes=5, weights=None, body=body, **narrow)
    assert built.num_energy_levels == 4
    registered = create_model("instance_unet", 5, "none", body=body, **narrow)
    assert isinstance(registered, InstanceUNet) and registered.head.out_channels == 5


def test_instance_unet_weights():
    with pytest.raises(ValueError, match="no pretrained"):
        InstanceUNet("unet", 4, weights="imagenet")
    with pytest.raises(KeyError, match="unknown body"):
        InstanceUNet("resnet18", 4, weights=None)
    # "default" is the body's own default: ImageNet for effnet_unet (differs from a fresh init)
    torch.manual_seed(0)
    default = InstanceUNet("effnet_unet", 4)  # weights="default"
    torch.manual_seed(0)
    scratch = InstanceUNet("effnet_unet", 4, weights="none")
    imagenet = InstanceUNet("effnet_unet", 4, weights="imagenet")
    stem = "body.encoder.body.conv_stem.weight"
    d, s, i = (m.state_dict()[stem] for m in (default, scratch, imagenet))
    assert torch.equal(d, i) and not torch.equal(d, s)


# ------------------------------------------------------------------------------------- data
def test_dataset_on_fake_folder(tmp_path):
    _fake_pennfudan(tmp_path)
    ds = PennFudanDataset("val", tmp_path, **SMALL)
    assert len(ds) == 2 and ds.sizes[0] == (60, 84)
    image, t = ds[0]
    assert image.dtype == torch.float32 and image.shape[1] % 32 == 0 == image.shape[2] % 32
    assert image.shape[1:] == (64, 96) and set(t) >= {"semantic", "energy", "weight", "valid"}
    assert t["valid"].sum() == 64 * 90  # 60x84 -> 64x90 (shorter side 64), padded to 96
    assert set(t["instances"].unique().tolist()) == {0, 1, 2}
    # splits: deterministic, disjoint, complete
    stems = [f"s{i}" for i in range(10)]
    parts = [split_stems(stems, s, val_size=2, test_size=3) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [5, 2, 3] and sorted(sum(parts, [])) == stems
    assert parts[2] == split_stems(stems, "test", val_size=2, test_size=3)


def test_augmentation_keeps_image_and_instances_aligned(tmp_path):
    """Away from label edges (where bilinear blends) the image's red channel (40 x id) and the
    instance map agree exactly: image and mask are sampled at the same pixel centres."""
    _fake_pennfudan(tmp_path)
    ds = PennFudanDataset("train", tmp_path, InstanceAugment(32, (0.75, 1.25), 0.5), **SMALL)
    pool = torch.nn.functional.max_pool2d
    checked = 0
    for seed in range(3):
        torch.manual_seed(seed)
        for i in range(len(ds)):
            image, t = ds[i]
            assert image.shape == (3, 32, 32)
            inst, red = t["instances"].float(), (image[0] * 255).round()
            hi = pool(inst[None, None], 3, 1, 1)[0, 0]
            lo = -pool(-inst[None, None], 3, 1, 1)[0, 0]
            interior = (t["valid"] > 0) & (hi == inst) & (lo == inst)  # (32, 32)
            interior[[0, -1]] = False  # the crop cut a neighbour off: it may blend
            interior[:, [0, -1]] = False
            assert torch.equal((red[interior] / 40).round(), inst[interior])
            checked += int(interior.sum())
    assert checked > 3 * len(ds) * 32 * 32 // 2


def test_augmentation_is_one_v2_draw_with_ignore_padding():
    image = torch.arange(3 * 20 * 24, dtype=torch.uint8).reshape(3, 20, 24) % 200 + 1
    instances = torch.ones(20, 24, dtype=torch.uint8)
    aug = InstanceAugment(32, scale=(1.0, 1.0), flip_p=0.0)  # crop only: pads 20x24 to 32
    torch.manual_seed(0)
    out_image, out_inst = aug(image, instances)
    assert out_image.shape == (3, 32, 32) and out_inst.shape == (32, 32)
    assert type(out_image) is torch.Tensor and out_inst.dtype == torch.uint8
    pad = out_inst == IGNORE_INDEX
    assert pad.sum() == 32 * 32 - 20 * 24 and (out_image[:, pad] == 0).all()
    assert (out_image[:, ~pad] > 0).all()  # the image sits exactly where the mask is valid
    torch.manual_seed(0)
    assert torch.equal(aug(image, instances)[1], out_inst)  # same seed, same draw
    # a zoom-out uncovers a border: 0 in the image, IGNORE_INDEX in the instance map
    half = InstanceAugment(32, scale=(0.5, 0.5), flip_p=0.0)
    image, instances = torch.full((3, 32, 32), 9, dtype=torch.uint8), torch.ones(32, 32).byte()
    out_image, out_inst = half(image, instances)
    assert (out_inst[8:24, 8:24] == 1).all() and (out_inst[:8] == IGNORE_INDEX).all()
    assert (out_image[:, 9:23, 9:23] == 9).all() and (out_image[:, :7] == 0).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        InstanceAugment(30)


@pytest.mark.parametrize(
    "damage", ["missing_dir", "missing_mask", "orphan_mask", "corrupt", "size", "stray", "mode"]
)
def test_dataset_errors(tmp_path, damage):
    ped = _fake_pennfudan(tmp_path)
    err, match = ValueError, None
    if damage == "missing_dir":
        (ped / "PedMasks").rename(ped / "Masks")
        err, match = FileNotFoundError, "prepare-pennfudan"
    elif damage == "missing_mask":
        (ped / "PedMasks" / "Ped00003_mask.png").unlink()
        match = "Ped00003"
    elif damage == "orphan_mask":
        (ped / "PNGImages" / "Ped00003.png").unlink()
        match = "masks without"
    elif damage == "corrupt":
        (ped / "PNGImages" / "Ped00001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
        match = "Ped00001.png"
    elif damage == "size":
        Image.new("L", (10, 10)).save(ped / "PedMasks" / "Ped00002_mask.png")
        match = "differs"
    elif damage == "stray":
        (ped / "PNGImages" / "notes.txt").write_text("x")
        Image.new("L", (4, 4)).save(ped / "PedMasks" / "extra.png")
        match = "PedMasks/extra.png"
    elif damage == "mode":
        Image.new("RGB", (84, 60)).save(ped / "PedMasks" / "Ped00002_mask.png")
        match = "mode"
    with pytest.raises(err, match=match):
        for split in ("train", "val", "test"):
            PennFudanDataset(split, tmp_path, **SMALL)


def test_real_pennfudan_split_and_sample():
    root = _real_pennfudan()
    if root is None:
        pytest.skip("Penn-Fudan not found: set SEGKIT_DATA or place it at ../shared/data")
    sizes = {
        s: len(PennFudanDataset(s, root, limit=None if s == "val" else 2))
        for s in ("train", "val", "test")
    }
    assert sizes == {"train": 2, "val": 20, "test": 2}
    stems = list_pennfudan(pennfudan_dir(root))
    assert len(stems) == 170
    assert [len(split_stems(stems, s)) for s in ("train", "val", "test")] == [100, 20, 50]
    ds = PennFudanDataset("test", root, limit=2)
    image, t = ds[0]
    h, w = ds.resized(0)[1].shape
    assert min(h, w) == 256 and image.shape[1] % 32 == 0 == image.shape[2] % 32
    raw_ids = set(ds.raw(0)[1].unique().tolist())
    assert set(t["instances"].unique().tolist()) == raw_ids  # no instance lost by resizing


# ---------------------------------------------------------------------------- smoke run
def test_one_epoch_smoke_run(tmp_path):
    _fake_pennfudan(tmp_path / "data")
    cfg = InstanceConfig(
        model="effnet_unet", weights="none", num_energy_levels=4, data_dir=str(tmp_path / "data"),
        crop_size=32, batch_size=2, epochs=1, out_dir=str(tmp_path / "runs"), device="cpu",
        run_name="tiny", limit_train=4, **SMALL,
    )  # fmt: skip
    grid = {"sem_threshold": (0.5,), "core_level": (1.0, 2.0), "min_size": (0, 20)}
    out = train_instance(cfg, progress=False, figures=True, grid=grid)
    run = tmp_path / "runs" / "tiny"  # <out_dir>/<name>
    for name in (
        "checkpoint.pt",
        "checkpoint_last.pt",
        "history.json",
        "postprocess.json",
        "results_val.json",
        "loss_curve.png",
        "instances_val.png",
        "energy_val.png",
    ):
        assert (run / name).is_file(), name
    assert out["epochs_run"] == 1 and 0 <= out["metrics"]["ap"] <= 1 and out["run"] == "tiny"
    assert out["config"]["model"] == "effnet_unet" and out["train_seconds"] > 0
    res = evaluate_instance_run(run, "test", "cpu", figures=False)
    saved = json.loads((run / "results_test.json").read_text())
    assert saved["split"] == "test" and len(saved["stems"]) == 2
    assert saved["postprocess"] == out["postprocess"] and "ap_minus_reference" in res["reference"]
    assert {"ap", "ap50", "ap75", "mean_best_iou"} <= set(saved["metrics"])
    # the loaded run predicts what the trained one did; predict_maps moves nothing
    model, loaded, params = load_instance_run(run)
    assert loaded == cfg and params == out["postprocess"] and not model.training
    val = make_dataset(loaded, "val")
    model.train()
    maps = predict_maps(model, val)
    assert model.training and len(maps) == 2 and maps[0][0].shape == val.sizes[0]
    # resuming a finished run trains no further and gives the same val results
    again = train_instance(cfg, progress=False, figures=False, grid=grid, resume=True)
    assert again["metrics"] == out["metrics"] and again["epochs_run"] == 1
    # a finished run saved before the task field is reused, not refused as another config
    val = json.loads((run / "results_val.json").read_text())
    assert val["config"]["task"] == "watershed"
    del val["config"]["task"]
    (run / "results_val.json").write_text(json.dumps(val))
    assert train_instance(cfg, progress=False, figures=False, reuse=True) == val
    # runs saved before the task field (and before the redesign: body / scale) still load, by
    # num_energy_levels or by body; semantic runs are refused
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["config"]["task"] == "watershed"
    old = {k: v for k, v in ck["config"].items() if k != "task"}
    save_checkpoint(run / "checkpoint.pt", **{**ck, "config": old})
    assert load_instance_run(run)[1] == cfg
    legacy = {k: v for k, v in old.items() if k not in ("model", "aug_scale")}
    save_checkpoint(run / "checkpoint.pt", **{**ck, "config": {**legacy, "body": "effnet_unet"}})
    assert load_instance_run(run)[1].model == "effnet_unet"
    for semantic in ({"model": "unet"}, {"model": "unet", "task": "semantic"}):
        save_checkpoint(run / "checkpoint.pt", **{**ck, "config": semantic})
        with pytest.raises(CheckpointError, match="semantic 'unet' checkpoint; expected an inst"):
            load_instance_run(run)

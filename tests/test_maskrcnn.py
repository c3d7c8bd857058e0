"""Mask R-CNN (segkit.models.maskrcnn, segkit.detection, segkit.maskrcnn): targets from masks,
the paired v2 transform, frozen BatchNorm, one normalisation, post-processing by hand, the
offline COCO error, and a tiny run end to end through the CLI (train, resume, evaluate)."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.layers import FrozenBatchNormAct2d
from torchvision.ops import masks_to_boxes

from segkit.cli import main
from segkit.config import MaskRCNNConfig
from segkit.detection import (
    DetectionAugment,
    boxes_from_masks,
    detection_target,
    instance_masks,
    labels_from_detections,
)
from segkit.maskrcnn import LOSS_TERMS, load_maskrcnn_run, train_maskrcnn
from segkit.models.base import IMAGENET_MEAN, IMAGENET_STD, Normalize
from segkit.models.maskrcnn import DETECTION_NUM_CLASSES, build_maskrcnn
from segkit.synthetic import make_pennfudan
from segkit.utils import SegkitError

TINY = ["--weights", "none", "--short-side", "96", "--max-size", "128", "--limit-train", "2",
        "--limit-val", "2", "--limit-test", "2", "--val-size", "3", "--test-size", "3",
        "--batch-size", "2", "--warmup-steps", "1", "--fpn-channels", "32"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pennfudan")
    make_pennfudan(root, n=10)
    return root


def _instances() -> torch.Tensor:
    inst = torch.zeros(20, 30, dtype=torch.uint8)  # (H, W)
    inst[2:9, 3:7] = 1
    inst[5:18, 10:25] = 2
    inst[15:20, 0:2] = 4
    inst[0, 29] = 255  # padding: not an instance
    return inst


# ------------------------------------------------------------------------------- targets
def test_boxes_from_masks_are_masks_to_boxes_to_the_far_pixel_edge():
    masks = instance_masks(_instances())  # (3, 20, 30)
    assert masks.shape == (3, 20, 30) and masks.dtype == torch.uint8
    boxes = boxes_from_masks(masks)
    torch.testing.assert_close(boxes, masks_to_boxes(masks) + torch.tensor([0.0, 0, 1, 1]))
    torch.testing.assert_close(boxes[0], torch.tensor([3.0, 2, 7, 9]))  # x1, y1, x2, y2
    t = detection_target(masks)
    assert t["labels"].tolist() == [1, 1, 1] and t["boxes"].dtype == torch.float32


def test_flip_moves_image_masks_and_boxes_together():
    inst = _instances()
    image = torch.stack([inst * 40, inst * 0 + 7, torch.arange(30).expand(20, 30)]).to(torch.uint8)
    target = detection_target(instance_masks(inst))
    out_image, out = DetectionAugment(scale=(1.0, 1.0), flip_p=1.0)(image, target)
    assert torch.equal(out_image, image.flip(-1))
    assert torch.equal(out["masks"], target["masks"].flip(-1))
    torch.testing.assert_close(out["boxes"], boxes_from_masks(out["masks"]))  # exact


def test_rescale_keeps_one_draw_for_all_and_drops_lost_instances():
    inst = _instances()
    image = (inst > 0).to(torch.uint8)[None].expand(3, -1, -1) * 255  # white people
    for seed in range(5):
        torch.manual_seed(seed)
        out_image, out = DetectionAugment(scale=(1.5, 2.5), flip_p=0.5)(
            image.clone(), detection_target(instance_masks(inst))
        )
        n = len(out["boxes"])
        assert len(out["masks"]) == len(out["labels"]) == n <= 3
        if n:  # the boxes follow the masks (within the resampling's half pixel)
            assert (out["boxes"] - boxes_from_masks(out["masks"])).abs().max() <= 1.0
            people = out["masks"].amax(0).bool()  # the image moved with the masks
            assert (out_image[0][people] > 127).float().mean() > 0.9


# ---------------------------------------------------------------------- post-processing
def test_labels_from_detections_by_hand():
    masks = np.zeros((4, 4, 6), np.float32)  # (P, H, W) probabilities
    masks[0, :, 0:3] = 0.9  # score 0.5
    masks[1, :, 2:5] = 0.8  # score 0.9: wins the shared column 2
    masks[2, :, 2:5] = 0.7  # score 0.4: every pixel already taken -> dropped
    masks[3, :, 5] = 0.45  # score 0.3: under the mask threshold 0.5 -> no pixel -> dropped
    scores = np.array([0.5, 0.9, 0.4, 0.3], np.float32)
    labels, by_id = labels_from_detections(scores, masks, 0.05, 0.5)
    assert by_id == {1: pytest.approx(0.9), 2: pytest.approx(0.5)}  # ids by descending score
    assert labels[0].tolist() == [2, 2, 1, 1, 1, 0]
    labels, by_id = labels_from_detections(scores, masks, 0.05, 0.4)  # now the last one counts
    assert labels[0, 5] == 3 and by_id[3] == pytest.approx(0.3)
    labels, by_id = labels_from_detections(scores, masks, 0.6, 0.5)  # score threshold
    assert labels[0].tolist() == [0, 0, 1, 1, 1, 0] and list(by_id) == [1]
    empty, none = labels_from_detections(np.zeros(0), np.zeros((0, 4, 6)), 0.05, 0.5)
    assert not empty.any() and none == {}


# ------------------------------------------------------------------------------ the model
def test_encoder_batchnorm_stays_frozen_after_a_training_step():
    torch.manual_seed(0)
    model = build_maskrcnn(None, min_size=64, max_size=96, fpn_channels=32)
    encoder = model.backbone.encoder
    assert not [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    frozen = [m for m in encoder.modules() if isinstance(m, FrozenBatchNormAct2d)]
    assert len(frozen) > 40
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    stem = [p for p in encoder.body.blocks[1].parameters()]
    assert stem and not any(p.requires_grad for p in stem)  # frozen stages (default 2)
    masks = instance_masks(_instances().repeat(3, 3))  # (3, 60, 90)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    model.train()
    losses = model([torch.rand(3, 60, 90)], [detection_target(masks)])
    assert set(losses) == set(LOSS_TERMS)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    opt.step()
    after = encoder.state_dict()
    for k, v in before.items():  # BN statistics, BN affine and frozen stages unchanged
        if "running_" in k or k.startswith(("body.conv_stem", "body.bn1", "body.blocks.1.")):
            assert torch.equal(after[k], v), k
    assert not torch.equal(
        after["body.blocks.6.0.conv_pwl.weight"], before["body.blocks.6.0.conv_pwl.weight"]
    )  # fmt: skip  (the rest trains)


def test_anchor_size_sets_the_smallest_anchor_and_doubles_per_fpn_level():
    for size in (32, 16):
        model = build_maskrcnn(None, min_size=64, max_size=64, fpn_channels=32, anchor_size=size)
        sizes = model.rpn.anchor_generator.sizes
        assert sizes == tuple((size * 2**k,) for k in range(5))  # P2..P6, stride 4..64
        assert len(model.rpn.anchor_generator.aspect_ratios) == len(sizes)


def test_images_are_normalised_once_by_the_transform():
    model = build_maskrcnn(None, min_size=64, max_size=64, fpn_channels=32).eval()
    assert model.roi_heads.box_predictor.cls_score.out_features == DETECTION_NUM_CLASSES == 2
    assert model.transform.image_mean == list(IMAGENET_MEAN)
    assert model.transform.image_std == list(IMAGENET_STD)
    assert not [m for m in model.backbone.modules() if isinstance(m, Normalize)]
    seen = []
    model.backbone.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    colour = torch.tensor([0.2, 0.5, 0.8])
    with torch.no_grad():
        model([colour[:, None, None].expand(3, 64, 64).clone()])
    expected = (colour - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert len(seen) == 1  # the encoder sees the batch once, normalised once
    torch.testing.assert_close(seen[0][0, :, 10, 10], expected)


def test_coco_weights_offline_are_one_clear_line(monkeypatch, tmp_path, tiny_data, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(SegkitError, match="COCO Mask R-CNN weights are not available offline"):
        build_maskrcnn("coco")
    argv = ["instance", "train", "--method", "maskrcnn", *TINY, "--weights", "coco",
            "--data-dir", str(tiny_data), "--out-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segkit: error: the COCO") and "\n" not in err
    bad = tmp_path / "not_coco.pth"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(SegkitError, match="not torchvision's maskrcnn_resnet50_fpn"):
        build_maskrcnn(bad)


# ------------------------------------------------------------------------ a run, end to end
def test_run_trains_resumes_and_evaluates_through_the_cli(tmp_path, tiny_data, capsys):
    base = ["instance", "train", "--method", "maskrcnn", *TINY, "--data-dir", str(tiny_data),
            "--out-dir", str(tmp_path), "--num-threads", "2", "--no-amp"]  # fmt: skip
    assert main([*base, "--epochs", "1"]) == 0
    run = tmp_path / "maskrcnn"
    assert main([*base, "--epochs", "2", "--resume"]) == 0  # continues from epoch 1
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    for term in (*LOSS_TERMS, "train_loss", "val_ap", "val_ap50", "val_ap75"):
        assert len(history[term]) == 2 and all(np.isfinite(history[term])), term
    for name in ("checkpoint.pt", "checkpoint_last.pt", "postprocess.json", "results_val.json",
                 "loss_curve.png", "instances_val.png"):  # fmt: skip
        assert (run / name).is_file(), name
    pp = json.loads((run / "postprocess.json").read_text())
    assert pp["selected_on"] == "val" and set(pp["params"]) == {"score_threshold", "mask_threshold"}
    capsys.readouterr()
    argv = ["instance", "evaluate", str(run), "--split", "test", "--data-dir", str(tiny_data)]
    assert main(argv) == 0
    assert "on test: ap " in capsys.readouterr().out
    res = json.loads((run / "results_test.json").read_text())
    for key in ("ap", "ap50", "ap75", "mean_best_iou", "ap_per_threshold", "num_gt"):
        assert key in res["metrics"], key  # the watershed run's keys
    assert res["inference_ms_per_image"] > 0 and res["metrics"]["num_images"] == 2
    assert (run / "instances_test.png").is_file()
    model, cfg, params = load_maskrcnn_run(run)  # the selected epoch's checkpoint
    assert cfg.task == "maskrcnn" and not model.training and params == pp["params"]
    # a finished run with the same config is reused, not retrained
    cfg = MaskRCNNConfig.from_dict(json.loads((run / "results_val.json").read_text())["config"])
    assert train_maskrcnn(cfg, reuse=True, progress=False)["epochs_run"] == 2


def test_flags_of_the_other_method_are_refused(tmp_path, capsys):
    argv = ["instance", "train", "--method", "maskrcnn", "--num-energy-levels", "8",
            "--out-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    assert "--num-energy-levels: not a flag of --method maskrcnn" in capsys.readouterr().err

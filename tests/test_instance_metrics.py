import numpy as np
import pytest
import torch

from segkit.instance_metrics import (
    InstanceEvaluator,
    average_precision,
    labels_to_masks,
    mask_iou,
    match_instances,
    remove_small,
    score_instances,
    watershed_from_maps,
    watershed_instances,
)


def _boxes(shape, *boxes):
    """Label map with instance k+1 filling box k = (y0, y1, x0, x1)."""
    lab = np.zeros(shape, np.int64)
    for k, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        lab[y0:y1, x0:x1] = k
    return lab


def _evaluate(*images):
    ev = InstanceEvaluator()
    for pred, scores, gt in images:
        ev.update(pred, scores, gt)
    return ev.compute()


GT2 = _boxes((20, 20), (0, 10, 0, 10), (10, 20, 10, 20))


def test_mask_iou_by_hand():
    a = _boxes((4, 4), (0, 2, 0, 2))  # 4 px
    b = _boxes((4, 4), (0, 2, 0, 4))  # 8 px, contains a
    iou = mask_iou(labels_to_masks(a)[0], labels_to_masks(b)[0])
    assert iou.shape == (1, 1) and iou[0, 0] == pytest.approx(0.5)
    assert mask_iou(np.zeros((0, 4, 4), bool), labels_to_masks(b)[0]).shape == (0, 1)


def test_perfect_prediction_gives_ap_one():
    res = _evaluate((GT2, [0.9, 0.8], GT2))
    assert res["ap"] == pytest.approx(1.0) and res["ap50"] == 1.0 and res["ap75"] == 1.0
    assert res["mean_best_iou"] == pytest.approx(1.0)


def test_one_missed_instance():
    pred = np.where(GT2 == 1, 1, 0)
    res = _evaluate((pred, [0.9], GT2))
    # recall 0.5 at precision 1: recall points 0, .01, ..., .50 -> 51 of 101
    assert res["ap"] == pytest.approx(51 / 101)
    assert res["mean_best_iou"] == pytest.approx(0.5)


def test_one_false_positive():
    pred = GT2.copy()
    pred[0:3, 15:18] = 3  # nowhere near a ground truth
    low = _evaluate((pred, {1: 0.9, 2: 0.8, 3: 0.1}, GT2))
    assert low["ap"] == pytest.approx(1.0)  # ranked after every true positive: harmless
    high = _evaluate((pred, {1: 0.9, 2: 0.8, 3: 0.95}, GT2))
    # ranks FP, TP, TP: precision 0, 1/2, 2/3 -> envelope 2/3 at every recall point
    assert high["ap"] == pytest.approx(2 / 3)


def test_duplicate_detections():
    gt = _boxes((8, 8), (0, 4, 0, 8))  # 32 px
    # two predictions of the same object (label maps cannot overlap, so use two images'
    # worth of masks through match_instances directly)
    exact = labels_to_masks(gt)[0][0]
    partial = exact.copy()
    partial[:, 5:] = False  # 20 px inside the object: IoU 20 / 32 = 0.625
    iou = mask_iou(np.stack([exact, exact]), exact[None])
    tp = match_instances(iou, np.array([0.9, 0.8]))
    assert tp[:, 0].all() and not tp[:, 1].any()  # the duplicate is a false positive
    assert average_precision(tp, np.array([0.9, 0.8]), 1) == pytest.approx(np.ones(10))
    # the worse copy scores higher: TP for thresholds .50, .55, .60, FP (AP 0.5) above
    iou = mask_iou(np.stack([partial, exact]), exact[None])
    tp = match_instances(iou, np.array([0.9, 0.8]))
    ap = average_precision(tp, np.array([0.9, 0.8]), 1)
    assert ap == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert ap.mean() == pytest.approx(0.65)


def test_detections_are_pooled_across_images():
    gt = _boxes((10, 10), (0, 5, 0, 5))
    fp = _boxes((10, 10), (6, 10, 6, 10))
    res = _evaluate((gt, [0.9], gt), (fp, [0.95], gt))
    # FP (0.95) then TP (0.9): precision 0, 1/2 at recall 0, 1/2 -> 0.5 on 51 recall points
    assert res["ap"] == pytest.approx(0.5 * 51 / 101)
    assert res["num_gt"] == 2 and res["num_detections"] == 2


def test_no_predictions_and_bad_input():
    res = _evaluate((np.zeros_like(GT2), [], GT2))
    assert res["ap"] == 0.0 and res["mean_best_iou"] == 0.0
    with pytest.raises(ValueError, match="scores"):
        InstanceEvaluator().update(GT2, [0.5], GT2)
    with pytest.raises(ValueError, match="size"):
        InstanceEvaluator().update(GT2[:10], [0.5], GT2)


def _touching_discs(h=40, w=64, r=14):
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.int64)
    lab[(yy - 20) ** 2 + (xx - 18) ** 2 <= r * r] = 1
    lab[((yy - 20) ** 2 + (xx - 44) ** 2 <= r * r) & (lab == 0)] = 2  # overlaps disc 1: touch
    return lab


def test_watershed_separates_touching_instances():
    from segkit.instance import distance_to_boundary

    gt = _touching_discs()
    assert len(np.unique(gt)) == 3
    prob = (gt > 0).astype(np.float32)
    energy = distance_to_boundary(gt)  # an ideal energy head
    from scipy import ndimage as ndi

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
    from segkit.instance import instance_targets, level_edges

    gt = _touching_discs()
    t = instance_targets(gt, level_edges(16))
    sem = (t["semantic"] * 20 - 10)[None, None]  # (1, 1, H, W) logits
    energy = torch.nn.functional.one_hot(t["energy"], 16).permute(2, 0, 1)[None] * 20.0
    labels = watershed_instances(torch.cat([sem, sem]), torch.cat([energy, energy]), core_level=3.0)
    assert labels.shape == (2, *gt.shape) and labels.dtype == torch.int64
    assert torch.equal(labels[0], labels[1]) and labels.max() == 2
    single = watershed_instances(sem[0], energy[0], core_level=3.0)
    assert torch.equal(single, labels[0])


def test_scores_and_remove_small():
    lab = _boxes((6, 6), (0, 2, 0, 2), (3, 6, 0, 6))
    prob = np.where(lab == 1, 0.5, 0.9)
    assert score_instances(lab, prob) == pytest.approx([0.5, 0.9])
    kept = remove_small(lab, 5)
    assert sorted(np.unique(kept)) == [0, 1] and (kept[3:] == 1).all()

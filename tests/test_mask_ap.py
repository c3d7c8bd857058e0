"""COCO mask AP (segkit.metrics.mask_ap): hand-computed cases and pycocotools' COCOeval."""

import contextlib
import io

import numpy as np
import pytest

from segkit.metrics.mask_ap import (
    IOU_THRESHOLDS,
    InstanceEvaluator,
    bootstrap_ci,
    labels_to_masks,
    mask_average_precision,
    mask_iou,
    match_instances,
    paired_bootstrap,
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
    assert iou.shape == (1, 1) and iou[0, 0] == pytest.approx(0.5) and iou.dtype == np.float64
    assert mask_iou(np.zeros((0, 4, 4), bool), labels_to_masks(b)[0]).shape == (0, 1)


def test_mask_iou_is_float64_exact_at_thresholds():
    """13/20 must be the double 0.65 (float32 gives 0.64999998 and misses the threshold)."""
    gt = np.zeros((1, 4, 5), bool)
    gt[0] = True  # 20 px
    for k, thr in ((13, 0.65), (14, 0.70), (18, 0.90), (19, 0.95)):
        pred = np.zeros_like(gt)
        pred.reshape(1, -1)[0, :k] = True
        iou = mask_iou(pred, gt)
        assert iou[0, 0] == k / 20
        t = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, thr))[0])
        tp = match_instances(iou, np.array([1.0]))
        assert tp[: t + 1, 0].all() and not tp[t + 1 :, 0].any()


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
    exact = labels_to_masks(gt)[0][0]
    partial = exact.copy()
    partial[:, 5:] = False  # 20 px inside the object: IoU 20 / 32 = 0.625
    iou = mask_iou(np.stack([exact, exact]), exact[None])
    tp = match_instances(iou, np.array([0.9, 0.8]))
    assert tp[:, 0].all() and not tp[:, 1].any()  # the duplicate is a false positive
    assert mask_average_precision(tp, np.array([0.9, 0.8]), 1) == pytest.approx(np.ones(10))
    # the worse copy scores higher: TP for thresholds .50, .55, .60, FP (AP 0.5) above
    iou = mask_iou(np.stack([partial, exact]), exact[None])
    tp = match_instances(iou, np.array([0.9, 0.8]))
    ap = mask_average_precision(tp, np.array([0.9, 0.8]), 1)
    assert ap == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert ap.mean() == pytest.approx(0.65)
    # the same through the evaluator's mask input (overlapping predictions)
    ev = InstanceEvaluator()
    ev.update_masks(np.stack([partial, exact]), [0.9, 0.8], exact[None])
    assert ev.compute()["ap"] == pytest.approx(0.65)


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
    assert np.isnan(InstanceEvaluator().compute()["ap"])
    with pytest.raises(ValueError, match="scores"):
        InstanceEvaluator().update(GT2, [0.5], GT2)
    with pytest.raises(ValueError, match="size"):
        InstanceEvaluator().update(GT2[:10], [0.5], GT2)
    with pytest.raises(ValueError, match="scores"):
        InstanceEvaluator().update_masks(np.zeros((2, 4, 4), bool), [0.5], np.zeros((1, 4, 4)))


# ------------------------------------------------------------------ against pycocotools
def _scenes(seed: int = 0, shape=(24, 32)):
    """Images as (pred_masks (P, H, W) bool, scores (P,), gt_masks (G, H, W) bool): duplicates,
    misses, empty predictions, images without ground truth, > 100 detections, IoUs of exactly
    13/20 and 19/20 (and 14/20, 15/20, 18/20), ties in score, and random scenes."""
    rng = np.random.default_rng(seed)
    h, w = shape

    def box(y0, y1, x0, x1):
        m = np.zeros(shape, bool)
        m[y0:y1, x0:x1] = True
        return m

    def first(m, k):  # the first k pixels of mask m (row-major): IoU k / area when inside it
        out = np.zeros(shape, bool)
        out.flat[np.flatnonzero(m)[:k]] = True
        return out

    def stack(masks):
        return np.stack(masks) if masks else np.zeros((0, *shape), bool)

    scenes = []
    # exact thresholds: 20-pixel objects and predictions of 13, 14, 15, 18, 19 of their pixels
    gts = [box(0, 4, 0, 5), box(0, 4, 6, 11), box(5, 9, 0, 5), box(5, 9, 6, 11), box(10, 14, 0, 5)]
    preds = [first(g, k) for g, k in zip(gts, (13, 19, 14, 15, 18), strict=True)]
    scenes.append((stack(preds), np.array([0.9, 0.8, 0.7, 0.6, 0.5]), stack(gts)))
    # duplicates (exact and partial copies, one outscoring the original) and a miss
    a, b, c = box(0, 10, 0, 10), box(12, 22, 12, 22), box(0, 6, 20, 30)
    preds = [a, a, first(a, 65), b, first(b, 95), first(b, 60)]
    scenes.append((stack(preds), np.array([0.6, 0.55, 0.9, 0.7, 0.75, 0.3]), stack([a, b, c])))
    # empty predictions; an image without ground truth (its detections are false positives)
    scenes.append((stack([]), np.zeros(0), stack([box(2, 12, 2, 12), box(14, 20, 3, 9)])))
    scenes.append((stack([box(0, 5, 0, 5), box(8, 20, 8, 20)]), np.array([0.95, 0.4]), stack([])))
    # more than 100 detections: 1x2 tiles everywhere; some true matches rank past 100
    gts = [box(y, y + 1, x, x + 2) for y, x in ((0, 0), (3, 10), (7, 20), (20, 30))]
    tiles = [box(y, y + 1, x, x + 2) for y in range(0, 24, 2) for x in range(0, 32, 2)][:130]
    tiles += [box(3, 4, 10, 12), box(7, 8, 20, 22), box(20, 21, 30, 32)]
    scores = rng.random(len(tiles))
    scores[-3:] = (0.999, 0.0001, 0.5)  # one sure, one past rank 100, one in the middle
    scores[5:9] = scores[4]  # ties keep the input order (stable sort, as pycocotools)
    scenes.append((stack(tiles), scores, stack(gts)))
    # random scenes: jittered boxes, splits, spurious detections, random scores
    for _ in range(12):
        gts, preds = [], []
        for _ in range(int(rng.integers(0, 6))):
            y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
            y1, x1 = int(rng.integers(y0 + 2, h + 1)), int(rng.integers(x0 + 2, w + 1))
            gts.append(box(y0, y1, x0, x1))
            for _ in range(int(rng.integers(0, 3))):
                dy, dx = rng.integers(-2, 3, 2)
                preds.append(
                    box(max(0, y0 + dy), max(y0 + dy + 1, y1 + dy), max(0, x0 + dx), x1 + dx)
                )
        for _ in range(int(rng.integers(0, 3))):
            y0, x0 = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
            preds.append(box(y0, y0 + 3, x0, x0 + 3))
        scores = np.round(rng.random(len(preds)), 1)  # coarse: many ties
        scenes.append((stack(preds), scores, stack(gts)))
    return scenes


def _cocoeval(scenes):
    """pycocotools' segm evaluation of the scenes: AP, AP50, AP75 and the per-threshold APs."""
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m):
        return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))

    h, w = scenes[0][0].shape[1:]
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i + 1, "height": h, "width": w} for i in range(len(scenes))],
        "categories": [{"id": 1, "name": "pedestrian"}],
        "annotations": [],
    }
    dets = []
    for i, (preds, scores, gts) in enumerate(scenes, start=1):
        for g in gts:
            ann = {"image_id": i, "category_id": 1, "segmentation": rle(g), "iscrowd": 0}
            ann.update(id=len(gt.dataset["annotations"]) + 1, area=float(g.sum()))
            gt.dataset["annotations"].append(ann)
        for p, s in zip(preds, scores, strict=True):
            dets.append({"image_id": i, "category_id": 1, "segmentation": rle(p), "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, 0, 0, -1]  # (T, R): class 1, all areas, maxDets 100
    per_t = [float(np.mean(p[p > -1])) for p in prec]
    return ev.stats[:3], per_t


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pycocotools_segm(seed):
    scenes = _scenes(seed)
    (ap, ap50, ap75), per_t = _cocoeval(scenes)
    ev = InstanceEvaluator()
    for preds, scores, gts in scenes:
        ev.update_masks(preds, scores, gts)
    res = ev.compute()
    assert 0 < ap < 1 and res["num_images"] == len(scenes)
    assert res["ap"] == pytest.approx(ap, abs=1e-9)
    assert res["ap50"] == pytest.approx(ap50, abs=1e-9)
    assert res["ap75"] == pytest.approx(ap75, abs=1e-9)
    assert res["ap_per_threshold"] == pytest.approx(per_t, abs=1e-9)


def test_label_maps_match_pycocotools_segm():
    """The label-map path (no overlaps) on scenes with exact-threshold IoUs and > 100 objects."""
    scenes = [s for s in _scenes(3) if (s[0].sum(0) <= 1).all() and (s[2].sum(0) <= 1).all()]
    assert len(scenes) >= 5 and any(len(p) > 100 for p, _, _ in scenes)
    (ap, ap50, ap75), per_t = _cocoeval(scenes)
    ev = InstanceEvaluator()
    for preds, scores, gts in scenes:
        ids = np.arange(1, len(preds) + 1)[:, None, None]
        pred_labels = (preds * ids).sum(0)  # (H, W) ids in mask order, so scores align
        gt_labels = (gts * np.arange(1, len(gts) + 1)[:, None, None]).sum(0)
        ev.update(pred_labels, scores, gt_labels)
    res = ev.compute()
    assert [res["ap"], res["ap50"], res["ap75"]] == pytest.approx([ap, ap50, ap75], abs=1e-9)
    assert res["ap_per_threshold"] == pytest.approx(per_t, abs=1e-9)


def _random_images(seed: int, n: int = 12) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(pred, scores, gt) of ``n`` images: shifted boxes, random scores, one spurious box."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        gt = _boxes((24, 24), (0, 8, 0, 8), (12, 22, 10, 20))
        s = int(rng.integers(0, 4))
        pred = _boxes((24, 24), (s, 8 + s, 0, 8), (12, 22, 10 + s, 20), (20, 24, 0, 4))
        out.append((pred, rng.random(3), gt))
    return out


def _evaluator(images) -> InstanceEvaluator:
    ev = InstanceEvaluator()
    for pred, scores, gt in images:
        ev.update(pred, scores, gt)
    return ev


def test_ap_of_images_is_a_fresh_evaluator_on_those_images(tmp_path):
    images = _random_images(0)
    ev = _evaluator(images)
    assert ev.ap_of_images(range(len(images))) == pytest.approx(ev.compute()["ap"])
    pick = [3, 3, 0, 7, 11, 3]  # a bootstrap-style draw, repeats included
    assert ev.ap_of_images(pick) == pytest.approx(_evaluate(*[images[i] for i in pick])["ap"])
    ev.save(tmp_path / "m.npz")
    back = InstanceEvaluator.load(tmp_path / "m.npz")
    assert back.compute() == ev.compute() and back.ap_of_images(pick) == ev.ap_of_images(pick)


def test_paired_bootstrap_same_draws_for_both_methods():
    images = _random_images(1)
    a = _evaluator(images)
    same = paired_bootstrap(a, _evaluator(images), resamples=200)
    assert same["diff"] == 0 and same["diff_ci"] == [0, 0] and same["b_better"] == 0
    perfect = _evaluator([(gt, [0.9, 0.8], gt) for _, _, gt in images])
    out = paired_bootstrap(a, perfect, resamples=200, seed=3)
    assert out["b_better"] == 1 and out["ci_b"] == [1, 1]
    assert out["diff"] == pytest.approx(1 - a.compute()["ap"])
    assert out["diff_ci"][0] <= out["diff"] <= out["diff_ci"][1]
    assert out == paired_bootstrap(a, perfect, resamples=200, seed=3)  # seeded
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(a, _evaluator(images[:-1]))


def test_bootstrap_ci_brackets_the_full_set_and_is_a_point_when_every_image_is_alike():
    images = _random_images(2, n=20)
    ev = _evaluator(images)
    ci = bootstrap_ci(ev, resamples=300)
    full = ev.compute()
    for key in ("ap", "ap50", "ap75"):
        assert ci[key][0] <= full[key] <= ci[key][1], key
    same = _evaluator([images[0]] * 10)  # one image ten times: every resample is the same set
    point = same.compute()
    ci = bootstrap_ci(same, resamples=50)
    for key in ("ap", "ap50", "ap75"):
        assert ci[key] == pytest.approx([point[key]] * 2), key

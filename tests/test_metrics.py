"""metrics: hand-checked confusion-matrix maths, sklearn agreement, the course's AP, streaming."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, confusion_matrix, jaccard_score

from segkit.constants import IGNORE_INDEX
from segkit.metrics import (
    APAccumulator,
    ConfusionMatrix,
    average_precision,
    binary_average_precision,
    compute_ap,
    compute_confusion_matrix,
    confusion_counts,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
    segmentation_eval,
)

# rows = ground truth, columns = prediction
CM = np.array([[3, 1, 0], [2, 4, 1], [0, 0, 5]])


def labels_from_cm(cm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(preds, target), each (1, 1, P), holding exactly the pixels that ``cm`` counts."""
    gt, pred = zip(*[(g, p) for (g, p), k in np.ndenumerate(cm) for _ in range(k)], strict=True)
    return torch.tensor([[pred]]), torch.tensor([[gt]])


def course_ap(gts: np.ndarray, preds: np.ndarray) -> float:
    """The course's AP, written as given (argsort, cumsum, backwards running-max loop)."""
    gts, preds = gts.astype(np.float64).ravel(), preds.astype(np.float64).ravel()
    ind = np.argsort(-preds)
    tp = gts[ind]
    fp = 1 - tp
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / gts.sum()
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def random_batch(seed: int, n: int = 3, c: int = 4, h: int = 12, w: int = 16, ties: bool = False):
    """float32 softmax-like scores (n, c, h, w) and labels (n, h, w) correlated with them."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, c, (n, h, w))
    logits = rng.normal(size=(n, c, h, w)) + 1.5 * np.eye(c)[target].transpose(0, 3, 1, 2)
    scores = torch.from_numpy(logits).softmax(1).numpy().astype(np.float32)
    return (np.round(scores, 1) if ties else scores), target


# ----------------------------------------------------------------------------- confusion matrix
def test_hand_written_confusion_matrix():
    np.testing.assert_allclose(iou_per_class(CM), [3 / 6, 4 / 8, 5 / 6])
    np.testing.assert_allclose(recall_per_class(CM), [3 / 4, 4 / 7, 1.0])
    np.testing.assert_allclose(precision_per_class(CM), [3 / 5, 4 / 5, 5 / 6])
    assert pixel_accuracy(CM) == pytest.approx(12 / 16)
    assert mean_iou(CM) == pytest.approx(11 / 18)
    preds, target = labels_from_cm(CM)
    np.testing.assert_array_equal(confusion_counts(preds, target, 3).numpy(), CM)


def test_perfect_prediction():
    target = torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    cm = ConfusionMatrix(4)
    cm.update(target, target)
    out = cm.compute()
    assert out["miou"] == 1.0 and out["pixel_acc"] == 1.0
    np.testing.assert_array_equal(out["confusion"], np.diag(np.bincount(target.ravel(), None, 4)))


def test_absent_class_is_nan_and_excluded():
    cm = np.array([[2, 1, 0, 0], [0, 3, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    iou = iou_per_class(cm)
    assert math.isnan(iou[2])  # absent from ground truth and prediction
    assert iou[3] == 0.0  # predicted but absent from ground truth: a real 0, not NaN
    assert math.isnan(recall_per_class(cm)[3]) and math.isnan(precision_per_class(cm)[2])
    assert mean_iou(cm) == pytest.approx((2 / 3 + 3 / 5 + 0.0) / 3)
    assert math.isnan(mean_iou(np.zeros((3, 3)))) and math.isnan(pixel_accuracy(np.zeros((3, 3))))


@pytest.mark.parametrize("as_torch", [False, True])
def test_compute_confusion_matrix_matches_sklearn(as_torch):
    rng = np.random.default_rng(1)
    gts = rng.integers(0, 4, (3, 1, 10, 12))  # class 4 never occurs ...
    preds = rng.random((3, 5, 10, 12)).astype(np.float32)
    preds[:, 4] = -1.0  # ... and is never predicted: sklearn needs labels= to keep its row
    ref = confusion_matrix(gts.ravel(), preds.argmax(1).ravel(), labels=range(5))
    jaccard = jaccard_score(gts.ravel(), preds.argmax(1).ravel(), labels=range(4), average=None)
    if as_torch:
        gts, preds = torch.from_numpy(gts), torch.from_numpy(preds)
    iou, conf = compute_confusion_matrix(gts, preds)
    assert isinstance(conf, np.ndarray) and conf.shape == (5, 5)
    np.testing.assert_array_equal(conf, ref)
    np.testing.assert_allclose(iou[:4], jaccard)  # IoU = TP / (TP + FP + FN): sklearn's Jaccard
    assert math.isnan(iou[4])


def test_streaming_logits_labels_and_ignore_index():
    scores, target = random_batch(2, c=3)
    logits, target = torch.from_numpy(scores).log(), torch.from_numpy(target)
    target[0, :3] = IGNORE_INDEX
    keep = target != IGNORE_INDEX
    by_logits, by_labels = ConfusionMatrix(3, IGNORE_INDEX), ConfusionMatrix(3, IGNORE_INDEX)
    for i in range(len(target)):  # batch by batch; (N, 1, H, W) targets are accepted too
        by_logits.update(logits[i : i + 1], target[i : i + 1, None])
        by_labels.update(logits[i : i + 1].argmax(1), target[i : i + 1])
    ref = confusion_matrix(target[keep], logits.argmax(1)[keep], labels=range(3))
    np.testing.assert_array_equal(by_logits.compute()["confusion"], ref)
    np.testing.assert_array_equal(by_labels.compute()["confusion"], ref)
    by_labels.reset()
    assert by_labels.compute()["confusion"].sum() == 0
    with pytest.raises(ValueError, match="ignore_index"):
        ConfusionMatrix(3).update(logits, target)  # 255 without ignore_index is an error


# ----------------------------------------------------------------------------- average precision
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64", "logits32", "logits64"])
def test_ap_step_matches_sklearn(ties, dtype):
    scores, target = random_batch(3, ties=ties)
    if dtype.startswith("logits"):  # negative scores: the int64 key and the rank fallback
        scores = np.log(scores + 1e-3) * 3
    scores = scores.astype(np.float64 if dtype.endswith("64") else np.float32)
    ap = average_precision(torch.from_numpy(scores), torch.from_numpy(target), 4, "step")
    ref = [average_precision_score(target.ravel() == c, scores[:, c].ravel()) for c in range(4)]
    np.testing.assert_allclose(ap, ref, atol=1e-6)


def test_ap_voc_matches_course_code_without_ties():
    rng = np.random.default_rng(4)
    target = rng.integers(0, 3, (2, 15, 20))
    scores = rng.permutation(2 * 3 * 15 * 20).reshape(2, 3, 15, 20).astype(np.float32)
    scores = scores / scores.max()  # distinct float32 values in [0, 1]
    ref = [course_ap(target == c, scores[:, c]) for c in range(3)]
    np.testing.assert_allclose(average_precision(scores, target, 3, "voc"), ref, atol=1e-6)
    np.testing.assert_allclose(compute_ap(target[:, None], scores), ref, atol=1e-6)
    assert binary_average_precision(scores[:, 1].ravel(), (target == 1).ravel()) == pytest.approx(
        ref[1], abs=1e-6
    )


def test_ap_hand_example_and_ties():
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    positive = np.array([True, False, True, False])
    # step: 1/2 * 1 + 1/2 * 2/3; voc is the same here (precision never rises)
    assert binary_average_precision(scores, positive, "step") == pytest.approx(5 / 6)
    assert binary_average_precision(scores, positive, "voc") == pytest.approx(5 / 6)
    # a tie of one positive and one negative at the top forms one point: precision 1/2
    tied = np.array([0.9, 0.9, 0.1], np.float32)
    assert binary_average_precision(tied, np.array([True, False, False]), "step") == 0.5
    with pytest.raises(ValueError, match="flavour"):
        binary_average_precision(scores, positive, "area")


def test_ap_class_without_positives_is_nan():
    scores, target = random_batch(5)
    target[target == 2] = 0
    for flavour in ("voc", "step"):
        ap = average_precision(scores, target, 4, flavour)
        assert math.isnan(ap[2]) and np.isfinite(np.delete(ap, 2)).all()


def test_ap_ignore_index():
    scores, target = random_batch(6, ties=True)
    target[:, :4] = IGNORE_INDEX
    keep = target != IGNORE_INDEX
    ap = average_precision(scores, target, 4, "step", ignore_index=IGNORE_INDEX)
    kept = scores.transpose(1, 0, 2, 3)[:, keep]  # (C, P)
    ref = [average_precision_score(target[keep] == c, kept[c]) for c in range(4)]
    np.testing.assert_allclose(ap, ref, atol=1e-6)


def test_accumulator_streams_exactly():
    batches = [random_batch(10 + i, n=2, ties=i == 1) for i in range(3)]
    scores = np.concatenate([s for s, _ in batches])
    target = np.concatenate([t for _, t in batches])
    acc = APAccumulator(4)
    logit_acc = APAccumulator(4, from_logits=True)
    for s, t in batches:
        acc.update(torch.from_numpy(s), torch.from_numpy(t))
        logit_acc.update(torch.from_numpy(np.log(s + 1e-3)), torch.from_numpy(t))
    for flavour in ("voc", "step"):
        np.testing.assert_allclose(
            acc.compute(flavour), average_precision(scores, target, 4, flavour), atol=1e-12
        )
    probs = torch.from_numpy(np.log(scores + 1e-3)).softmax(1)
    np.testing.assert_allclose(
        logit_acc.compute("step"), average_precision(probs, target, 4, "step")
    )
    acc.update(torch.from_numpy(scores[:1]), torch.from_numpy(target[:1]))  # after a compute
    both = np.concatenate([scores, scores[:1]]), np.concatenate([target, target[:1]])
    np.testing.assert_allclose(acc.compute("voc"), average_precision(*both, 4), atol=1e-12)
    acc.reset()
    assert np.isnan(acc.compute()).all()


# ----------------------------------------------------------------------------- one-shot report
def test_segmentation_eval_report():
    scores, target = random_batch(7)
    target[target == 3] = 0  # class 3: no positives -> NaN AP, left out of the means
    res = segmentation_eval(
        torch.from_numpy(scores), torch.from_numpy(target), 4, class_names=["a", "b", "c", "d"]
    )
    assert math.isnan(res.ap[3]) and res.mean_ap == pytest.approx(np.mean(res.ap[:3]))
    np.testing.assert_allclose(res.ap_step, average_precision(scores, target, 4, "step"))
    np.testing.assert_array_equal(
        res.confusion, confusion_matrix(target.ravel(), scores.argmax(1).ravel(), labels=range(4))
    )
    assert res.miou == pytest.approx(mean_iou(res.confusion))
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["ap"][3] is None and d["class_names"] == ["a", "b", "c", "d"]
    assert {"mean_ap", "mean_ap_step", "miou", "pixel_acc", "confusion"} <= d.keys()
    assert "pixel acc" in str(res) and str(res).count("\n") == 6
    logits = segmentation_eval(np.log(scores), target, 4)  # auto-detected: softmax applied
    np.testing.assert_allclose(logits.ap, res.ap, atol=1e-6)
    with pytest.raises(TypeError):
        segmentation_eval(torch.from_numpy(target), torch.from_numpy(target), 4)


def test_plot_confusion_matrix():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from segkit.viz import plot_confusion_matrix

    scores, target = random_batch(8)
    res = segmentation_eval(scores, target, 4, class_names=["a", "b", "c", "d"])
    fig = plot_confusion_matrix(res, res.class_names)
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # matrix + AP + IoU columns
    assert isinstance(plot_confusion_matrix(CM, None, normalize=None), Figure)


# ----------------------------------------------------------------------------- real data, GPU
def test_real_val_labels(data_root):
    from PIL import Image

    files = sorted((data_root / "sbd" / "val").glob("img_*.png"))[:4]
    target = np.stack([np.asarray(Image.open(f), dtype=np.int64) for f in files])  # (4, H, W)
    freq = np.eye(9)[target].mean((0, 1, 2)) + 0.01  # (9,) class frequency
    rng = np.random.default_rng(0)
    logits = np.log(freq)[None, :, None, None] + rng.normal(size=(4, 9, *target.shape[1:]))
    probs = torch.from_numpy(logits).float().softmax(1)
    res = segmentation_eval(probs, target, 9)
    present = np.unique(target)
    ref = [average_precision_score(target.ravel() == c, probs[:, c].ravel()) for c in present]
    np.testing.assert_allclose(res.ap_step[present], ref, atol=1e-6)
    ref_cm = confusion_matrix(target.ravel(), probs.argmax(1).ravel(), labels=range(9))
    np.testing.assert_array_equal(res.confusion, ref_cm)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs():
    scores, target = random_batch(9)
    s, t = torch.from_numpy(scores).cuda(), torch.from_numpy(target).cuda()
    cm, acc = ConfusionMatrix(4), APAccumulator(4)
    cm.update(s, t)
    acc.update(s, t)
    assert cm.mat is not None and cm.mat.is_cuda
    np.testing.assert_array_equal(cm.compute()["confusion"], confusion_counts(scores, target, 4))
    np.testing.assert_allclose(acc.compute(), average_precision(scores, target, 4))


def test_ap_accumulated_on_the_device_equals_numpy_and_sklearn():
    """The device path (torch sort; CUDA scores use it by default, here forced on the CPU)
    equals the numpy path and sklearn, ties included, over several batches with ignored pixels."""
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(3):
        logits = torch.randn(2, 4, 6, 7, generator=g).round(decimals=1)  # many ties
        target = torch.randint(0, 4, (2, 6, 7), generator=g)
        target[0, 0] = 255  # ignored
        batches.append((logits.softmax(1), target))
    on_dev = APAccumulator(4, ignore_index=255, on_device=True)
    ref = APAccumulator(4, ignore_index=255, on_device=False)
    for scores, target in batches:
        on_dev.update(scores, target)
        ref.update(scores, target)
    assert all(isinstance(k, torch.Tensor) for k in on_dev._keys[0])  # it did take that path
    for flavour in ("voc", "step"):
        np.testing.assert_allclose(on_dev.compute(flavour), ref.compute(flavour), rtol=1e-12)
    scores = torch.cat([b[0] for b in batches]).permute(0, 2, 3, 1).reshape(-1, 4)
    target = torch.cat([b[1] for b in batches]).reshape(-1)
    keep = target != 255
    sk = [average_precision_score(target[keep] == c, scores[keep, c]) for c in range(4)]
    np.testing.assert_allclose(on_dev.compute("step"), sk, rtol=1e-9)

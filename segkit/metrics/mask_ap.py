"""COCO-style mask AP for instance label maps (no pycocotools needed; checked against it).

Protocol (as ``pycocotools.COCOeval(iouType="segm")`` for one class, no crowd regions, all
areas, maxDets=100): detections of an image are sorted by score and the first 100 kept; each
takes the unmatched ground truth with the highest IoU that is >= the threshold (0.50:0.05:0.95);
detections of all images are then ranked by score, precision is made monotone and read at
recall 0, 0.01, ..., 1 (0 past the highest recall reached), and averaged. IoUs and thresholds
are float64, so an IoU of exactly 13/20 counts at the 0.65 threshold, as in pycocotools.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # (10,) float64, pycocotools' iouThrs
CI_LEVEL = 0.95  # the central share of the bootstrap distribution an interval covers
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # (101,) float64, pycocotools' recThrs
MAX_DETS = 100


def labels_to_masks(labels: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Split a label map into binary masks.

    Shape:
        labels: (H, W) int, 0 = background, any other value = one instance.
        returns masks (M, H, W) bool and their ids (M,) in increasing order.
    """
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]  # (M,)
    return labels[None] == ids[:, None, None], ids  # (M, H, W)


def mask_iou(pred_masks: np.ndarray, gt_masks: np.ndarray) -> np.ndarray:
    """Pairwise IoU of binary masks, in float64 (pixel counts are exact, and so is the ratio's
    rounding: 13/20 gives the same double as 0.65, not float32's 0.64999998).

    Shape:
        pred_masks: (P, H, W) bool; gt_masks: (G, H, W) bool; returns (P, G) float64.
    """
    hw = int(np.prod(gt_masks.shape[1:]))
    p = pred_masks.reshape(len(pred_masks), hw).astype(np.float64)  # (P, HW)
    g = gt_masks.reshape(len(gt_masks), hw).astype(np.float64)  # (G, HW)
    inter = p @ g.T  # (P, G) exact integer counts
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter  # (P, G)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)  # (P, G) float64


def match_instances(
    iou: np.ndarray, scores: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS
) -> np.ndarray:
    """COCO greedy matching: which detections are true positives at each IoU threshold.

    Detections are visited by decreasing score (stable); each takes the still unmatched ground
    truth of highest IoU if that IoU is >= the threshold, else it is a false positive (so a
    duplicate of an already matched object is a false positive). Ties in IoU go to the later
    ground truth, as in pycocotools.

    Shape:
        iou: (P, G); scores: (P,); thresholds: (T,); returns tp (T, P) bool in the *input*
        order of detections.
    """
    iou = np.asarray(iou, dtype=np.float64)
    num_p, num_g = iou.shape
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    tp = np.zeros((len(thresholds), num_p), dtype=bool)
    for t, thr in enumerate(np.asarray(thresholds, dtype=np.float64)):
        taken = np.zeros(num_g, dtype=bool)
        for d in order:
            best, m = min(float(thr), 1 - 1e-10), -1
            for g in range(num_g):
                if taken[g] or iou[d, g] < best:
                    continue
                best, m = iou[d, g], g
            if m >= 0:
                taken[m] = True
                tp[t, d] = True
    return tp


def mask_average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> np.ndarray:
    """101-point interpolated AP per IoU threshold from detections pooled over images.

    Shape:
        tp: (T, D) bool; scores: (D,); returns (T,) float64 (NaN when ``num_gt`` is 0).
    """
    if num_gt == 0:
        return np.full(tp.shape[0], np.nan)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    tps = tp[:, order]  # (T, D) by decreasing score
    tp_sum = np.cumsum(tps, axis=1, dtype=np.float64)  # (T, D)
    fp_sum = np.cumsum(~tps, axis=1, dtype=np.float64)  # (T, D)
    ap = np.zeros(tp.shape[0])
    for t in range(tp.shape[0]):
        rc = tp_sum[t] / num_gt  # (D,)
        pr = tp_sum[t] / (tp_sum[t] + fp_sum[t] + np.spacing(1))  # (D,)
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope (monotone)
        idx = np.searchsorted(rc, RECALL_POINTS, side="left")  # (101,)
        q = np.zeros(len(RECALL_POINTS))  # precision 0 beyond the highest recall reached
        hit = idx < len(pr)
        q[hit] = pr[idx[hit]]
        ap[t] = q.mean()
    return ap


class InstanceEvaluator:
    """Accumulates per-image predictions and ground truth; ``compute()`` gives COCO-style AP.

    Example:
        >>> ev = InstanceEvaluator()
        >>> ev.update(pred_labels, scores_by_id, gt_labels)   # once per image (label maps)
        >>> ev.update_masks(pred_masks, scores, gt_masks)     # or masks, which may overlap
        >>> ev.compute()["ap"]
    """

    def __init__(self, thresholds: np.ndarray = IOU_THRESHOLDS, max_dets: int = MAX_DETS) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)  # (T,)
        self.max_dets = max_dets
        self.reset()

    def reset(self) -> None:
        self._tp: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._best_iou: list[np.ndarray] = []
        self._num_gt: list[int] = []  # per image
        self.num_gt = 0
        self.num_images = 0

    def update(
        self,
        pred_labels: np.ndarray | torch.Tensor,
        scores: dict[int, float] | np.ndarray | list[float],
        gt_labels: np.ndarray | torch.Tensor,
    ) -> None:
        """Add one image given as label maps.

        Args:
            scores: confidence per predicted instance, a dict ``{id: score}`` or an array
                aligned with the sorted non-zero ids of ``pred_labels``.

        Shape:
            pred_labels, gt_labels: (H, W) int label maps of the same size, 0 = background.
        """
        pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
        if pred_labels.shape != gt_labels.shape:
            raise ValueError(
                f"prediction {pred_labels.shape} and ground truth {gt_labels.shape} differ in size"
            )
        pm, pids = labels_to_masks(pred_labels)  # (P, H, W), (P,)
        gm, _ = labels_to_masks(gt_labels)  # (G, H, W)
        if isinstance(scores, dict):
            s = np.array([scores[int(i)] for i in pids], dtype=np.float64)
        else:
            s = np.asarray(scores, dtype=np.float64)
        if len(s) != len(pids):
            raise ValueError(f"{len(s)} scores for {len(pids)} predicted instances")
        self.update_masks(pm, s, gm)

    def update_masks(
        self,
        pred_masks: np.ndarray,
        scores: np.ndarray | list[float],
        gt_masks: np.ndarray,
    ) -> None:
        """Add one image given as binary masks (predictions may overlap, e.g. duplicates).

        Shape: pred_masks (P, H, W) bool; scores (P,); gt_masks (G, H, W) bool.
        """
        pm, gm = np.asarray(pred_masks, dtype=bool), np.asarray(gt_masks, dtype=bool)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)  # (P,)
        if len(s) != len(pm):
            raise ValueError(f"{len(s)} scores for {len(pm)} predicted instances")
        if pm.shape[1:] != gm.shape[1:]:
            raise ValueError(f"prediction {pm.shape[1:]} and ground truth {gm.shape[1:]} differ")
        keep = np.argsort(-s, kind="mergesort")[: self.max_dets]  # best first, at most max_dets
        pm, s = pm[keep], s[keep]
        iou = mask_iou(pm, gm)  # (P, G) float64
        self._tp.append(match_instances(iou, s, self.thresholds))
        self._scores.append(s)
        self._best_iou.append(iou.max(0) if len(pm) else np.zeros(len(gm)))
        self._num_gt.append(len(gm))
        self.num_gt += len(gm)
        self.num_images += 1

    def compute(self) -> dict[str, float | list[float] | int]:
        """``ap`` (mean over thresholds), ``ap50``, ``ap75``, ``ap_per_threshold``,
        ``mean_best_iou`` (each ground truth's best IoU with any prediction, averaged)."""
        num_t = len(self.thresholds)
        tp = np.concatenate(self._tp, axis=1) if self._tp else np.zeros((num_t, 0), bool)
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        ap = mask_average_precision(tp.astype(bool), scores, self.num_gt)  # (T,)
        best = np.concatenate(self._best_iou) if self._best_iou else np.zeros(0)

        def at(thr: float) -> float:
            i = np.flatnonzero(np.isclose(self.thresholds, thr))
            return float(ap[i[0]]) if len(i) else float("nan")

        return {
            "ap": float(np.mean(ap)) if self.num_gt else float("nan"),
            "ap50": at(0.5),
            "ap75": at(0.75),
            "ap_per_threshold": [float(a) for a in ap],
            "mean_best_iou": float(best.mean()) if len(best) else float("nan"),
            "num_images": self.num_images,
            "num_gt": self.num_gt,
            "num_detections": int(len(scores)),
        }

    def ap_per_threshold(self, images: Sequence[int] | np.ndarray) -> np.ndarray:
        """AP at each IoU threshold of the images at ``images`` (indices in update order; a
        repeated index counts again, as in a bootstrap resample). Shape: (T,) float64."""
        idx = [int(i) for i in images]
        num_gt = sum(self._num_gt[i] for i in idx)
        if not idx or num_gt == 0:
            return np.full(len(self.thresholds), np.nan)
        tp = np.concatenate([self._tp[i] for i in idx], axis=1)  # (T, D)
        scores = np.concatenate([self._scores[i] for i in idx])  # (D,)
        return mask_average_precision(tp, scores, num_gt)

    def ap_of_images(self, images: Sequence[int] | np.ndarray) -> float:
        """Mean AP over the thresholds of the images at ``images`` (see
        :meth:`ap_per_threshold`)."""
        return float(np.mean(self.ap_per_threshold(images)))

    def save(self, path: str | os.PathLike) -> None:
        """The per-image matches (what :meth:`ap_of_images` needs) as one ``.npz``."""
        arrays = {"thresholds": self.thresholds, "num_gt": np.array(self._num_gt, np.int64)}
        for i, (tp, s, b) in enumerate(zip(self._tp, self._scores, self._best_iou, strict=True)):
            arrays |= {f"tp_{i}": tp, f"scores_{i}": s, f"best_iou_{i}": b}
        tmp = Path(path).with_name(Path(path).name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> InstanceEvaluator:
        """An evaluator holding the matches :meth:`save` wrote."""
        with np.load(path) as z:
            ev = cls(z["thresholds"])
            for i, n in enumerate(z["num_gt"]):
                ev._tp.append(z[f"tp_{i}"])
                ev._scores.append(z[f"scores_{i}"])
                ev._best_iou.append(z[f"best_iou_{i}"])
                ev._num_gt.append(int(n))
        ev.num_gt, ev.num_images = sum(ev._num_gt), len(ev._num_gt)
        return ev


def bootstrap_ci(
    ev: InstanceEvaluator, resamples: int = 2000, level: float = CI_LEVEL, seed: int = 0
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of ``ap``, ``ap50`` and ``ap75`` over the images: how
    much the numbers would move on another draw of as many images. Each ``[low, high]``."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, ev.num_images, size=(resamples, ev.num_images))  # (R, N)
    per_t = np.stack([ev.ap_per_threshold(d) for d in draws])  # (R, T)
    cols = {"ap": per_t.mean(1)}
    for name, thr in (("ap50", 0.5), ("ap75", 0.75)):
        cols[name] = per_t[:, int(np.flatnonzero(np.isclose(ev.thresholds, thr))[0])]
    q = [(1 - level) / 2, (1 + level) / 2]
    return {k: np.nanquantile(v, q).tolist() for k, v in cols.items()}


def paired_bootstrap(
    a: InstanceEvaluator,
    b: InstanceEvaluator,
    resamples: int = 2000,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> dict[str, float | list[float] | int]:
    """How sure is "b is better than a" on these images? Percentile bootstrap over images:
    each resample draws the images with replacement, the same draw for both methods (they saw
    the same images), and recomputes each method's AP.

    Returns ``diff`` (AP of b minus AP of a on all images), ``diff_ci`` and ``ci_a``/``ci_b``
    (the central ``level`` interval), ``b_better`` (share of resamples where b's AP is higher),
    ``resamples``, ``level``, ``num_images``."""
    n = a.num_images
    if b.num_images != n or a._num_gt != b._num_gt:
        raise ValueError("paired_bootstrap needs both methods evaluated on the same images")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))  # (R, N) image indices
    ap_a = np.array([a.ap_of_images(d) for d in draws])  # (R,)
    ap_b = np.array([b.ap_of_images(d) for d in draws])  # (R,)
    q = [(1 - level) / 2, (1 + level) / 2]
    full = range(n)
    return {
        "diff": b.ap_of_images(full) - a.ap_of_images(full),
        "diff_ci": np.nanquantile(ap_b - ap_a, q).tolist(),
        "ci_a": np.nanquantile(ap_a, q).tolist(),
        "ci_b": np.nanquantile(ap_b, q).tolist(),
        "b_better": float(np.mean(ap_b > ap_a)),
        "resamples": resamples,
        "level": level,
        "num_images": n,
    }

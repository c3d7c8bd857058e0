"""Segmentation metrics: a streaming confusion matrix (IoU, accuracy, recall) and exact per-pixel
average precision, both as the course "voc" all-points interpolated AP and sklearn's "step" AP.

Conventions. Confusion-matrix rows are ground truth, columns predictions. Pixels whose target is
``ignore_index`` are dropped everywhere. A class absent from both ground truth and prediction has
NaN IoU (recall is NaN when it is absent from ground truth, precision when it is never predicted),
and a class without positive pixels has NaN AP; means use ``nanmean``, so NaN classes are left out.
AP groups tied scores into one precision/recall point per distinct threshold, as sklearn does; the
course's ``np.argsort`` orders ties by chance, so the two agree exactly on tie-free scores only.
AP needs scores: pass softmax probabilities (softmax is monotone within a pixel, not across pixels,
so logits give a different AP), or ``from_logits=True`` to have softmax applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

IGNORE_INDEX = 255
FLAVOURS = ("voc", "step")
Flavour = Literal["voc", "step"]
ArrayLike = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------- confusion matrix
def _labels_and_target(preds_or_logits: ArrayLike, target: ArrayLike) -> tuple[torch.Tensor, ...]:
    preds = torch.as_tensor(preds_or_logits).detach()
    if preds.is_floating_point():
        preds = preds.argmax(dim=1)  # (N, C, H, W) -> (N, H, W)
    target = torch.as_tensor(target).detach().to(preds.device)
    if target.dim() == preds.dim() + 1 and target.shape[1] == 1:
        target = target.squeeze(1)  # (N, 1, H, W) -> (N, H, W)
    if preds.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(preds.shape)} != target {tuple(target.shape)}")
    return preds, target


def _check_labels(x: ArrayLike, num_classes: int, what: str, keep: ArrayLike | None = None) -> None:
    if keep is not None:
        x = x[keep]
    if (x.numel() if isinstance(x, torch.Tensor) else x.size) == 0:
        return
    if bool(x.min() < 0) or bool(x.max() >= num_classes):
        raise ValueError(f"{what} labels must lie in [0, {num_classes}) or equal ignore_index")


def confusion_counts(
    preds_or_logits: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Confusion matrix of one batch with ``torch.bincount`` (on the input's device).

    Shape:
        preds_or_logits: (N, H, W) int labels, or (N, C, H, W) float scores (argmaxed over dim 1).
        target: (N, H, W) or (N, 1, H, W) int labels. Returns (C, C) int64, rows = ground truth.
    """
    preds, target = _labels_and_target(preds_or_logits, target)
    preds, target = preds.reshape(-1).long(), target.reshape(-1).long()  # (P,)
    keep = None if ignore_index is None else target != ignore_index  # (P,) bool
    _check_labels(target, num_classes, "target", keep)
    _check_labels(preds, num_classes, "predicted", keep)
    idx = target * num_classes + preds  # (P,)
    n2 = num_classes * num_classes
    if keep is not None:
        idx = torch.where(keep, idx, n2)  # ignored pixels go to an extra bin, dropped below
    return torch.bincount(idx, minlength=n2 + 1)[:n2].reshape(num_classes, num_classes)


def _as_matrix(cm: ArrayLike) -> np.ndarray:
    return np.asarray(cm.detach().cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def iou_per_class(cm: ArrayLike) -> np.ndarray:
    """TP / (TP + FP + FN) per class; NaN for a class absent from ground truth and prediction.

    Shape: cm (C, C), rows = ground truth; returns (C,) float64.
    """
    cm = _as_matrix(cm)
    tp = np.diag(cm)
    return _divide(tp, cm.sum(0) + cm.sum(1) - tp)


def recall_per_class(cm: ArrayLike) -> np.ndarray:
    """TP / (TP + FN) = diag / row sum; NaN for a class absent from ground truth. Shape: (C,)."""
    cm = _as_matrix(cm)
    return _divide(np.diag(cm), cm.sum(1))


def precision_per_class(cm: ArrayLike) -> np.ndarray:
    """TP / (TP + FP) = diag / column sum; NaN for a class never predicted. Shape: (C,)."""
    cm = _as_matrix(cm)
    return _divide(np.diag(cm), cm.sum(0))


def mean_iou(cm: ArrayLike) -> float:
    """``nanmean`` of :func:`iou_per_class`: classes absent from both sides are left out."""
    return _nanmean(iou_per_class(cm))


def pixel_accuracy(cm: ArrayLike) -> float:
    """Correct pixels / all counted pixels (NaN for an empty matrix)."""
    cm = _as_matrix(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def compute_confusion_matrix(
    gts: ArrayLike,
    preds: ArrayLike,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The assignment's ``compute_confusion_matrix``: per-class IoU and the confusion matrix.

    Shape:
        gts: (N, 1, H, W) int labels (numpy or torch); preds: (N, C, H, W) scores.
        Returns ``(iou, conf)``: (C,) float64 and (C, C) int64, rows = ground truth.
    """
    preds = torch.as_tensor(preds)
    num_classes = num_classes or int(preds.shape[1])
    conf = confusion_counts(preds, gts, num_classes, ignore_index).cpu().numpy()
    return iou_per_class(conf), conf


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix over batches, on the device of the first batch.

    Example:
        >>> cm = ConfusionMatrix(9)
        >>> cm.update(logits, masks)  # (N, 9, H, W) scores or (N, H, W) labels; (N, H, W) masks
        >>> cm.compute()["miou"]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat: torch.Tensor | None = None  # (C, C) int64

    @torch.no_grad()
    def update(self, preds_or_logits: ArrayLike, target: ArrayLike) -> None:
        """Add one batch. Shape: (N, H, W) labels or (N, C, H, W) scores; target (N, H, W)."""
        counts = confusion_counts(preds_or_logits, target, self.num_classes, self.ignore_index)
        self.mat = counts if self.mat is None else self.mat + counts.to(self.mat.device)

    def compute(self) -> dict[str, Any]:
        """``confusion`` (C, C); ``iou``, ``recall``, ``precision``; ``miou``, ``pixel_acc``."""
        c = self.num_classes
        cm = np.zeros((c, c), np.int64) if self.mat is None else self.mat.cpu().numpy()
        return {
            "confusion": cm,
            "iou": iou_per_class(cm),
            "recall": recall_per_class(cm),
            "precision": precision_per_class(cm),
            "miou": mean_iou(cm),
            "pixel_acc": pixel_accuracy(cm),
        }

    def reset(self) -> None:
        self.mat = None


# ----------------------------------------------------------------------------- average precision
def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    return np.asarray(x)


def _sort_keys(
    scores: np.ndarray, negative: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Integer keys whose ascending order is ascending score, positives first among equal scores.

    A non-negative float's bits, read as an unsigned integer, sort like the float, so the key is
    the bits shifted left with the label in the low bit: int32 for float32 scores in [0, 2), else
    int64 (negative floats get their magnitude bits flipped; float64 outside [0, 2) and other
    dtypes fall back to dense ranks).

    Shape: scores (...) real; negative (...) bool, same shape; returns (P,) int32 or int64
    (written into ``out``, a (P,) uint32 buffer, when the fast path applies).
    """
    if scores.size == 0:
        return np.empty(0, np.int64)
    if scores.dtype == np.float16:
        scores = scores.astype(np.float32)
    if scores.dtype == np.float32 and scores.view(np.uint32).max() < 1 << 30:
        # all bits < 2**30 <=> every score is in [+0, 2) (negatives and NaN have larger bits)
        buf = None if out is None else out[: scores.size].reshape(scores.shape)
        keys = np.left_shift(scores.view(np.uint32), 1, out=buf)  # (N, H, W) contiguous
        np.bitwise_or(keys, negative, out=keys)
        return keys.reshape(-1).view(np.int32)  # < 2**31; numpy sorts int32 faster than uint32
    if scores.dtype.kind == "f" and np.isnan(scores).any():
        raise ValueError("average precision: scores contain NaN")
    neg = negative.reshape(-1)  # (P,)
    if scores.dtype == np.float32:
        bits = np.add(scores, np.float32(0)).reshape(-1).view(np.int32)  # +0 makes -0.0 +0.0
        bits = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64)
        return (bits << 1) | neg
    if scores.dtype == np.float64 and scores.min() >= 0 and scores.max() < 2:
        return (np.add(scores, 0.0).reshape(-1).view(np.int64) << 1) | neg
    flat = scores.reshape(-1)
    order = np.argsort(flat, kind="stable")  # (P,)
    ranked = flat[order]
    rank = np.empty(flat.size, np.int64)
    rank[order] = np.cumsum(np.concatenate([[0], ranked[1:] != ranked[:-1]]))
    return (rank << 1) | neg


def _ap_from_keys(keys: np.ndarray) -> tuple[float, float]:
    """(voc, step) AP of one class from its :func:`_sort_keys` keys (sorted in place), or NaN.

    Only scores held by a positive matter: elsewhere recall stays and precision falls. Pixels and
    positives scoring >= such a score v start at its first positive in ascending order, and the
    interpolated precision max(prec at scores <= v) is a forward running max.
    """
    keys.sort()  # (P,) ascending score, positives first within a tie
    low = keys.view(np.uint8)[:: keys.itemsize] if np.little_endian else keys  # label bit's byte
    pos = np.flatnonzero((low & 1) == 0)  # (npos,) positions of the positives, ascending
    npos = pos.size
    if npos == 0:
        return float("nan"), float("nan")
    pos_keys = keys[pos]  # positives' keys: equal keys <=> equal scores (label bits all 0)
    first = np.ones(npos, bool)  # first positive of each distinct score
    np.not_equal(pos_keys[1:], pos_keys[:-1], out=first[1:])
    if first.all():  # tie-free positives: every recall step is 1 / npos
        prec = np.arange(npos, 0, -1) / (keys.size - pos)  # (npos,)
        return float(np.maximum.accumulate(prec).sum() / npos), float(prec.sum() / npos)
    rank = np.flatnonzero(first)  # (T,) positives below each distinct score
    prec = (npos - rank) / (keys.size - pos[rank])  # (T,) precision at that threshold
    d_tp = np.diff(rank, append=npos).astype(np.float64)  # (T,) positives at that score
    # einsum, not `@`: no BLAS threads (they spin and slow everything down on a busy machine)
    voc = np.einsum("i,i->", d_tp, np.maximum.accumulate(prec))
    return float(voc / npos), float(np.einsum("i,i->", d_tp, prec) / npos)


def _flavour_index(flavour: str) -> int:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown AP flavour {flavour!r}; use one of {FLAVOURS}")
    return FLAVOURS.index(flavour)


def binary_average_precision(
    scores: ArrayLike, positive: ArrayLike, flavour: Flavour = "voc"
) -> float:
    """AP of one class: ``"voc"`` (course, all-points interpolated) or ``"step"`` (sklearn).

    Shape: scores (P,) real; positive (P,) bool. Returns NaN when there is no positive.
    """
    keys = _sort_keys(_to_numpy(scores), ~_to_numpy(positive).astype(bool))
    return _ap_from_keys(keys)[_flavour_index(flavour)]


def _ap_inputs(
    scores: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """numpy scores (N, C, ...), compact labels (N, ...), or (P,) where ``keep`` (N, ...) drops."""
    scores, target = _to_numpy(scores), _to_numpy(target)
    if target.ndim == scores.ndim and target.shape[1] == 1:
        target = target[:, 0]  # (N, 1, H, W) -> (N, H, W)
    if scores.shape[1] != num_classes or scores.shape[:1] + scores.shape[2:] != target.shape:
        raise ValueError(
            f"scores {scores.shape} must be (N, {num_classes}, ...) with target "
            f"(N, ...); got target {target.shape}"
        )
    keep = None if ignore_index is None else target != ignore_index  # (N, H, W) bool
    _check_labels(target, num_classes, "target", keep)
    target = target if keep is None else target[keep]
    return scores, target.astype(np.uint8 if num_classes <= 256 else np.int64), keep


def _ap_both(
    scores: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """(2, C): rows voc and step AP, one class at a time (memory O(pixels), not O(pixels x C))."""
    scores, target, keep = _ap_inputs(scores, target, num_classes, ignore_index)
    out = np.empty((2, num_classes))
    buf = np.empty(target.size, np.uint32)  # reused by every class: no fresh pages per class
    for c in range(num_classes):
        s = scores[:, c] if keep is None else scores[:, c][keep]  # (N, H, W) or (P,)
        out[:, c] = _ap_from_keys(_sort_keys(s, target != c, buf))
    return out


def average_precision(
    scores: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    flavour: Flavour = "voc",
    ignore_index: int | None = None,
) -> np.ndarray:
    """Per-class AP over all pixels, exact: ``"voc"`` (course) or ``"step"`` (sklearn).

    One sort of 32-bit integer keys per class (see :func:`_sort_keys`), no float64 copy.

    Shape: scores (N, C, H, W) real (numpy or torch; any trailing dims); target (N, H, W) or
    (N, 1, H, W) int. Returns (C,) float64, NaN for classes without positive pixels.
    """
    return _ap_both(scores, target, num_classes, ignore_index)[_flavour_index(flavour)]


def compute_ap(gts: ArrayLike, preds: ArrayLike) -> np.ndarray:
    """The assignment's ``compute_ap``: "voc" AP (C,) of gts (N, 1, H, W), preds (N, C, H, W)."""
    return average_precision(preds, gts, int(preds.shape[1]), "voc")


class APAccumulator:
    """Exact per-class AP streamed over batches.

    Memory: per pixel and class one sort key on the CPU, the float32 score's bits with the label
    folded in: 4 bytes (as much as the float32 scores alone), 8 if scores leave [0, 2) (logits
    without ``from_logits=True``). Scores are stored at float32 precision. ``compute`` needs about
    twice one class's keys on top, and caches its result until the next ``update``.

    Example:
        >>> ap = APAccumulator(9, from_logits=True)
        >>> ap.update(logits, masks)  # (N, 9, H, W), (N, H, W), on any device
        >>> ap.compute("voc")  # (9,)
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = None, from_logits: bool = False
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.from_logits = from_logits
        self.reset()

    @torch.no_grad()
    def update(self, scores: ArrayLike, target: ArrayLike) -> None:
        """Add one batch. Shape: scores (N, C, H, W) probabilities (logits with ``from_logits``);
        target (N, H, W) int."""
        scores = torch.as_tensor(scores).detach().float()
        if self.from_logits:
            scores = scores.softmax(dim=1)  # (N, C, H, W)
        s, t, keep = _ap_inputs(scores, target, self.num_classes, self.ignore_index)
        for c in range(self.num_classes):
            self._keys[c].append(_sort_keys(s[:, c] if keep is None else s[:, c][keep], t != c))
        self._cache = None

    def compute(self, flavour: Flavour = "voc") -> np.ndarray:
        """Per-class AP (C,) over everything seen; NaN for classes without positive pixels."""
        if self._cache is None:
            self._cache = np.array([self._compute_class(c) for c in range(self.num_classes)]).T
        return self._cache[_flavour_index(flavour)].copy()

    def _compute_class(self, c: int) -> tuple[float, float]:
        if not self._keys[c]:
            return float("nan"), float("nan")
        keys = np.concatenate(self._keys[c])
        self._keys[c] = [keys]  # one chunk: no second copy at the next compute
        return _ap_from_keys(keys)

    def reset(self) -> None:
        self._keys: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        self._cache: np.ndarray | None = None


# ----------------------------------------------------------------------------- one-shot report
@dataclass(eq=False)
class SegmentationResults:
    """Per-class and mean metrics of one evaluation; ``str()`` gives a per-class table."""

    class_names: list[str]
    ap: np.ndarray  # (C,) "voc" AP, the course's number
    ap_step: np.ndarray  # (C,) "step" AP, sklearn's average_precision_score
    iou: np.ndarray  # (C,)
    recall: np.ndarray  # (C,)
    precision: np.ndarray  # (C,)
    confusion: np.ndarray  # (C, C) int64, rows = ground truth

    @property
    def mean_ap(self) -> float:
        return _nanmean(self.ap)

    @property
    def mean_ap_step(self) -> float:
        return _nanmean(self.ap_step)

    @property
    def miou(self) -> float:
        return _nanmean(self.iou)

    @property
    def pixel_acc(self) -> float:
        return pixel_accuracy(self.confusion)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: floats and lists, NaN -> None."""

        def clean(x: Any) -> Any:
            return [clean(v) for v in x] if np.ndim(x) else (None if np.isnan(x) else float(x))

        per_class = ("ap", "ap_step", "iou", "recall", "precision")
        return {
            "mean_ap": clean(self.mean_ap),
            "mean_ap_step": clean(self.mean_ap_step),
            "miou": clean(self.miou),
            "pixel_acc": clean(self.pixel_acc),
            "class_names": list(self.class_names),
            **{k: clean(getattr(self, k)) for k in per_class},
            "confusion": np.asarray(self.confusion).astype(int).tolist(),
        }

    def table(self) -> str:
        cols = ("AP", "AP step", "IoU", "recall")
        rows = zip(self.class_names, self.ap, self.ap_step, self.iou, self.recall, strict=True)
        w = max(12, *(len(n) for n in self.class_names))
        lines = [f"{'class':<{w}}" + "".join(f"{c:>9}" for c in cols)]
        means = (self.mean_ap, self.mean_ap_step, self.miou, _nanmean(self.recall))
        for name, *vals in [*rows, ("mean", *means)]:
            lines.append(f"{name:<{w}}" + "".join(f"{v:>9.3f}" for v in vals))
        lines.append(f"{'pixel acc':<{w}}{self.pixel_acc:>9.3f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def segmentation_eval(
    scores_or_logits: ArrayLike,
    target: ArrayLike,
    num_classes: int,
    class_names: list[str] | tuple[str, ...] | None = None,
    ignore_index: int | None = None,
    from_logits: bool | None = None,
) -> SegmentationResults:
    """AP (both flavours), IoU, recall, precision, accuracy and confusion matrix in one call.

    Args:
        from_logits: apply softmax first; ``None`` does so when any score lies outside [0, 1].

    Shape: scores_or_logits (N, C, H, W) float (numpy or torch); target (N, H, W) or (N, 1, H, W).

    Example:
        >>> res = segmentation_eval(probs, masks, 9, class_names=CLASSES)
        >>> print(res); res.to_dict()["mean_ap"]
    """
    scores = torch.as_tensor(scores_or_logits).detach()
    if not scores.is_floating_point():
        raise TypeError("segmentation_eval needs (N, C, H, W) scores: AP is undefined for labels")
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    if from_logits is None:
        from_logits = bool(scores.numel()) and bool((scores.min() < 0) | (scores.max() > 1))
    if from_logits:
        scores = scores.softmax(dim=1)  # (N, C, H, W)
    cm = confusion_counts(scores, target, num_classes, ignore_index).cpu().numpy()
    ap = _ap_both(scores, target, num_classes, ignore_index)  # (2, C)
    names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
    return SegmentationResults(
        names, ap[0], ap[1], iou_per_class(cm), recall_per_class(cm), precision_per_class(cm), cm
    )

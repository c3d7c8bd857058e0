"""Exact per-pixel average precision, as the course "voc" all-points interpolated AP and
sklearn's "step" AP, one-shot (:func:`average_precision`) or streamed (:class:`APAccumulator`).

A class without positive pixels has NaN AP. AP groups tied scores into one precision/recall point
per distinct threshold, as sklearn does; the course's ``np.argsort`` orders ties by chance, so the
two agree exactly on tie-free scores only. AP needs scores: pass softmax probabilities (softmax is
monotone within a pixel, not across pixels, so logits give a different AP), or
``from_logits=True`` to have softmax applied.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .confusion import ArrayLike, _check_labels

FLAVOURS = ("voc", "step")
Flavour = Literal["voc", "step"]


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


def _torch_keys(scores: torch.Tensor, negative: torch.Tensor) -> torch.Tensor | None:
    """:func:`_sort_keys` on the scores' own device (int32 keys), or None when a score is not in
    [0, 2) (then the numpy path applies). Shape: scores (...) float32; negative (...) bool;
    returns (P,) int32."""
    bits = scores.contiguous().view(torch.int32)  # (...) the float's bits
    if bits.numel() and not bool(((bits >= 0) & (bits < 1 << 30)).all()):
        return None
    return ((bits << 1) | negative.to(torch.int32)).reshape(-1)  # (P,)


def _ap_from_keys_torch(keys: torch.Tensor) -> tuple[float, float]:
    """:func:`_ap_from_keys` in torch, on the keys' device (one sort, no copy to the CPU)."""
    keys = torch.sort(keys).values  # (P,) ascending score, positives first within a tie
    pos = torch.nonzero((keys & 1) == 0).squeeze(1)  # (npos,)
    npos = pos.numel()
    if npos == 0:
        return float("nan"), float("nan")
    pos_keys = keys[pos]  # (npos,)
    first = torch.ones(npos, dtype=torch.bool, device=keys.device)
    first[1:] = pos_keys[1:] != pos_keys[:-1]
    rank = torch.nonzero(first).squeeze(1)  # (T,) positives below each distinct score
    prec = (npos - rank).double() / (keys.numel() - pos[rank]).double()  # (T,)
    end = torch.tensor([npos], device=keys.device)
    d_tp = torch.diff(rank, append=end).double()  # (T,) positives at that score
    voc = (d_tp * torch.cummax(prec, 0).values).sum() / npos
    step = (d_tp * prec).sum() / npos
    return float(voc), float(step)


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
        self,
        num_classes: int,
        ignore_index: int | None = None,
        from_logits: bool = False,
        on_device: bool | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.from_logits = from_logits
        self.on_device = on_device  # None: keys stay where CUDA scores are, else numpy
        self.reset()

    @torch.no_grad()
    def update(self, scores: ArrayLike, target: ArrayLike) -> None:
        """Add one batch. Shape: scores (N, C, H, W) probabilities (logits with ``from_logits``);
        target (N, H, W) int. CUDA scores keep their keys on the GPU (``on_device``): no copy
        of the batch to the CPU, and ``compute`` sorts there."""
        scores = torch.as_tensor(scores).detach().float()
        if self.from_logits:
            scores = scores.softmax(dim=1)  # (N, C, H, W)
        device_ok = self.on_device if self.on_device is not None else scores.is_cuda
        if device_ok and isinstance(target, torch.Tensor) and self._update_torch(scores, target):
            return
        s, t, keep = _ap_inputs(scores, target, self.num_classes, self.ignore_index)
        for c in range(self.num_classes):
            self._keys[c].append(_sort_keys(s[:, c] if keep is None else s[:, c][keep], t != c))
        self._cache = None

    def _update_torch(self, scores: torch.Tensor, target: torch.Tensor) -> bool:
        """Keys of one batch on the scores' device; False (nothing added) when a score is out
        of [0, 2) or a label is out of range (the numpy path then checks and says which)."""
        target = target.to(scores.device)
        if target.dim() == scores.dim():
            target = target[:, 0]  # (N, 1, H, W) -> (N, H, W)
        keep = None if self.ignore_index is None else target != self.ignore_index  # (N, H, W)
        t = target if keep is None else target[keep]  # (N, H, W) or (P,)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_classes):
            return False
        keys = []
        for c in range(self.num_classes):
            s = scores[:, c] if keep is None else scores[:, c][keep]  # (N, H, W) or (P,)
            k = _torch_keys(s, t != c)
            if k is None:
                return False
            keys.append(k)
        for c, k in enumerate(keys):
            self._keys[c].append(k)
        self._cache = None
        return True

    def compute(self, flavour: Flavour = "voc") -> np.ndarray:
        """Per-class AP (C,) over everything seen; NaN for classes without positive pixels."""
        if self._cache is None:
            self._cache = np.array([self._compute_class(c) for c in range(self.num_classes)]).T
        return self._cache[_flavour_index(flavour)].copy()

    def _compute_class(self, c: int) -> tuple[float, float]:
        if not self._keys[c]:
            return float("nan"), float("nan")
        chunks = self._keys[c]
        if any(isinstance(k, torch.Tensor) for k in chunks):  # on the device (or mixed)
            dev = next(k.device for k in chunks if isinstance(k, torch.Tensor))
            same = all(isinstance(k, torch.Tensor) and k.dtype == torch.int32 for k in chunks)
            keys_t = torch.cat(
                chunks if same else [torch.as_tensor(k).to(dev, torch.int64) for k in chunks]
            )  # (P,)
            self._keys[c] = [keys_t]
            return _ap_from_keys_torch(keys_t)
        keys = np.concatenate(chunks)
        self._keys[c] = [keys]  # one chunk: no second copy at the next compute
        return _ap_from_keys(keys)

    def reset(self) -> None:
        self._keys: list[list[np.ndarray | torch.Tensor]] = [[] for _ in range(self.num_classes)]
        self._cache: np.ndarray | None = None

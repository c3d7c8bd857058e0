"""Evaluation of the instance path: watershed post-processing of the two heads, COCO-style mask
AP for label maps (no pycocotools), and evaluation of a run on a Penn-Fudan split.

AP protocol (as ``pycocotools.COCOeval`` for one class, no crowd regions, all areas,
maxDets=100): detections of an image are sorted by score; each takes the unmatched ground
truth with the highest IoU that is >= the threshold (0.50:0.05:0.95); detections of all images
are then ranked by score, precision is made monotone and read at recall 0, 0.01, ..., 1
(0 past the highest recall reached), and averaged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed

# -------------------------------------------------------------------------------- metrics
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETS = 100


def labels_to_masks(labels: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Split a label map into binary masks.

    Shape:
        labels: (H, W) int, 0 = background, any other value = one instance.
        returns masks (M, H, W) bool and their ids (M,) in increasing order.
    """
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    return labels[None] == ids[:, None, None], ids  # (M, H, W)


def mask_iou(pred_masks: np.ndarray, gt_masks: np.ndarray) -> np.ndarray:
    """Pairwise IoU of binary masks.

    Shape:
        pred_masks: (P, H, W) bool; gt_masks: (G, H, W) bool; returns (P, G) float64.
    """
    hw = int(np.prod(gt_masks.shape[1:]))
    p = pred_masks.reshape(len(pred_masks), hw).astype(np.float32)  # (P, HW)
    g = gt_masks.reshape(len(gt_masks), hw).astype(np.float32)  # (G, HW)
    inter = p @ g.T  # (P, G)
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)


def match_instances(
    iou: np.ndarray, scores: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS
) -> np.ndarray:
    """COCO greedy matching: which detections are true positives at each IoU threshold.

    Detections are visited by decreasing score (stable); each takes the still unmatched ground
    truth of highest IoU if that IoU is >= the threshold, else it is a false positive (so a
    duplicate of an already matched object is a false positive).

    Shape:
        iou: (P, G); scores: (P,); returns tp (T, P) bool in the *input* order of detections.
    """
    num_p, num_g = iou.shape
    order = np.argsort(-scores, kind="mergesort")
    tp = np.zeros((len(thresholds), num_p), dtype=bool)
    for t, thr in enumerate(thresholds):
        taken = np.zeros(num_g, dtype=bool)
        for d in order:
            best, m = min(thr, 1 - 1e-10), -1
            for g in range(num_g):
                if taken[g] or iou[d, g] < best:
                    continue
                best, m = iou[d, g], g
            if m >= 0:
                taken[m] = True
                tp[t, d] = True
    return tp


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> np.ndarray:
    """101-point interpolated AP per IoU threshold from detections pooled over images.

    Shape:
        tp: (T, D) bool; scores: (D,); returns (T,) float64 (NaN when ``num_gt`` is 0).
    """
    if num_gt == 0:
        return np.full(tp.shape[0], np.nan)
    order = np.argsort(-scores, kind="mergesort")
    tps = tp[:, order]
    tp_sum = np.cumsum(tps, axis=1, dtype=np.float64)  # (T, D)
    fp_sum = np.cumsum(~tps, axis=1, dtype=np.float64)
    ap = np.zeros(tp.shape[0])
    for t in range(tp.shape[0]):
        rc = tp_sum[t] / num_gt
        pr = tp_sum[t] / (tp_sum[t] + fp_sum[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope (monotone)
        idx = np.searchsorted(rc, RECALL_POINTS, side="left")
        q = np.zeros(len(RECALL_POINTS))  # precision 0 beyond the highest recall reached
        hit = idx < len(pr)
        q[hit] = pr[idx[hit]]
        ap[t] = q.mean()
    return ap


class InstanceEvaluator:
    """Accumulates per-image predictions and ground truth; ``compute()`` gives COCO-style AP.

    Example:
        >>> ev = InstanceEvaluator()
        >>> ev.update(pred_labels, scores_by_id, gt_labels)   # once per image
        >>> ev.compute()["ap"]
    """

    def __init__(self, thresholds: np.ndarray = IOU_THRESHOLDS, max_dets: int = MAX_DETS) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.max_dets = max_dets
        self.reset()

    def reset(self) -> None:
        self._tp: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._best_iou: list[np.ndarray] = []
        self.num_gt = 0
        self.num_images = 0

    def update(
        self,
        pred_labels: np.ndarray | torch.Tensor,
        scores: dict[int, float] | np.ndarray,
        gt_labels: np.ndarray | torch.Tensor,
    ) -> None:
        """Add one image.

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
        pm, pids = labels_to_masks(pred_labels)
        gm, _ = labels_to_masks(gt_labels)
        if isinstance(scores, dict):
            s = np.array([scores[int(i)] for i in pids], dtype=np.float64)
        else:
            s = np.asarray(scores, dtype=np.float64)
        if len(s) != len(pids):
            raise ValueError(f"{len(s)} scores for {len(pids)} predicted instances")
        keep = np.argsort(-s, kind="mergesort")[: self.max_dets]
        pm, s = pm[keep], s[keep]
        iou = mask_iou(pm, gm)  # (P, G)
        self._tp.append(match_instances(iou, s, self.thresholds))
        self._scores.append(s)
        self._best_iou.append(iou.max(0) if len(pm) else np.zeros(len(gm)))
        self.num_gt += len(gm)
        self.num_images += 1

    def compute(self) -> dict[str, float | list[float] | int]:
        """``ap`` (mean over thresholds), ``ap50``, ``ap75``, ``ap_per_threshold``,
        ``mean_best_iou`` (each ground truth's best IoU with any prediction, averaged)."""
        tp = np.concatenate(self._tp, axis=1) if self._tp else np.zeros((len(self.thresholds), 0))
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        ap = average_precision(tp.astype(bool), scores, self.num_gt)
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


# ---------------------------------------------------------------------- post-processing
def expected_energy(energy_logits: torch.Tensor) -> torch.Tensor:
    """Softmax-expected energy level, a smooth relief for the watershed.

    Shape: (N, K, H, W) -> (N, H, W) float32 in [0, K - 1].
    """
    probs = energy_logits.float().softmax(dim=1)
    levels = torch.arange(probs.shape[1], device=probs.device, dtype=probs.dtype)
    return torch.einsum("nkhw,k->nhw", probs, levels)


def watershed_from_maps(
    prob: np.ndarray,
    energy: np.ndarray,
    sem_threshold: float = 0.5,
    core_level: float = 3.0,
    min_size: int = 0,
) -> np.ndarray:
    """Instances from a foreground probability and an energy map (one image).

    Markers are the connected cores ``energy >= core_level`` inside the predicted mask
    ``prob >= sem_threshold``; a mask component without any core becomes one marker itself.
    The watershed floods ``-energy`` from the markers within the mask; instances smaller than
    ``min_size`` pixels are dropped and ids renumbered 1..M.

    Shape: prob, energy (H, W) float; returns (H, W) int64.
    """
    fg = prob >= sem_threshold
    comps, n = ndi.label(fg)
    cores, m = ndi.label(fg & (energy >= core_level))
    has_core = np.zeros(n + 1, bool)
    has_core[comps[cores > 0]] = True
    orphan = (comps > 0) & ~has_core[comps]
    markers = np.where(orphan, comps + m, cores)
    labels = watershed(-energy, markers, mask=fg)
    return remove_small(relabel_sequential(labels)[0].astype(np.int64), min_size)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop instances under ``min_size`` pixels and renumber 1..M. Shape: (H, W) -> (H, W)."""
    if min_size <= 0:
        return labels
    small = np.bincount(labels.ravel()) < min_size
    small[0] = False
    return relabel_sequential(np.where(small[labels], 0, labels))[0]


def watershed_instances(
    semantic_logits: torch.Tensor,
    energy_logits: torch.Tensor,
    sem_threshold: float = 0.5,
    core_level: float = 3.0,
    min_size: int = 0,
) -> torch.Tensor:
    """Per-pixel instance labels from the two heads (see :func:`watershed_from_maps`).

    Shape: semantic_logits (N, 1, H, W), energy_logits (N, K, H, W) -> (N, H, W) int64;
    unbatched (1, H, W), (K, H, W) -> (H, W).
    """
    if semantic_logits.dim() == 3:
        return watershed_instances(
            semantic_logits[None], energy_logits[None], sem_threshold, core_level, min_size
        )[0]
    probs = torch.sigmoid(semantic_logits.float()[:, 0]).cpu().numpy()  # (N, H, W)
    energy = expected_energy(energy_logits).cpu().numpy()  # (N, H, W)
    out = [
        watershed_from_maps(p, e, sem_threshold, core_level, min_size)
        for p, e in zip(probs, energy, strict=True)
    ]
    return torch.from_numpy(np.stack(out))


def score_instances(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Confidence of each instance = its mean semantic probability (ids 1..M in order).

    Shape: labels (H, W) int64 with ids 1..M; prob (H, W) float; returns (M,) float64.
    """
    sums = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64))
    counts = np.bincount(labels.ravel())
    return sums[1:] / np.maximum(counts[1:], 1)


# ------------------------------------------------------ evaluation of a model on a split
POSTPROCESS_GRID: dict[str, tuple] = {
    "sem_threshold": (0.2, 0.3, 0.4, 0.5, 0.6),
    "core_level": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0),  # energy levels (0..K-1)
    "min_size": (0, 200, 800),  # pixels at original resolution (smallest GT: 77, 5%: ~2600)
}


@torch.inference_mode()
def predict_maps(
    model: torch.nn.Module, dataset, device: torch.device, indices: list[int] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Foreground probability and expected energy of each image, at its *original* size.

    The model sees the working-size image padded to a multiple of 32; the padding is cut off
    and both maps are resized bilinearly back (semantic logits before the sigmoid).

    Shape: returns, per image, ``(prob (H, W) float32, energy (H, W) float32)``.
    """
    from .instance import pad_to_multiple, split_logits

    was_training = model.training
    model.eval().to(device)
    out = []
    try:
        for i in range(len(dataset)) if indices is None else indices:
            image, instances = dataset.resized(i)
            h, w = instances.shape
            padded, _ = pad_to_multiple(image, instances)
            logits = model(padded[None].float().div(255).to(device))[..., :h, :w].float()
            sem, energy = split_logits(logits)  # (1, 1, h, w), (1, K, h, w)
            maps = torch.cat([sem, expected_energy(energy)[:, None]], dim=1)  # (1, 2, h, w)
            maps = F.interpolate(maps, size=dataset.sizes[i], mode="bilinear", align_corners=False)[
                0
            ].cpu()  # (2, H, W)
            out.append((torch.sigmoid(maps[0]).numpy(), maps[1].numpy()))
    finally:
        model.train(was_training)
    return out


def evaluate_maps(
    maps: list[tuple[np.ndarray, np.ndarray]],
    gts: list[np.ndarray],
    sem_threshold: float,
    core_level: float,
    min_size: int,
    labels: list[np.ndarray] | None = None,
) -> tuple[dict, list[np.ndarray]]:
    """Watershed each image's maps, score instances, and return (metrics, predicted labels).

    ``labels`` (watershed results with ``min_size=0``) may be passed to skip the watershed.
    """
    ev = InstanceEvaluator()
    preds = []
    for k, ((prob, energy), gt) in enumerate(zip(maps, gts, strict=True)):
        lab = (
            watershed_from_maps(prob, energy, sem_threshold, core_level)
            if labels is None
            else labels[k]
        )
        lab = remove_small(lab, min_size)
        ev.update(lab, score_instances(lab, prob), gt)
        preds.append(lab)
    return ev.compute(), preds


def tune_postprocessing(
    maps: list[tuple[np.ndarray, np.ndarray]],
    gts: list[np.ndarray],
    grid: dict[str, tuple] = POSTPROCESS_GRID,
) -> tuple[dict, list[dict]]:
    """Grid search of the watershed thresholds for the highest AP@[.5:.95] (use val only).

    Returns the best ``{"sem_threshold", "core_level", "min_size"}`` and one row per setting.
    """
    table, best, best_key = [], {}, (-1.0, -1.0)
    for t in grid["sem_threshold"]:
        for c in grid["core_level"]:
            labels = [watershed_from_maps(p, e, t, c) for p, e in maps]
            for m in grid["min_size"]:
                res, _ = evaluate_maps(maps, gts, t, c, m, labels=labels)
                row = {
                    "sem_threshold": t,
                    "core_level": c,
                    "min_size": m,
                    "ap": res["ap"],
                    "ap50": res["ap50"],
                    "mean_best_iou": res["mean_best_iou"],
                }
                table.append(row)
                if (res["ap"], res["ap50"]) > best_key:
                    best_key = (res["ap"], res["ap50"])
                    best = {"sem_threshold": t, "core_level": c, "min_size": m}
    return best, table


def load_instance_run(run_dir: str | os.PathLike, device: torch.device | None = None):
    """The best model of a run folder, its :class:`InstanceConfig` and post-processing."""
    from .instance import InstanceConfig, InstanceUNet
    from .train import load_checkpoint

    run_dir = Path(run_dir)
    ck = load_checkpoint(run_dir / "checkpoint.pt")
    cfg = InstanceConfig.from_dict(ck["config"])
    model = InstanceUNet(cfg.body, cfg.num_energy_levels, weights=None)  # all weights in ck
    model.load_state_dict(ck["model"])
    params = {
        "sem_threshold": cfg.sem_threshold,
        "core_level": cfg.core_level,
        "min_size": cfg.min_size,
    }
    pp = run_dir / "postprocess.json"
    if pp.is_file():
        params = json.loads(pp.read_text())["params"]
    return model.to(device or "cpu").eval(), cfg, params


def evaluate_instance_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    device: str = "auto",
    data_dir: str | None = None,
    *,
    figures: bool = True,
) -> dict:
    """Evaluate a run on ``split`` at original resolution; writes results_<split>.json and
    instances_<split>.png / energy_<split>.png in the run folder."""
    from .experiment import hardware, write_json
    from .instance import MASK_RCNN_REFERENCE, save_instance_figures
    from .utils import get_device

    dev = get_device(device)
    run_dir = Path(run_dir)
    model, cfg, params = load_instance_run(run_dir, dev)
    dataset = cfg.dataset(split, data_dir=data_dir)
    maps = predict_maps(model, dataset, dev)
    gts = [dataset.raw(i)[1].numpy() for i in range(len(dataset))]
    metrics, preds = evaluate_maps(maps, gts, **params)
    ref_ap = MASK_RCNN_REFERENCE["mask_ap"]
    val = run_dir / "results_val.json"
    train_info = json.loads(val.read_text()) if val.is_file() else {}
    out = {
        "run": run_dir.name,
        "split": split,
        "stems": dataset.stems,
        "config": dataclasses.asdict(cfg),
        "postprocess": params,
        "epochs_run": train_info.get("epochs_run"),
        "best_epoch": train_info.get("best_epoch"),
        "train_seconds": train_info.get("train_seconds"),
        "hardware": hardware(),
        "train_hardware": train_info.get("hardware"),
        "metrics": metrics,
        "reference": {**MASK_RCNN_REFERENCE, "ap_minus_reference": metrics["ap"] - ref_ap},
    }
    write_json(out, run_dir / f"results_{split}.json")
    if figures:
        save_instance_figures(run_dir, split, dataset, maps, preds)
    return out

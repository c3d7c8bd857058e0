"""Distance-to-boundary energy levels and back, in the manner of the Deep Watershed Transform
(Bai & Urtasun, CVPR 2017): training targets from an instance map (per-instance distance to the
boundary, quantised into K levels), and instances from a foreground probability and an energy
map (marker-based watershed), with a confidence score per instance.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed

from .constants import IGNORE_INDEX, NUM_ENERGY_LEVELS

MAX_DISTANCE = 32.0  # px at working size where the top level starts (~half a pedestrian's width)


# ---------------------------------------------------------------------- instances -> levels
def distance_to_boundary(instances: np.ndarray) -> np.ndarray:
    """Per-instance Euclidean distance to the nearest pixel outside the instance.

    Other instances, background and the image border all count as boundary, so touching
    instances get separate basins. Computed per instance on its padded bounding box.

    Shape: instances (H, W) int (0 = background); returns (H, W) float32, 0 on background.
    """
    dist = np.zeros(instances.shape, np.float32)  # (H, W)
    for i, box in enumerate(ndi.find_objects(instances), start=1):
        if box is None:
            continue
        inside = instances[box] == i  # (h, w) bool, the instance's bounding box
        d = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]  # (h, w)
        dist[box][inside] = d[inside]
    return dist


def level_edges(
    num_levels: int = NUM_ENERGY_LEVELS, max_distance: float = MAX_DISTANCE
) -> np.ndarray:
    """``K - 1`` distance edges (px): 2, 3, ..., 8, then geometric up to ``max_distance``.

    Level 0 is the one-pixel boundary ring; levels are finest next to the boundary, where
    touching instances must be split, and coarse in the interior (as in the DWT paper's K=16).

    Shape: returns (K - 1,) float64, increasing.
    """
    n = num_levels - 1
    lin = np.arange(2.0, 2.0 + min(n, 7))
    return np.concatenate([lin, np.geomspace(lin[-1], max_distance, n - len(lin) + 1)[1:]])


def quantise_distance(dist: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Energy level = number of edges <= distance (0..K-1); background is level 0.

    Shape: dist (H, W) float; edges (K - 1,); returns (H, W) int64.
    """
    return np.searchsorted(edges, dist, side="right").astype(np.int64)


def instance_targets(
    instances: torch.Tensor | np.ndarray, edges: np.ndarray
) -> dict[str, torch.Tensor]:
    """Training targets from one instance map (IGNORE_INDEX marks padding).

    Shape:
        instances: (H, W) int. Returns a dict of (H, W) tensors: ``instances`` int64 (padding 0),
        ``semantic`` float32 {0, 1}, ``distance`` float32, ``energy`` int64 level,
        ``weight`` float32 = 1 / sqrt(instance area) on instance pixels, 0 elsewhere,
        ``valid`` float32 (0 on padding).
    """
    inst = np.asarray(instances).astype(np.int64)  # (H, W)
    valid = inst != IGNORE_INDEX  # (H, W) bool
    inst = np.where(valid, inst, 0)
    dist = distance_to_boundary(inst)  # (H, W) float32
    area = np.bincount(inst.ravel())[inst].astype(np.float32)  # (H, W) area of own instance
    weight = np.where(inst > 0, 1.0 / np.sqrt(np.maximum(area, 1)), 0.0).astype(np.float32)
    return {
        "instances": torch.from_numpy(inst),
        "semantic": torch.from_numpy((inst > 0).astype(np.float32)),
        "distance": torch.from_numpy(dist),
        "energy": torch.from_numpy(quantise_distance(dist, edges)),
        "weight": torch.from_numpy(weight),
        "valid": torch.from_numpy(valid.astype(np.float32)),
    }


# ---------------------------------------------------------------------- levels -> instances
def expected_energy(energy_logits: torch.Tensor) -> torch.Tensor:
    """Softmax-expected energy level, a smooth relief for the watershed.

    Shape: (N, K, H, W) -> (N, H, W) float32 in [0, K - 1].
    """
    probs = energy_logits.float().softmax(dim=1)  # (N, K, H, W)
    levels = torch.arange(probs.shape[1], device=probs.device, dtype=probs.dtype)  # (K,)
    return torch.einsum("nkhw,k->nhw", probs, levels)  # (N, H, W)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop instances under ``min_size`` pixels and renumber 1..M. Shape: (H, W) -> (H, W)."""
    if min_size <= 0:
        return labels
    small = np.bincount(labels.ravel()) < min_size  # (max id + 1,) bool
    small[0] = False
    return relabel_sequential(np.where(small[labels], 0, labels))[0]


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
    fg = prob >= sem_threshold  # (H, W) bool
    comps, n = ndi.label(fg)  # (H, W) component ids 1..n
    cores, m = ndi.label(fg & (energy >= core_level))  # (H, W) core ids 1..m
    has_core = np.zeros(n + 1, bool)
    has_core[comps[cores > 0]] = True
    orphan = (comps > 0) & ~has_core[comps]  # (H, W) components without a core
    markers = np.where(orphan, comps + m, cores)  # (H, W)
    labels = watershed(-energy, markers, mask=fg)  # (H, W)
    return remove_small(relabel_sequential(labels)[0].astype(np.int64), min_size)


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
    return torch.from_numpy(np.stack(out))  # (N, H, W) int64


def score_instances(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Confidence of each instance = its mean semantic probability (ids 1..M in order).

    Shape: labels (H, W) int64 with ids 1..M; prob (H, W) float; returns (M,) float64.
    """
    sums = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64))  # (M + 1,)
    counts = np.bincount(labels.ravel())  # (M + 1,)
    return sums[1:] / np.maximum(counts[1:], 1)

"""The bonus section's macros for ``generated/numbers.tex`` (:mod:`segkit.report_numbers`): each
instance method's numbers, the post-processing chosen on val, the Penn-Fudan split sizes and the
weights of the DWT loss as :mod:`segkit.losses` applies them."""

from __future__ import annotations

import re

from .config import model_label as _config_label
from .losses import default_level_weights
from .report_tables import INSTANCE_METHODS, fmt, instance_body, tex_escape
from .sources import load_checksums

# the macro prefix of each instance method (results.json key -> prefix)
INSTANCE_PREFIXES = {"instance": "Inst", "instance_maskrcnn": "Mrcnn"}


def _camel(s: str) -> str:
    """``sem_threshold`` -> ``SemThreshold`` (a field name as part of a macro name)."""
    return "".join(w.capitalize() for w in re.split(r"[^A-Za-z]+", s) if w)


def _level_weights_text(weights: list[float]) -> str:
    """Runs of equal level weights in words: "$w_k=3$ for $k\\le 2$, $w_3=2$ and $w_k=1$ for
    $4\\le k\\le 15$"."""
    runs: list[tuple[int, int, float]] = []
    for k, w in enumerate(weights):
        if runs and runs[-1][2] == w:
            runs[-1] = (runs[-1][0], k, w)
        else:
            runs.append((k, k, w))
    last = len(weights) - 1
    parts = []
    for a, b, w in runs:
        if a == b:
            parts.append(f"$w_{{{a}}}={w:g}$")
        elif a == 0:
            parts.append(f"$w_k={w:g}$ for $k\\le {b}$")
        elif b == last:
            parts.append(f"$w_k={w:g}$ for $k\\ge {a}$")
        else:
            parts.append(f"$w_k={w:g}$ for ${a}\\le k\\le {b}$")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def pennfudan_size() -> int:
    """The number of Penn-Fudan images (those of the official archive's checksum list)."""
    return sum(
        p.startswith("PNGImages/") and p.endswith(".png") for p in load_checksums("PennFudanPed")
    )


def instance_macros(results: dict) -> dict[str, str]:
    """Bonus: each instance method's numbers (``\\InstTestAP``, ``\\MrcnnTestAP`` ...), its
    post-processing chosen on val, the split sizes and the DWT loss's weights."""
    out: dict[str, str] = {}
    for key, _ in INSTANCE_METHODS:
        inst, p = results.get(key), INSTANCE_PREFIXES.get(key)
        if not inst or not p:
            continue
        for split in ("val", "test"):
            m = inst[split]
            s = split.capitalize()
            out[f"{p}{s}AP"] = fmt(m["ap"])
            out[f"{p}{s}APfifty"] = fmt(m["ap50"])
            out[f"{p}{s}APseventyfive"] = fmt(m["ap75"])
            out[f"{p}{s}IoU"] = fmt(m.get("mean_best_iou"))
            if m.get("num_images") is not None:
                out[f"{p}{s}Images"] = str(m["num_images"])
            if m.get("num_gt") is not None:
                out[f"{p}{s}People"] = str(m["num_gt"])
        out[f"{p}Minutes"] = fmt(inst["train_seconds"] / 60, 0)
        out[f"{p}Epochs"] = str(inst["epochs"])
        out[f"{p}Body"] = tex_escape(_config_label(instance_body(inst)))
        if inst.get("inference_ms") is not None:
            out[f"{p}InferenceMs"] = fmt(inst["inference_ms"], 0)
        for field, value in (inst.get("postprocess") or {}).items():  # chosen on val
            out[f"{p}{_camel(field)}"] = f"{value:g}" if isinstance(value, float) else str(value)
        cfg = inst.get("config") or {}
        val, test = inst["val"].get("num_images"), inst["test"].get("num_images")
        total = pennfudan_size()
        if val is not None and test is not None and total > val + test:
            out[f"{p}TrainImages"] = str(total - val - test)
            out[f"{p}AllImages"] = str(total)
        levels = cfg.get("num_energy_levels")
        if levels is not None:
            out[f"{p}EnergyLevels"] = str(levels)
            out[f"{p}LevelWeights"] = _level_weights_text(default_level_weights(levels).tolist())
        if cfg.get("energy_weight") is not None:
            out[f"{p}EnergyWeight"] = f"{cfg['energy_weight']:g}"
        ref = inst.get("reference")
        if ref:
            out[f"{p}RefAP"] = fmt(ref["mask_ap"])
            out[f"{p}RefModel"] = tex_escape(ref.get("model", ""))
    return out

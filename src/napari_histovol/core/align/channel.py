"""Registration images: one stain-robust channel per section, downsized, tissue bright.

Brightfield RGB sections are registered on optical density (the sum over channels of
-log(I / I_background)), which shows tissue of any stain as bright on a dark slide, so an H&E
section registers against a CD31 or Ki67 neighbour. Gray brightfield sections are inverted;
fluorescence and EM (dark background) are used as they are.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..io.slices import background_value

CHANNELS = ("auto", "od", "intensity", "inverted")


def is_bright_background(img: np.ndarray) -> bool:
    """True when the section lies on a bright (brightfield) slide."""
    bg = np.asarray(background_value(img), dtype=np.float64).mean()
    if img.dtype.kind in "ui":
        top = np.iinfo(img.dtype).max if img.dtype.itemsize == 1 else max(float(img.max()), 1.0)
    else:
        top = max(float(np.nanmax(img)), 1e-9)
    return bg > 0.5 * top


def auto_channel(img: np.ndarray) -> str:
    """The channel kind ``auto`` picks for a section (decide once per stack: a per-section
    choice could invert one section against its neighbours)."""
    bright = is_bright_background(img)
    return ("od" if img.ndim == 3 else "inverted") if bright else "intensity"


def registration_channel(img: np.ndarray, kind: str = "auto") -> np.ndarray:
    """One float32 channel in which tissue is bright and the slide dark (not normalised)."""
    if kind not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}")
    f = img.astype(np.float32, copy=False)
    if kind == "auto":
        kind = auto_channel(img)
    if kind == "od":
        bg = np.maximum(np.asarray(background_value(img), np.float32), 1.0)
        od = -np.log(np.clip((f + 1.0) / (bg + 1.0), 1e-3, 1.0))
        return od.sum(axis=-1) if od.ndim == 3 else od
    g = f.mean(axis=-1) if f.ndim == 3 else f
    if kind == "inverted":
        return float(np.max(g)) - g if g.size else g
    return g


def normalise(chan: np.ndarray) -> np.ndarray:
    """Robustly scale to [0, 1] (1st and 99.5th percentiles); constant images give zeros."""
    lo, hi = np.percentile(chan, [1.0, 99.5])
    if not np.isfinite(hi - lo) or hi - lo < 1e-12:
        return np.zeros_like(chan, dtype=np.float32)
    return np.clip((chan - lo) / (hi - lo), 0, 1).astype(np.float32)


def downsize(img: np.ndarray, scale: float) -> np.ndarray:
    """Area-downsample by ``scale`` (<= 1)."""
    if scale >= 1:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def registration_scale(shape: tuple[int, ...], reg_size: int) -> float:
    """Scale that brings the larger side of ``shape`` to at most ``reg_size`` pixels."""
    return min(1.0, reg_size / max(shape[0], shape[1]))


def prepare(img: np.ndarray, scale: float, kind: str = "auto") -> np.ndarray:
    """The registration image of one section: channel, downsized, normalised to [0, 1]."""
    chan = registration_channel(img, kind)
    return normalise(downsize(chan, scale))


def tissue_fraction(reg: np.ndarray) -> float:
    """Fraction of pixels clearly above the slide (for blank-section detection)."""
    if reg.size == 0 or reg.max() <= 0:
        return 0.0
    smooth = cv2.GaussianBlur(reg, (0, 0), 2)
    return float((smooth > 0.15).mean())

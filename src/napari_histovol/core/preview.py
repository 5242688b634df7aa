"""Small PNG overviews of a volume (a contact sheet of its planes), written without a GUI."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .io.volume import Volume


def to_uint8(img: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Rescale to 8 bit (robust 0.5-99.5 percentile range unless given)."""
    if img.dtype == np.uint8:
        return img
    f = img.astype(np.float32)
    if lo is None or hi is None:
        lo, hi = (float(v) for v in np.percentile(f, [0.5, 99.5]))
    if hi <= lo:
        hi = lo + 1
    return np.clip((f - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def contact_sheet(volume: Volume, *, max_side: int = 320, columns: int | None = None) -> np.ndarray:
    """All planes side by side (from the coarsest level that is still >= ``max_side``)."""
    level = volume.levels[0]
    for lv in volume.levels:
        if max(lv.shape[1:3]) >= max_side:
            level = lv
    n = level.shape[0]
    cols = columns or min(n, 4)
    rows = math.ceil(n / cols)
    planes = []
    for i in range(n):
        p = np.asarray(level[i].compute())
        step = max(1, math.ceil(max(p.shape[:2]) / max_side))
        planes.append(p[::step, ::step])
    h = max(p.shape[0] for p in planes)
    w = max(p.shape[1] for p in planes)
    pad = 6
    channels = (3,) if planes[0].ndim == 3 else ()
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad) + channels, 255, np.uint8)
    stack = np.stack(
        [
            np.pad(p, [(0, h - p.shape[0]), (0, w - p.shape[1])] + [(0, 0)] * (p.ndim - 2))
            for p in planes
        ]
    )
    stack8 = to_uint8(stack)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = stack8[i]
    return sheet


def write_overview_png(volume: Volume, out: str | os.PathLike) -> Path:
    """Write :func:`contact_sheet` as a PNG."""
    import imagecodecs

    out = Path(out)
    out.write_bytes(imagecodecs.png_encode(contact_sheet(volume)))
    return out

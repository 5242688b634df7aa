"""Registration images: one stain-robust channel per section (:mod:`..image`), downsized,
normalised, tissue bright.

Brightfield RGB sections are registered on optical density (the sum over channels of
-log(I / I_background)), which shows tissue of any stain as bright on a dark slide, so an H&E
section registers against a CD31 or Ki67 neighbour. Gray brightfield sections are inverted;
fluorescence and EM (dark background) are used as they are.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..image import (
    CHANNELS,
    OPAQUE_OD,
    auto_channel,
    content_fraction,
    normalise,
    registration_channel,
)


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
    kind = auto_channel(img) if kind == "auto" else kind
    chan = registration_channel(img, kind)
    return normalise(downsize(chan, scale), ceiling=OPAQUE_OD if kind == "od" else None)


def tissue_fraction(reg: np.ndarray) -> float:
    """Fraction of a registration image that is tissue (for blank-section detection)."""
    return content_fraction(reg)


__all__ = [
    "CHANNELS",
    "auto_channel",
    "downsize",
    "prepare",
    "registration_channel",
    "registration_scale",
    "tissue_fraction",
]

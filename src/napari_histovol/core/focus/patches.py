"""The learned metric's unit of work: 64 x 64 gray patches, normalised per patch, and the
tissue patches of an image on a regular grid (numpy only)."""

from __future__ import annotations

import numpy as np

from .metrics import focus_channel

#: Side of the regressor's input patch, pixels.
PATCH = 64
#: Margin kept around a sharp patch while it is blurred (so the blur sees real neighbours);
#: a training crop is ``PATCH + 2 * MARGIN`` pixels.
MARGIN = 8
CROP = PATCH + 2 * MARGIN


def normalise_patches(p: np.ndarray) -> np.ndarray:
    """Per patch: subtract the mean, divide by the standard deviation (contrast-invariant)."""
    m = p.mean(axis=(-2, -1), keepdims=True)
    s = p.std(axis=(-2, -1), keepdims=True)
    return ((p - m) / np.maximum(s, 1e-3)).astype(np.float32)


def image_patches(
    img: np.ndarray, *, stride: int = PATCH, min_std: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue patches of an image and their top-left corners.

    Parameters
    ----------
    img
        Gray or RGB image of any dtype (converted with :func:`.metrics.focus_channel`); images
        smaller than a patch are padded by reflection.
    stride
        Grid step in pixels.
    min_std
        Patches whose standard deviation is at most this are empty slide and left out (unless
        all are).

    Returns
    -------
    patches, corners
        ``(N, 64, 64)`` float32 patches and ``(N, 2)`` corners ``(y, x)``.
    """
    g = focus_channel(img)
    h, w = g.shape
    if h < PATCH or w < PATCH:
        g = np.pad(g, ((0, max(0, PATCH - h)), (0, max(0, PATCH - w))), mode="reflect")
        h, w = g.shape
    ys = range(0, h - PATCH + 1, stride)
    xs = range(0, w - PATCH + 1, stride)
    corners = np.array([(y, x) for y in ys for x in xs])
    patches = np.stack([g[y : y + PATCH, x : x + PATCH] for y, x in corners])
    keep = patches.std(axis=(1, 2)) > min_std
    if not keep.any():
        keep[:] = True
    return patches[keep], corners[keep]


__all__ = ["CROP", "MARGIN", "PATCH", "image_patches", "normalise_patches"]

"""Classical sharpness metrics: what each one computes, on one section, over its tissue.

Every metric works on one float channel scaled to [0, 1] by the data type's range (luminance for
RGB, so 8- and 16-bit images score alike), over the tissue only (:func:`core.image.tissue_mask`),
and computes a per-pixel response once so that tile maps are a cheap block reduction. Blank or
constant images score 0, never NaN. The metrics are listed, with the learned one, in
:mod:`.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..image import tissue_mask
from .maps import (
    MIN_TILE,
    PlaneFocus,
    finish_map,
    reduce_tiles,
    tile_grid,
    tissue_per_tile,
)


def focus_channel(img: np.ndarray) -> np.ndarray:
    """One float32 channel in [0, 1]: luminance for RGB, scaled by the dtype's range (floats by
    their own largest magnitude).

    Parameters
    ----------
    img
        A 2D gray or ``(H, W, 3)`` RGB image of any dtype.
    """
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] == 3 and a.dtype in (np.uint8, np.uint16):
        g = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)  # same weights, SIMD
        return g.astype(np.float32) * np.float32(1.0 / np.iinfo(a.dtype).max)
    f = a.astype(np.float32)
    if f.ndim == 3:
        f = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    if a.dtype.kind in "ui":
        f *= np.float32(1.0 / float(np.iinfo(a.dtype).max))
    else:
        top = float(np.nanmax(np.abs(f))) if f.size else 0.0
        f = np.nan_to_num(f / top if top > 0 else f)
    return f


def laplacian_response(chan: np.ndarray) -> np.ndarray:
    """3 x 3 Laplacian (its variance over the tissue is the score)."""
    return cv2.Laplacian(chan, cv2.CV_32F, ksize=3)


def tenengrad_response(chan: np.ndarray) -> np.ndarray:
    """Squared Sobel gradient magnitude (its mean is the score)."""
    gx = cv2.Sobel(chan, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(chan, cv2.CV_32F, 0, 1, ksize=3)
    return gx * gx + gy * gy


def brenner_response(chan: np.ndarray) -> np.ndarray:
    """Squared differences two pixels apart, along x plus along y (its mean is the score)."""
    d = np.zeros_like(chan)
    d[:, :-2] = (chan[:, 2:] - chan[:, :-2]) ** 2
    d[:-2, :] += (chan[2:, :] - chan[:-2, :]) ** 2
    return d


def intensity_response(chan: np.ndarray) -> np.ndarray:
    """The channel itself (its variance over its mean is the normalised-variance score)."""
    return chan


def spectral_ratio(
    chan: np.ndarray, mask: np.ndarray | None = None, *, cutoff: float = 0.15
) -> float:
    """Share of the spectral energy (DC excluded) above ``cutoff`` of the Nyquist frequency,
    on the masked, mean-subtracted, Hann-windowed image (0 below 8 x 8 pixels)."""
    h, w = chan.shape
    if h < 8 or w < 8:
        return 0.0
    g = chan - (chan[mask].mean() if mask is not None and mask.any() else chan.mean())
    if mask is not None:
        g = g * mask
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    p = np.abs(np.fft.rfft2(g * win)) ** 2
    fy = np.abs(np.fft.fftfreq(h))[:, None] * 2
    fx = np.fft.rfftfreq(w)[None, :] * 2
    r = np.sqrt(fy**2 + fx**2)
    p[0, 0] = 0
    total = float(p.sum())
    return float(p[r > cutoff].sum() / total) if total > 0 else 0.0


def masked_reduce(resp: np.ndarray, how: str, mask: np.ndarray | None) -> float:
    """Mean, variance (``var``) or variance over mean (``nvar``) of a response over a mask."""
    m8 = None if mask is None or mask.all() else mask.astype(np.uint8)
    if m8 is not None and not m8.any():
        return 0.0
    mean, std = cv2.meanStdDev(resp, mask=m8)  # one pass, no copy of the masked pixels
    mean, var = float(mean[0, 0]), float(std[0, 0]) ** 2
    if how == "mean":
        return mean
    if how == "var":
        return var
    return var / mean if mean > 1e-12 else 0.0


def _prepare(img: np.ndarray, *, tile: int | None, use_mask: bool):
    """The focus channel, whether it is blank, and its tissue mask (None when unused); None
    for a blank image scored without tiles."""
    chan = focus_channel(img)
    blank = _is_blank(chan)
    if blank and not tile:
        return None
    return chan, blank, tissue_mask(chan) if use_mask or tile else None


def _is_blank(chan: np.ndarray) -> bool:
    return chan.size == 0 or float(chan.max() - chan.min()) < 1e-6


@dataclass(frozen=True)
class ResponseMetric:
    """A metric that reduces a per-pixel response (mean, variance or variance / mean).

    Parameters
    ----------
    response
        Per-pixel response of the focus channel.
    reduction
        ``"mean"``, ``"var"`` or ``"nvar"``.
    description
        One line for help texts.
    """

    response: Callable[[np.ndarray], np.ndarray]
    reduction: str
    description: str
    learned: bool = False
    min_tile: int = MIN_TILE

    def measure(
        self,
        img: np.ndarray,
        *,
        tile: int | None = None,
        min_tissue: float = 0.1,
        threshold: float = 3.5,
        use_mask: bool = True,
    ) -> PlaneFocus:
        """Score one image (and its tiles when ``tile`` is given); see :func:`.registry.score`."""
        prepared = _prepare(img, tile=tile, use_mask=use_mask)
        if prepared is None:
            return PlaneFocus(0.0)  # nothing is in or out of focus
        chan, blank, mask = prepared
        resp = self.response(chan)
        value = 0.0 if blank else masked_reduce(resp, self.reduction, mask if use_mask else None)
        fmap = None
        if tile:
            tissue, _ = tissue_per_tile(mask, tile)
            scores = reduce_tiles(resp, self.reduction, mask, tile)
            fmap = finish_map(scores, tissue, tile, min_tissue=min_tissue, threshold=threshold)
        return PlaneFocus(value, fmap)


@dataclass(frozen=True)
class SpectralMetric:
    """High-frequency share of the power spectrum, computed per tile (no per-pixel response).

    Parameters
    ----------
    cutoff
        Fraction of the Nyquist frequency above which energy counts as sharp.
    description
        One line for help texts.
    """

    cutoff: float
    description: str
    learned: bool = False
    min_tile: int = MIN_TILE

    def measure(
        self,
        img: np.ndarray,
        *,
        tile: int | None = None,
        min_tissue: float = 0.1,
        threshold: float = 3.5,
        use_mask: bool = True,
    ) -> PlaneFocus:
        """Score one image (and its tiles when ``tile`` is given); see :func:`.registry.score`."""
        prepared = _prepare(img, tile=tile, use_mask=use_mask)
        if prepared is None:
            return PlaneFocus(0.0)  # nothing is in or out of focus
        chan, blank, mask = prepared
        value = (
            0.0 if blank else spectral_ratio(chan, mask if use_mask else None, cutoff=self.cutoff)
        )
        fmap = None
        if tile:
            tissue, _ = tissue_per_tile(mask, tile)
            ny, nx = tile_grid(chan.shape, tile)
            scores = np.zeros((ny, nx), np.float64)
            for j in range(ny):
                for i in range(nx):
                    if tissue[j, i] >= min_tissue:
                        sl = (slice(j * tile, (j + 1) * tile), slice(i * tile, (i + 1) * tile))
                        scores[j, i] = spectral_ratio(chan[sl], mask[sl], cutoff=self.cutoff)
            fmap = finish_map(scores, tissue, tile, min_tissue=min_tissue, threshold=threshold)
        return PlaneFocus(value, fmap)


__all__ = [
    "ResponseMetric",
    "SpectralMetric",
    "brenner_response",
    "focus_channel",
    "intensity_response",
    "laplacian_response",
    "masked_reduce",
    "spectral_ratio",
    "tenengrad_response",
]

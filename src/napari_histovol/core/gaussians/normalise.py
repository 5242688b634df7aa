"""How a volume's values map to the fit's working range, and where its signal is (numpy).

Values are fitted normalised: ``(volume - background) / value_range``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class Normalisation:
    """How a volume's values map to the fit's working range."""

    background: float
    value_range: float
    noise: float  # noise standard deviation, normalised units

    def forward(self, block: np.ndarray) -> np.ndarray:
        """Normalised float32 values of a block (float64 inputs are shifted in float64, so
        values beyond float32's range still normalise)."""
        block = np.asarray(block)
        work = np.float64 if block.dtype == np.float64 else np.float32
        return ((block.astype(work) - self.background) / self.value_range).astype(np.float32)


def estimate_normalisation(volume: np.ndarray) -> Normalisation:
    """Background level, value range and noise of a volume (a sample for big ones).

    The background is the 2nd percentile of the lightly smoothed volume (the level of empty
    space in fluorescence and inverted brightfield alike); the noise is the median absolute
    difference of x-neighbours (robust to edges).
    """
    v = np.asarray(volume)
    vmin, vmax = float(np.min(v)), float(np.max(v))
    rng = vmax - vmin if vmax > vmin else 1.0
    work = np.float64 if v.dtype == np.float64 else np.float32
    sample = v[:: max(1, v.shape[0] // 32)].astype(work)
    smooth = ndi.gaussian_filter(sample, 1.0)
    background = float(np.percentile(smooth, 2.0))
    # neighbour differences along the last axis that has neighbours (none: a single voxel)
    axis = next((ax for ax in (2, 1, 0) if sample.shape[ax] > 1), None)
    noise = 0.0
    if axis is not None:
        diff = np.abs(np.diff(sample, axis=axis))
        noise = float(1.4826 * np.median(diff) / math.sqrt(2)) / rng
    return Normalisation(background, rng, noise)


def occupancy(x: np.ndarray, norm: Normalisation, threshold: float) -> np.ndarray:
    """Voxels that hold signal: the smoothed block above ``threshold`` x its smoothed noise."""
    smooth = ndi.gaussian_filter(x, 1.0)
    # A unit Gaussian filter divides white noise's standard deviation by (4 pi)^(3/4) ~ 6.7.
    level = threshold * norm.noise / (4 * math.pi) ** 0.75
    occ = smooth > max(level, 1e-6)
    return ndi.binary_dilation(occ, iterations=2)

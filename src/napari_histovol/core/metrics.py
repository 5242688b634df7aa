"""Image-quality and compression figures: PSNR, 3D SSIM, compression ratio, bits per voxel.

PSNR and SSIM use the data range of the original (``max - min``), as compression papers do
when they compare codecs on one volume; PSNR can be restricted to a foreground mask.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


def data_range(original: np.ndarray) -> float:
    """``max - min`` of the original (1 for a constant volume)."""
    a = np.asarray(original)
    r = float(a.max()) - float(a.min())
    return r if r > 0 else 1.0


def psnr(
    original: np.ndarray,
    decoded: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    peak: float | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB, over ``mask`` when given (inf when identical);
    ``peak`` is the data range (default: the original's max - min)."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(decoded, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    err = (a - b) ** 2
    mse = float(err[mask].mean() if mask is not None else err.mean())
    if mse == 0:
        return math.inf
    return 10 * math.log10((data_range(a) if peak is None else peak) ** 2 / mse)


def ssim(original: np.ndarray, decoded: np.ndarray, sigma: float = 1.5) -> float:
    """Mean structural similarity with a Gaussian window, in 3D (or 2D) as the data are."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(decoded, dtype=np.float64)
    r = data_range(a)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2

    def blur(v):
        return ndi.gaussian_filter(v, sigma, truncate=3.5)

    ma, mb = blur(a), blur(b)
    va = blur(a * a) - ma * ma
    vb = blur(b * b) - mb * mb
    cov = blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def foreground(original: np.ndarray) -> np.ndarray:
    """Voxels above the Otsu threshold of the lightly smoothed volume (the objects)."""
    from skimage.filters import threshold_otsu

    smooth = ndi.gaussian_filter(np.asarray(original, dtype=np.float32), 1.0)
    return smooth > threshold_otsu(smooth)


def compression_ratio(raw_bytes: int, file_bytes: int) -> float:
    """Raw bytes of the volume divided by the bytes of its compressed file."""
    return raw_bytes / file_bytes


def bits_per_voxel(file_bytes: int, n_voxels: int) -> float:
    """Bits of the compressed file per voxel of the volume."""
    return 8.0 * file_bytes / n_voxels

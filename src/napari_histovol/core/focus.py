"""Autofocus scoring: sharpness metrics on tissue, focus maps per tile, out-of-focus flags,
best-plane selection with a sub-step estimate.

Every metric works on one float channel scaled to [0, 1] by the data type's range (luminance for
RGB, so 8- and 16-bit images score alike), over the tissue only (a mask found by Otsu's
threshold on a smoothed optical-density or intensity channel), and computes a per-pixel response
once so that tile maps are a cheap block reduction. Blank or constant images score 0, never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .errors import InputError
from .image import tissue_mask

METRICS = ("laplacian", "tenengrad", "brenner", "normalized_variance", "spectral")
DEFAULT_METRIC = "laplacian"


def focus_channel(img: np.ndarray) -> np.ndarray:
    """float32 luminance in [0, 1] (by the dtype's range; floats by their own max)."""
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


def response(chan: np.ndarray, metric: str) -> tuple[np.ndarray, str]:
    """Per-pixel response map and how it reduces: ``mean`` or ``var`` (variance) or ``nvar``."""
    if metric == "laplacian":
        return cv2.Laplacian(chan, cv2.CV_32F, ksize=3), "var"
    if metric == "tenengrad":
        gx = cv2.Sobel(chan, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(chan, cv2.CV_32F, 0, 1, ksize=3)
        return gx * gx + gy * gy, "mean"
    if metric == "brenner":
        d = np.zeros_like(chan)
        d[:, :-2] = (chan[:, 2:] - chan[:, :-2]) ** 2
        d[:-2, :] += (chan[2:, :] - chan[:-2, :]) ** 2
        return d, "mean"
    if metric == "normalized_variance":
        return chan, "nvar"
    raise InputError(f"Unknown focus metric '{metric}'; use one of {', '.join(METRICS)}.")


def spectral_ratio(
    chan: np.ndarray, mask: np.ndarray | None = None, *, cutoff: float = 0.15
) -> float:
    """Share of the spectral energy (DC excluded) above ``cutoff`` of the Nyquist frequency,
    on the masked, mean-subtracted, Hann-windowed image."""
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


def _reduce(resp: np.ndarray, how: str, mask: np.ndarray | None) -> float:
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


def score(img: np.ndarray, metric: str = DEFAULT_METRIC, *, use_mask: bool = True) -> float:
    """Sharpness of one image (higher is sharper), over its tissue."""
    chan = focus_channel(img)
    if chan.size == 0 or float(chan.max() - chan.min()) < 1e-6:
        if metric not in METRICS:
            raise InputError(f"Unknown focus metric '{metric}'; use one of {', '.join(METRICS)}.")
        return 0.0  # blank or constant: nothing is in or out of focus
    mask = tissue_mask(chan) if use_mask else None
    if metric == "spectral":
        return spectral_ratio(chan, mask)
    resp, how = response(chan, metric)
    return _reduce(resp, how, mask)


@dataclass(frozen=True)
class FocusMap:
    """Scores per tile (ny, nx), the tissue fraction per tile, and the tile size in pixels."""

    scores: np.ndarray
    tissue: np.ndarray
    tile: int
    flags: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))


def focus_map(
    img: np.ndarray,
    *,
    tile: int = 256,
    metric: str = DEFAULT_METRIC,
    min_tissue: float = 0.1,
    threshold: float = 3.5,
) -> FocusMap:
    """Score every ``tile`` x ``tile`` tile; tiles with less than ``min_tissue`` tissue score 0.
    Tiles are flagged out of focus when their robust z-score (median / MAD over tissue tiles)
    is below ``-threshold``."""
    if tile < 8:
        raise InputError(f"The tile size must be at least 8 pixels, not {tile}.")
    chan = focus_channel(img)
    mask = tissue_mask(chan)
    h, w = chan.shape
    ny, nx = max(1, math.ceil(h / tile)), max(1, math.ceil(w / tile))
    ph, pw = ny * tile - h, nx * tile - w
    pad = lambda a, v: np.pad(a, ((0, ph), (0, pw)), constant_values=v)  # noqa: E731
    mpad = pad(mask.astype(np.float32), 0).reshape(ny, tile, nx, tile)
    tissue = mpad.mean(axis=(1, 3))
    count = mpad.sum(axis=(1, 3))
    scores = np.zeros((ny, nx), np.float64)
    if metric == "spectral":
        for j in range(ny):
            for i in range(nx):
                if tissue[j, i] >= min_tissue:
                    sl = (
                        slice(j * tile, min(h, (j + 1) * tile)),
                        slice(i * tile, min(w, (i + 1) * tile)),
                    )
                    scores[j, i] = spectral_ratio(chan[sl], mask[sl])
    else:
        resp, how = response(chan, metric)
        r = pad(resp, 0).reshape(ny, tile, nx, tile).astype(np.float64)
        m = mpad
        with np.errstate(invalid="ignore", divide="ignore"):
            s1 = (r * m).sum(axis=(1, 3)) / np.maximum(count, 1)
            if how == "mean":
                scores = s1
            else:
                s2 = (r * r * m).sum(axis=(1, 3)) / np.maximum(count, 1)
                var = np.maximum(s2 - s1 * s1, 0)
                scores = (
                    var if how == "var" else np.where(s1 > 1e-12, var / np.maximum(s1, 1e-12), 0)
                )
        scores = np.where(tissue >= min_tissue, scores, 0.0)
    flags = robust_flags(scores, valid=tissue >= min_tissue, threshold=threshold)
    return FocusMap(np.nan_to_num(scores), tissue, tile, flags)


def robust_z(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(v - median) / (1.4826 MAD) over the valid values (log scale: sharpness is multiplicative)."""
    v = np.log(np.maximum(np.asarray(values, float), 1e-12))
    ok = np.ones(v.shape, bool) if valid is None else np.asarray(valid, bool)
    if ok.sum() < 3:
        return np.zeros(v.shape)
    med = np.median(v[ok])
    mad = max(1.4826 * float(np.median(np.abs(v[ok] - med))), 0.05)
    return np.where(ok, (v - med) / mad, 0.0)


def robust_flags(
    values: np.ndarray, *, valid: np.ndarray | None = None, threshold: float = 3.5
) -> np.ndarray:
    """True where a value is an outlier on the blurry side (robust z-score below -threshold)."""
    return robust_z(values, valid) < -threshold


def best_plane(scores: list[float] | np.ndarray) -> tuple[int, float]:
    """Index of the sharpest plane and a sub-step estimate: a parabola through the log-scores
    of the peak and its neighbours (a Gaussian focus curve), clamped to +-0.5 step."""
    s = np.asarray(scores, float)
    if s.size == 0:
        raise InputError("No planes to choose from.")
    k = int(np.argmax(s))
    if k == 0 or k == s.size - 1:
        return k, float(k)
    y0, y1, y2 = np.log(np.maximum(s[k - 1 : k + 2], 1e-12))
    den = y0 - 2 * y1 + y2
    off = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    return k, float(k + np.clip(off, -0.5, 0.5))


def iter_focus_stack(
    volume, *, metric: str = DEFAULT_METRIC, tile: int | None = None, threshold: float = 3.5
):
    """Score every plane of a volume (and its tiles when ``tile`` is given); flag planes and
    tiles that are blurry relative to the stack; pick the best plane. Yields Progress."""
    from .progress import Progress

    if metric not in METRICS + ("model",):
        raise InputError(
            f"Unknown focus metric '{metric}'; use one of {', '.join(METRICS)} or model."
        )
    meta = volume.meta.with_planes(volume.shape[0])
    n = volume.shape[0]
    scores, maps, distances = [], [], []
    for i in range(n):
        img = np.asarray(volume.data[i].compute())
        if metric == "model":
            d, fm = model_scores(img, tile=tile, threshold=threshold)
            distances.append(d)
            scores.append(1.0 / (1.0 + d))  # sharper = higher, as for the classical metrics
            if tile:
                maps.append(fm)
        else:
            scores.append(score(img, metric))
            if tile:
                maps.append(focus_map(img, tile=tile, metric=metric, threshold=threshold))
        yield Progress(i + 1, n, f"z {meta.z_numbers[i]}", stage="focus")
    z = robust_z(np.array(scores))
    flags = z < -threshold
    k, sub = best_plane(scores)
    zs = list(meta.z_numbers)
    lo = int(math.floor(sub))
    frac = sub - lo
    sub_z = zs[lo] + frac * (zs[min(lo + 1, n - 1)] - zs[lo]) if n > 1 else float(zs[0])
    planes = []
    for i in range(n):
        entry = {
            "z": zs[i],
            "file": meta.files[i],
            "score": scores[i],
            "robust_z": float(z[i]),
            "out_of_focus": bool(flags[i]),
        }
        if distances:
            entry["defocus_um"] = distances[i]
        if tile:
            m = maps[i]
            entry["tiles"] = {
                "shape": list(m.scores.shape),
                "tile_px": tile,
                "flagged": int(m.flags.sum()),
                "scores": m.scores.round(8).tolist(),
                "tissue": m.tissue.round(3).tolist(),
                "out_of_focus": m.flags.tolist(),
            }
        planes.append(entry)
    return {
        "metric": metric,
        "threshold": threshold,
        "planes": planes,
        "flagged_z": [zs[i] for i in range(n) if flags[i]],
        "best_plane": zs[k],
        "best_plane_index": k,
        "best_plane_subframe": float(sub_z),
        "worst_plane": zs[int(np.argmin(scores))],
    }


def model_scores(
    img: np.ndarray, *, tile: int | None = None, threshold: float = 3.5, model_path=None
) -> tuple[float, FocusMap | None]:
    """Defocus distance (µm) of an image from the learned regressor (median over its tissue
    patches) and, with ``tile``, a focus map of per-tile median distances (score = 1/(1+d))."""
    from .focus_model import PATCH, image_patches, predict_focus_distance

    patches, corners = image_patches(img)
    d = predict_focus_distance(patches, model_path=model_path)
    if not tile:
        return float(np.median(d)), None
    h, w = img.shape[:2]
    ny, nx = max(1, math.ceil(h / tile)), max(1, math.ceil(w / tile))
    dist = np.zeros((ny, nx))
    cover = np.zeros((ny, nx))
    cells: dict = {}
    for (y, x), v in zip(corners, d, strict=True):
        cells.setdefault(((y + PATCH // 2) // tile, (x + PATCH // 2) // tile), []).append(v)
    for (j, i), vals in cells.items():
        if j < ny and i < nx:
            dist[j, i] = float(np.median(vals))
            cover[j, i] = 1.0
    sc = np.where(cover > 0, 1.0 / (1.0 + dist), 0.0)
    flags = robust_flags(sc, valid=cover > 0, threshold=threshold)
    return float(np.median(d)), FocusMap(sc, cover, tile, flags)

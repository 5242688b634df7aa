"""Alignment QC that judges alignment, not stain.

The NCC of two aligned sections says as much about their stains as about their alignment: an
H&E section next to a CD31 section scores lower than two CD31 sections, however well it is
aligned. The measures here do not depend on the level of the similarity, only on *where* it
peaks:

- **residual** (``residual_px``): the aligned pair is registered once more, rigidly, starting
  from the identity (ECC, coarse to fine); how far that moves the second section (mean over a
  grid of points on the tissue, in full-resolution pixels) is how far the pair is from its own
  best match. A well-aligned pair of different stains stays put (its peak is lower, not
  elsewhere); a shifted or turned section moves by its error.
- **feature inliers** (``feature_inliers``, ``feature_inlier_ratio``, ``feature_residual_px``):
  SIFT key points matched between the two aligned images (ratio test), a similarity fitted to
  them by RANSAC; the inliers count as evidence, and where there are enough of them, the
  displacement of the fitted similarity is an independent estimate of the misalignment.
- **peak contrast** (``peak_contrast``): the NCC at the alignment minus the mean NCC with the
  second section shifted by 4% of the size in eight directions, over the tissue both share. Structure that matches gives a
  peak whatever the stains; sections that share nothing but their outline (unrelated, badly
  damaged) do not.

A pair is flagged ``misaligned`` when its residual (or its feature estimate, when that is well
supported) exceeds :data:`MISALIGNED_REG_PX` registration pixels and three times the stack's
lower-quartile residual; ``low_similarity`` when its structure shows no peak (peak contrast below
:data:`LOW_PEAK_CONTRAST`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..image import tissue_mask
from .estimate import ecc_refine, ncc, warp_image

#: A residual above this many registration pixels (and 3x the stack's median) is misaligned.
MISALIGNED_REG_PX = 2.0
#: A peak contrast below this: the pair's structure does not match at the alignment.
LOW_PEAK_CONTRAST = 0.02
#: Matched feature inliers needed before their displacement counts as evidence.
MIN_FEATURE_INLIERS = 10
QC_SIZE = 256  # the residual registration runs on copies at most this size


def _grid(shape: tuple[int, int], mask: np.ndarray | None = None) -> np.ndarray:
    """(3, N) homogeneous points on a 5x5 grid over the inner 80%, on tissue where possible."""
    h, w = shape
    ys, xs = np.meshgrid(np.linspace(0.1 * h, 0.9 * h, 5), np.linspace(0.1 * w, 0.9 * w, 5))
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    if mask is not None and mask.any():
        on = mask[np.clip(pts[1].astype(int), 0, h - 1), np.clip(pts[0].astype(int), 0, w - 1)]
        if on.sum() >= 4:
            pts = pts[:, on]
    return pts


def _displacement(m: np.ndarray, pts: np.ndarray) -> float:
    return float(np.linalg.norm((m @ pts - pts)[:2], axis=0).mean())


def _textured(img: np.ndarray, k: int = 5) -> np.ndarray:
    """Pixels whose k x k neighbourhood varies at all (measured data, not a flat fill), less
    a rim of k pixels along a fill (the step from data to fill is no structure either)."""
    f = img.astype(np.float32)
    mean = cv2.blur(f, (k, k))
    var = cv2.blur(f * f, (k, k)) - mean * mean
    flat = (var <= 1e-6).astype(np.uint8)
    return cv2.dilate(flat, np.ones((2 * k + 1, 2 * k + 1), np.uint8)) == 0


def residual_px(a: np.ndarray, b: np.ndarray, *, size: int = QC_SIZE) -> tuple[float, bool]:
    """How far a rigid registration of ``b`` onto ``a`` from the identity moves ``b``.

    Parameters
    ----------
    a, b
        Two aligned registration images (float32 in [0, 1], same shape).
    size
        Registration runs on copies at most this many pixels a side.

    Returns
    -------
    (float, bool)
        Mean displacement over tissue grid points, in pixels of ``a``; whether ECC converged.
    """
    s = min(1.0, size / max(a.shape))
    if s < 1:
        dsize = (max(8, round(a.shape[1] * s)), max(8, round(a.shape[0] * s)))
        a_s = cv2.resize(a, dsize, interpolation=cv2.INTER_AREA)
        b_s = cv2.resize(b, dsize, interpolation=cv2.INTER_AREA)
    else:
        a_s, b_s = a, b
    # only where both hold data: a flat fill (the warp's, or a microscope's border) has a
    # straight edge ECC would chase across the section
    data = _textured(a_s) & _textured(b_s)
    m, ok = ecc_refine(a_s, b_s, np.eye(3), cv2.MOTION_EUCLIDEAN, levels=3, mask=data)
    if not ok or not np.isfinite(m).all():
        return float("nan"), False
    mask = (a_s > 0.1) | (b_s > 0.1)
    return _displacement(m, _grid(a_s.shape, mask)) / s, True


def feature_evidence(a: np.ndarray, b: np.ndarray) -> dict[str, float | int | None]:
    """SIFT matches between two aligned images, a similarity fitted by RANSAC.

    Returns
    -------
    dict
        ``feature_inliers`` (count), ``feature_inlier_ratio`` (inliers / ratio-test matches)
        and ``feature_residual_px`` (mean displacement of the fitted similarity over the
        inliers, pixels of ``a``; None with fewer than :data:`MIN_FEATURE_INLIERS` inliers).
    """
    out: dict[str, float | int | None] = {
        "feature_inliers": 0,
        "feature_inlier_ratio": 0.0,
        "feature_residual_px": None,
    }
    sift = cv2.SIFT_create(nfeatures=1500)
    u8 = lambda x: np.clip(x * 255, 0, 255).astype(np.uint8)  # noqa: E731
    ka, da = sift.detectAndCompute(u8(a), None)
    kb, db = sift.detectAndCompute(u8(b), None)
    if da is None or db is None or len(ka) < 2 or len(kb) < 2:
        return out
    matches = cv2.BFMatcher().knnMatch(da, db, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < 3:
        return out
    pa = np.float32([ka[m.queryIdx].pt for m in good])
    pb = np.float32([kb[m.trainIdx].pt for m in good])
    sim, inl = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if sim is None or inl is None:
        return out
    inl = inl.ravel().astype(bool)
    n = int(inl.sum())
    out["feature_inliers"] = n
    out["feature_inlier_ratio"] = float(n / len(good))
    if n >= MIN_FEATURE_INLIERS:
        m = np.vstack([sim, [0, 0, 1.0]])
        pts = np.c_[pa[inl], np.ones(n)].T
        out["feature_residual_px"] = _displacement(m, pts)
    return out


def peak_contrast(a: np.ndarray, b: np.ndarray, *, radius_frac: float = 0.04) -> float:
    """NCC at the alignment minus the mean NCC with ``b`` shifted by ``radius_frac`` of the
    size in eight directions (how distinct the match is, whatever the stains), over the tissue
    the two sections share: tissue that only one of them has (a torn or smeared edge, a
    different extent) says nothing about their alignment."""
    r = radius_frac * max(a.shape)
    both = tissue_mask(a) & tissue_mask(b)
    at = ncc(a, b, both)
    ring = []
    for ang in np.arange(8) * np.pi / 4:
        t = np.array([[1, 0, r * np.cos(ang)], [0, 1, r * np.sin(ang)], [0, 0, 1.0]])
        inside = warp_image(np.ones_like(b), t, b.shape) > 0.5
        ring.append(ncc(a, warp_image(b, t, b.shape), both & inside))
    return float(at - np.mean(ring))


def assess_pair(a: np.ndarray, b: np.ndarray, *, scale: float = 1.0) -> dict:
    """Alignment measures of one aligned pair of registration images.

    Parameters
    ----------
    a, b
        The two sections, aligned, as registration images (float32 in [0, 1], same shape).
    scale
        Registration scale of the images (their pixels per full-resolution pixel): pixel
        figures are returned in full-resolution pixels.

    Returns
    -------
    dict
        ``residual_px``, ``residual_reg_px`` (the same at the registration scale),
        ``peak_contrast``, ``feature_inliers``, ``feature_inlier_ratio``,
        ``feature_residual_px`` (see the module's description).
    """
    res, ok = residual_px(a, b)
    feats = feature_evidence(a, b)
    f_res = feats["feature_residual_px"]
    return {
        "residual_px": None if not ok else res / scale,
        "residual_reg_px": None if not ok else res,
        "peak_contrast": peak_contrast(a, b),
        **feats,
        "feature_residual_px": None if f_res is None else float(f_res) / scale,
    }


def flag_pairs(measures: list[dict | None], *, scale: float = 1.0) -> list[list[str]]:
    """QC flags of each pair from :func:`assess_pair`'s measures (None: not assessed);
    ``scale`` is the registration scale the measures were taken at.

    ``misaligned``: the residual, or a well-supported feature estimate (at least
    :data:`MIN_FEATURE_INLIERS` inliers, ratio >= 0.3), exceeds :data:`MISALIGNED_REG_PX`
    registration pixels and three times the lower-quartile residual of the stack's pairs (so a stack
    whose pairs all wobble a little under a global compromise is not flagged throughout);
    ``low_similarity``: no peak of the structure at the alignment (and not misaligned).
    """
    res = [m["residual_reg_px"] for m in measures if m and m["residual_reg_px"] is not None]
    # the lower quartile: one misaligned section spoils two pairs, half of a short stack's
    typical = float(np.percentile(res, 25)) if res else 0.0
    limit = max(MISALIGNED_REG_PX, 3.0 * typical)
    out: list[list[str]] = []
    for m in measures:
        flags: list[str] = []
        if m is not None:
            r = m["residual_reg_px"]
            f = m["feature_residual_px"]
            f_reg = None if f is None else f * scale
            trusted = (
                f_reg is not None
                and m["feature_inliers"] >= MIN_FEATURE_INLIERS
                and m["feature_inlier_ratio"] >= 0.3
            )
            if (r is not None and r > limit) or (trusted and f_reg > limit):
                flags.append("misaligned")
            elif m["peak_contrast"] < LOW_PEAK_CONTRAST:
                flags.append("low_similarity")
        out.append(flags)
    return out


def confidence(m: dict | None) -> float:
    """A pair's alignment confidence in [0, 1]: 1 for a pair that stays put and shows a clear
    structural peak, falling with the residual (half at :data:`MISALIGNED_REG_PX`) and with a
    missing peak."""
    if m is None or m["residual_reg_px"] is None:
        return 0.0
    fit = 1.0 / (1.0 + (m["residual_reg_px"] / MISALIGNED_REG_PX) ** 2)
    peak = float(np.clip(m["peak_contrast"] / (2 * LOW_PEAK_CONTRAST), 0.0, 1.0))
    return float(fit * peak)


def assess_alignment(
    volume, transforms, *, reg_size: int = 512, channel: str = "auto"
) -> list[dict]:
    """Judge any set of transforms of a stack (from ``T.json``, corrected by hand, another tool).

    Parameters
    ----------
    volume
        The sections as read (:class:`..io.volume.Volume`, on the common canvas).
    transforms
        One :class:`.transforms.SectionTransform` per section, in canvas coordinates.
    reg_size
        The measures are taken on copies at most this many pixels a side.
    channel
        Registration channel (``auto`` picks one for the stack, as alignment does).

    Returns
    -------
    list of dict
        One per neighbouring pair: ``index_a``, ``index_b``, the measures of
        :func:`assess_pair`, ``confidence`` and ``flags``.
    """
    from ..image import auto_channel
    from .channel import prepare, registration_scale
    from .transforms import field_values, scale_matrix

    n = volume.shape[0]
    s = registration_scale(tuple(volume.shape[1:3]), reg_size)
    if channel == "auto":
        channel = auto_channel(np.asarray(volume.data[n // 2].compute(scheduler="sync")))
    a = scale_matrix(s)

    def aligned(i: int) -> np.ndarray:
        reg = prepare(np.asarray(volume.data[i].compute(scheduler="sync")), s, channel)
        t = transforms[i]
        fld = field_values(t.field)
        if fld is not None:
            h, w = reg.shape
            fld = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in fld])
            fld = fld * np.float32(s)
        return warp_image(reg, a @ t.matrix @ np.linalg.inv(a), reg.shape, fld)

    measures, rows = [], []
    prev = aligned(0) if n else None
    for i in range(1, n):
        cur = aligned(i)
        measures.append(assess_pair(prev, cur, scale=s))
        rows.append({"index_a": i - 1, "index_b": i})
        prev = cur
    for row, m, f in zip(rows, measures, flag_pairs(measures, scale=s), strict=True):
        row.update({k: v for k, v in m.items() if k != "residual_reg_px"})
        row["confidence"] = confidence(m)
        row["flags"] = f
    return rows

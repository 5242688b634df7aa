"""Registration of one pair of overlapping tiles, and the test that tells a real match from
chance.

A pair is measured in three steps: phase correlation of the nominal overlap (widened by the
search range, Hann-windowed) gives candidate integer shifts, the one whose overlap correlates
best wins; features (SIFT) matched with RANSAC give a second candidate where the model allows
rotation or the phase correlation is weak (little texture, a rotation it cannot see); the
better candidate is refined to sub-pixel precision by maximising the enhanced correlation
coefficient (ECC) of the overlap, as a translation or a rotation plus translation.

Every transform here is a 3x3 matrix acting on pixel (x, y, 1) columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Fewer valid overlap pixels than this: no correlation is measured.
MIN_OVERLAP_PIXELS = 64
#: The features candidate is tried when the phase correlation's NCC is below this.
WEAK_NCC = 0.35


@dataclass
class PairMeasure:
    """What registering tile ``j`` against tile ``i`` found.

    Parameters
    ----------
    i, j
        The tiles (``j`` is measured in ``i``'s frame).
    matrix
        3x3: tile ``j`` pixel -> tile ``i`` pixel; None when nothing was measured.
    ncc
        Normalised cross-correlation of the overlap at the integer phase-correlation shift
        (the statistic the chance test compares).
    ncc_refined
        NCC of the overlap under ``matrix`` (after sub-pixel refinement).
    method
        ``"phase"`` or ``"features"``: which candidate won.
    note
        Why nothing was measured, when ``matrix`` is None.
    """

    i: int
    j: int
    matrix: np.ndarray | None
    ncc: float
    ncc_refined: float
    method: str = "phase"
    note: str = ""
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


# ------------------------------------------------------------------------------- geometry


def translation(dx: float, dy: float) -> np.ndarray:
    """The 3x3 matrix of a translation by (dx, dy)."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (n, 2) points (x, y) through a 3x3 matrix."""
    pts = np.asarray(pts, float)
    return pts @ m[:2, :2].T + m[:2, 2]


def footprint_in(m: np.ndarray, shape_b, shape_a, pad: float = 0.0):
    """Bounding box (x0, y0, x1, y1) in tile ``a`` of tile ``b`` mapped by ``m`` (b -> a),
    clipped to ``a``; None when they do not meet."""
    hb, wb = shape_b
    ha, wa = shape_a
    corners = apply(m, np.array([[0, 0], [wb, 0], [0, hb], [wb, hb]], float))
    x0, y0 = corners.min(0) - pad
    x1, y1 = corners.max(0) + pad
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(wa), x1), min(float(ha), y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def nominal_pairs(
    shapes: list[tuple[int, int]],
    nominal: np.ndarray,
    *,
    min_overlap: int = 4,
    min_side: float = 0.5,
) -> list[tuple[int, int]]:
    """Pairs of tiles whose nominal rectangles overlap: at least ``min_overlap`` px in the
    thin direction and ``min_side`` of the smaller tile's side in the other (diagonal
    neighbours sharing a corner are left out)."""
    pairs = []
    n = len(shapes)
    for i in range(n):
        for j in range(i + 1, n):
            (hi, wi), (hj, wj) = shapes[i], shapes[j]
            xi, yi = nominal[i]
            xj, yj = nominal[j]
            ox = min(xi + wi, xj + wj) - max(xi, xj)
            oy = min(yi + hi, yj + hj) - max(yi, yj)
            if ox >= min_overlap and oy >= min_overlap:
                if ox >= min_side * min(wi, wj) or oy >= min_side * min(hi, hj):
                    pairs.append((i, j))
    return pairs


# ---------------------------------------------------------------------------- correlation


def overlap_ncc(a: np.ndarray, b: np.ndarray, m: np.ndarray, *, max_samples: int = 40000) -> float:
    """NCC of tile ``a`` and tile ``b`` mapped into ``a`` by ``m`` (b -> a) over their overlap
    (NaN when the overlap is too small or has no texture)."""
    import cv2

    box = footprint_in(m, b.shape[:2], a.shape[:2])
    if box is None:
        return float("nan")
    x0, y0, x1, y1 = box
    step = max(1.0, np.sqrt((x1 - x0) * (y1 - y0) / max_samples))
    xs = np.arange(np.ceil(x0), np.floor(x1 - 1e-9), step)
    ys = np.arange(np.ceil(y0), np.floor(y1 - 1e-9), step)
    if xs.size < 2 or ys.size < 2:
        return float("nan")
    gx, gy = np.meshgrid(xs, ys)
    inv = np.linalg.inv(m)
    bx = (inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]).astype(np.float32)
    by = (inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]).astype(np.float32)
    hb, wb = b.shape[:2]
    valid = (bx >= 0) & (by >= 0) & (bx <= wb - 1) & (by <= hb - 1)
    if valid.sum() < MIN_OVERLAP_PIXELS:
        return float("nan")
    vb = cv2.remap(b, bx, by, cv2.INTER_LINEAR)[valid]
    ax = np.clip(np.round(gx).astype(int), 0, a.shape[1] - 1)
    ay = np.clip(np.round(gy).astype(int), 0, a.shape[0] - 1)
    va = a[ay, ax][valid]
    return ncc(va, vb)


def ncc(u: np.ndarray, v: np.ndarray) -> float:
    """Normalised cross-correlation of two samples (NaN when either is flat)."""
    u = np.asarray(u, np.float64).ravel()
    v = np.asarray(v, np.float64).ravel()
    u = u - u.mean()
    v = v - v.mean()
    den = np.sqrt((u * u).sum() * (v * v).sum())
    scale = max(1e-12, float(np.abs(u).max(initial=0) * np.abs(v).max(initial=0)) * 1e-6)
    if den <= scale * u.size:
        return float("nan")
    return float((u * v).sum() / den)


def _window(shape) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)


def _crop(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    return img[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]


def phase_candidates(
    a: np.ndarray, b: np.ndarray, offset: tuple[float, float], search: float, *, peaks: int = 4
) -> list[tuple[np.ndarray, float]]:
    """Integer translations of ``b`` into ``a`` (3x3, b -> a) near ``offset`` (where ``b``'s
    top-left is expected in ``a``), by phase correlation of the overlap widened by ``search``,
    each with the NCC of its overlap, best first."""
    ha, wa = a.shape
    hb, wb = b.shape
    dx, dy = int(round(offset[0])), int(round(offset[1]))
    s = int(np.ceil(search))
    # the region (in a's frame) where the two can overlap, and the same region in b's frame
    x0, y0 = max(0, dx - s), max(0, dy - s)
    x1, y1 = min(wa, dx + wb + s), min(ha, dy + hb + s)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return []
    ca = _crop(a, x0, y0, x1, y1)
    bx0, by0 = x0 - dx, y0 - dy
    H, W = y1 - y0, x1 - x0
    cb = np.zeros((H, W), np.float32)
    sb = _crop(b, bx0, by0, bx0 + W, by0 + H)
    oy, ox = max(0, -by0), max(0, -bx0)
    cb[oy : oy + sb.shape[0], ox : ox + sb.shape[1]] = sb - (sb.mean() if sb.size else 0)
    fa = (ca - ca.mean()) * _window(ca.shape)
    win_b = np.zeros((H, W), np.float32)
    if sb.size:
        win_b[oy : oy + sb.shape[0], ox : ox + sb.shape[1]] = _window(sb.shape)
    fb = cb * win_b
    Fa = np.fft.rfft2(fa)
    Fb = np.fft.rfft2(fb)
    cross = Fa * np.conj(Fb)
    cross /= np.abs(cross) + 1e-9 * np.abs(cross).max(initial=1.0) + 1e-20
    corr = np.fft.irfft2(cross, s=(H, W))
    flat = np.argsort(corr.ravel())[::-1][: max(1, peaks)]
    seen = set()
    out = []
    for k in flat:
        py, px = np.unravel_index(k, corr.shape)
        for sy in (py, py - H):
            for sx in (px, px - W):
                if abs(sx) > s + 1 or abs(sy) > s + 1 or (sx, sy) in seen:
                    continue
                seen.add((sx, sy))
                m = translation(dx + sx, dy + sy)
                out.append((m, overlap_ncc(a, b, m)))
    out.sort(key=lambda t: -np.nan_to_num(t[1], nan=-2))
    return out


def _to_uint8(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, (0.5, 99.5))
    return np.clip((img - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)


def feature_candidate(
    a: np.ndarray, b: np.ndarray, offset: tuple[float, float], search: float
) -> np.ndarray | None:
    """A rotation + translation of ``b`` into ``a`` (3x3, b -> a) from SIFT features matched in
    the widened overlap and RANSAC, or None when too few consistent matches are found."""
    import cv2

    ha, wa = a.shape
    hb, wb = b.shape
    dx, dy = offset
    s = search
    ax0, ay0 = int(max(0, dx - s)), int(max(0, dy - s))
    ax1, ay1 = int(min(wa, dx + wb + s)), int(min(ha, dy + hb + s))
    bx0, by0 = int(max(0, -dx - s)), int(max(0, -dy - s))
    bx1, by1 = int(min(wb, wa - dx + s)), int(min(hb, ha - dy + s))
    if min(ax1 - ax0, ay1 - ay0, bx1 - bx0, by1 - by0) < 16:
        return None
    ca, cb = a[ay0:ay1, ax0:ax1], b[by0:by1, bx0:bx1]
    sift = cv2.SIFT_create(nfeatures=1500)
    ka, da_ = sift.detectAndCompute(_to_uint8(ca), None)
    kb, db = sift.detectAndCompute(_to_uint8(cb), None)
    if da_ is None or db is None or len(ka) < 6 or len(kb) < 6:
        return None
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(db, da_, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < 6:
        return None
    pb = np.float32([kb[m.queryIdx].pt for m in good]) + np.float32([bx0, by0])
    pa = np.float32([ka[m.trainIdx].pt for m in good]) + np.float32([ax0, ay0])
    est, inliers = cv2.estimateAffinePartial2D(
        pb, pa, method=cv2.RANSAC, ransacReprojThreshold=2.5, maxIters=2000, confidence=0.995
    )
    if est is None or inliers is None or int(inliers.sum()) < 6:
        return None
    # a rigid transform: drop the scale RANSAC allowed
    angle = np.arctan2(est[1, 0], est[0, 0])
    c, si = np.cos(angle), np.sin(angle)
    inl = inliers.ravel().astype(bool)
    rot = np.array([[c, -si], [si, c]])
    t = (pa[inl] - pb[inl] @ rot.T).mean(0)
    m = np.eye(3)
    m[:2, :2] = rot
    m[:2, 2] = t
    return m


def refine_ecc(
    a: np.ndarray, b: np.ndarray, m: np.ndarray, *, rigid: bool, max_move: float = 3.0
) -> np.ndarray | None:
    """Sub-pixel refinement of ``m`` (b -> a) by ECC over the overlap; None when ECC fails or
    moves the overlap more than ``max_move`` px (a different optimum, not a refinement)."""
    import cv2

    box = footprint_in(m, b.shape[:2], a.shape[:2])
    if box is None:
        return None
    hb, wb = b.shape
    # the template is the part of the overlap that stays inside ``b`` however far the
    # refinement may move it: a template reaching past b's border is compared with the zeros
    # ECC pads with (a bias of up to half a pixel), and ECC's own mask is unreliable
    inner = _inner_box(m, box, (hb, wb), margin=max_move + 2)
    if inner is None:  # a narrow overlap: a smaller margin, checked after the refinement
        inner = _inner_box(m, box, (hb, wb), margin=2)
    if inner is None:
        return None
    x0, y0, x1, y1 = inner
    template = np.ascontiguousarray(a[y0:y1, x0:x1], np.float32)
    inv = np.linalg.inv(m) @ translation(x0, y0)  # template pixel -> b pixel
    warp = inv[:2].astype(np.float32)
    motion = cv2.MOTION_EUCLIDEAN if rigid else cv2.MOTION_TRANSLATION
    if not rigid:
        warp[:2, :2] = np.eye(2, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5)
    try:
        _, warp = cv2.findTransformECC(template, b, warp, motion, criteria, None, 3)
    except cv2.error:
        return None
    w3 = np.vstack([warp.astype(float), [0, 0, 1]])
    new = np.linalg.inv(w3 @ translation(-x0, -y0))  # b -> a
    centre = np.array([[(x0 + x1) / 2, (y0 + y1) / 2]])
    moved = np.abs(apply(np.linalg.inv(new), centre) - apply(np.linalg.inv(m), centre)).max()
    if not np.isfinite(new).all() or moved > max_move:
        return None
    c = apply(
        w3, np.array([[0, 0], [x1 - x0 - 1, 0], [0, y1 - y0 - 1], [x1 - x0 - 1, y1 - y0 - 1]])
    )
    if c.min() < 0 or c[:, 0].max() > wb - 1 or c[:, 1].max() > hb - 1:
        return None  # the refined template reaches past b's border
    return new


def _inner_box(m: np.ndarray, box, shape_b, *, margin: float, min_side: int = 8):
    """The integer box (x0, y0, x1, y1) of ``a`` inside ``box`` whose corners, mapped into
    ``b`` by ``inv(m)``, lie at least ``margin`` px inside ``b``; None when too small."""
    hb, wb = shape_b
    inv = np.linalg.inv(m)
    x0, y0 = int(np.ceil(box[0])), int(np.ceil(box[1]))
    x1, y1 = int(np.floor(box[2])), int(np.floor(box[3]))
    for _ in range(4 * int(max(wb, hb))):
        if x1 - x0 < min_side or y1 - y0 < min_side:
            return None
        c = apply(inv, np.array([[x0, y0], [x1 - 1, y0], [x0, y1 - 1], [x1 - 1, y1 - 1]], float))
        left = c[[0, 2], 0].min() < margin
        right = c[[1, 3], 0].max() > wb - 1 - margin
        top = c[[0, 1], 1].min() < margin
        bottom = c[[2, 3], 1].max() > hb - 1 - margin
        if not (left or right or top or bottom):
            return x0, y0, x1, y1
        x0, x1, y0, y1 = x0 + int(left), x1 - int(right), y0 + int(top), y1 - int(bottom)
    return None


def overlap_points(m: np.ndarray, shape_b, shape_a, n: int = 3) -> np.ndarray:
    """An n x n grid of points of tile ``b`` (its own pixels) inside the overlap with ``a``."""
    inv = np.linalg.inv(m)
    box = footprint_in(inv, shape_a, shape_b)
    if box is None:
        return np.zeros((0, 2))
    x0, y0, x1, y1 = box
    xs = np.linspace(x0 + 0.15 * (x1 - x0), x1 - 0.15 * (x1 - x0), n)
    ys = np.linspace(y0 + 0.15 * (y1 - y0), y1 - 0.15 * (y1 - y0), n)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def measure_pair(
    a: np.ndarray,
    b: np.ndarray,
    offset: tuple[float, float],
    *,
    i: int = 0,
    j: int = 1,
    rigid: bool = False,
    search: float = 20.0,
) -> PairMeasure:
    """Register tile ``b`` against tile ``a`` (gray float32 images).

    Parameters
    ----------
    a, b
        The two tiles.
    offset
        Where ``b``'s top-left is expected in ``a``'s pixels (nominal position difference).
    i, j
        Their indices, carried into the result.
    rigid
        Also estimate a rotation (features + RANSAC candidate, Euclidean ECC).
    search
        How far (px) the true offset may be from ``offset``.

    Returns
    -------
    PairMeasure
        The transform (b -> a), the NCC the chance test uses, the refined NCC, the method.
    """
    cands = phase_candidates(a, b, offset, search)
    if not cands or not np.isfinite(cands[0][1]):
        note = "no texture in the overlap" if cands else "no overlap"
        return PairMeasure(i, j, None, float("nan"), float("nan"), note=note)
    best_m, best_ncc = cands[0]
    options = [(best_m, "phase")]
    if rigid or best_ncc < WEAK_NCC:
        fm = feature_candidate(a, b, offset, search)
        if fm is not None:
            tx, ty = fm[0, 2] - offset[0], fm[1, 2] - offset[1]
            if abs(tx) <= search + 2 and abs(ty) <= search + 2:
                options.append((fm, "features"))
    results = []
    for m0, method in options:
        m1 = refine_ecc(a, b, m0, rigid=rigid)
        if m1 is None and rigid:
            m1 = refine_ecc(a, b, m0, rigid=False)
        m = m1 if m1 is not None else m0
        results.append((overlap_ncc(a, b, m), m, method))
    results.sort(key=lambda r: -np.nan_to_num(r[0], nan=-2))
    score, m, method = results[0]
    stat = best_ncc if method == "phase" else max(best_ncc, overlap_ncc(a, b, _rounded(m)))
    return PairMeasure(
        i,
        j,
        m,
        float(stat),
        float(score),
        method=method,
        points=overlap_points(m, b.shape, a.shape),
    )


def _rounded(m: np.ndarray) -> np.ndarray:
    r = m.copy()
    r[:2, 2] = np.round(r[:2, 2])
    return r


def chance_ncc(a: np.ndarray, b: np.ndarray, offset: tuple[float, float], search: float) -> float:
    """The best overlap NCC phase correlation finds between two tiles that are *not*
    neighbours, placed as a real pair would be: one draw of the chance distribution."""
    cands = phase_candidates(a, b, offset, search)
    vals = [c[1] for c in cands if np.isfinite(c[1])]
    return max(vals) if vals else float("nan")

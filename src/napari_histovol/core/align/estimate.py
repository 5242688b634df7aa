"""Pairwise registration of two registration images (float32 in [0, 1], same shape).

Default engine: an exhaustive coarse search over rotation (phase correlation for the shift at
each angle, on a ~128-pixel copy) gives a start that survives any rotation and large shifts;
OpenCV's ECC (enhanced correlation coefficient, robust to contrast and brightness changes)
then refines translation / rigid / affine coarse-to-fine to sub-pixel accuracy. ``elastic``
adds a smooth dense displacement field from DIS optical flow, regularised by confidence-
weighted Gaussian smoothing. The ``stackreg`` engine runs pystackreg (TurboReg) as the seed
pipeline did.

Matrices returned map fixed-image pixel (x, y, 1) to moving-image pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .transforms import rescale, scale_matrix

MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "rigid": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "elastic": cv2.MOTION_AFFINE,
}
GOOD_NCC = 0.6  # a refined nearby start this good skips the exhaustive rotation search
STACKREG_MODES = {
    "translation": "TRANSLATION",
    "rigid": "RIGID_BODY",
    "similarity": "SCALED_ROTATION",
    "affine": "AFFINE",
}


@dataclass
class PairResult:
    """Result of registering a moving image to a fixed one (at registration scale)."""

    matrix: np.ndarray
    field: np.ndarray | None
    ncc: float
    ok: bool
    message: str = ""


def warp_image(
    img: np.ndarray,
    matrix: np.ndarray,
    shape: tuple[int, int] | None = None,
    field: np.ndarray | None = None,
    *,
    border: float = 0.0,
    interp: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Warp a (small) image: output pixel p takes img at matrix @ (p + field(p))."""
    h, w = shape or img.shape[:2]
    if field is None:
        return cv2.warpAffine(
            img,
            matrix[:2].astype(np.float64),
            (w, h),
            flags=interp | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border,
        )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    qx, qy = xx + field[0], yy + field[1]
    m = matrix.astype(np.float32)
    mx = m[0, 0] * qx + m[0, 1] * qy + m[0, 2]
    my = m[1, 0] * qx + m[1, 1] * qy + m[1, 2]
    return cv2.remap(img, mx, my, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def valid_mask(
    shape: tuple[int, int], matrix: np.ndarray, src_shape: tuple[int, int], field=None
) -> np.ndarray:
    ones = np.ones(src_shape, np.float32)
    return warp_image(ones, matrix, shape, field, interp=cv2.INTER_NEAREST) > 0.5


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation of two images over ``mask`` (all pixels if None)."""
    if mask is not None:
        a, b = a[mask], b[mask]
    if a.size < 16:
        return 0.0
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    d = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


def overlap_ncc(fixed: np.ndarray, moving: np.ndarray, matrix: np.ndarray, field=None) -> float:
    """NCC of ``fixed`` and ``moving`` warped by ``matrix`` over their overlap with tissue."""
    warped = warp_image(moving, matrix, fixed.shape, field)
    valid = valid_mask(fixed.shape, matrix, moving.shape, field)
    tissue = (fixed > 0.1) | (warped > 0.1)
    if tissue[valid].mean() > 0.6 if valid.any() else False:
        # content fills the frame (EM, dense fluorescence): a tissue mask would only select
        # the bright structures and bias the correlation
        return ncc(fixed, warped, valid)
    return ncc(fixed, warped, valid & tissue)


def _rotation_about_centre(angle_deg: float, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    c = ((w - 1) / 2, (h - 1) / 2)
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D(c, angle_deg, 1.0)
    return m


def coarse_search(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    size: int = 128,
    step_deg: float = 6.0,
    max_angle: float = 180.0,
    keep: int = 3,
) -> list[np.ndarray]:
    """Best rigid starts (fixed -> moving matrices, at the input scale) over all rotations.

    At each angle the moving image is rotated about its centre and the shift found by phase
    correlation; candidates are ranked by the NCC of the overlap.
    """
    s = min(1.0, size / max(fixed.shape))
    f = cv2.resize(fixed, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else fixed
    m = cv2.resize(moving, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else moving
    f = cv2.GaussianBlur(f, (0, 0), 1.0)
    m = cv2.GaussianBlur(m, (0, 0), 1.0)
    from skimage.registration import phase_cross_correlation

    scored = []
    angles = np.arange(-max_angle, max_angle, step_deg)
    for ang in angles:
        r = _rotation_about_centre(float(ang), f.shape)  # fixed -> moving rotation
        rot = warp_image(m, r, f.shape)  # rot(p) = m(r p)
        shift, _, _ = phase_cross_correlation(f, rot, upsample_factor=1, normalization=None)
        # f(p) ~ rot(p - shift)  =>  fixed p -> moving r (p - shift)
        t = np.array([[1, 0, -shift[1]], [0, 1, -shift[0]], [0, 0, 1.0]])
        cand = r @ t
        scored.append((overlap_ncc(f, m, cand), cand))
    scored.sort(key=lambda x: -x[0])
    return [rescale(c, s) for _, c in scored[:keep]]


def ecc_refine(
    fixed: np.ndarray,
    moving: np.ndarray,
    init: np.ndarray,
    motion: int,
    *,
    levels: int = 3,
    iterations: int = 100,
    eps: float = 1e-6,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """Coarse-to-fine ECC from ``init``; returns (matrix, converged). ``mask``: the pixels of
    ``fixed`` that count (nonzero), e.g. where both images hold data."""
    m = init.copy()
    ok = False  # True once the finest level attempted converged
    for lvl in range(levels - 1, -1, -1):
        s = 0.5**lvl
        if min(fixed.shape) * s < 24:
            continue
        f = cv2.resize(fixed, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else fixed
        mv = cv2.resize(moving, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else moving
        level_mask = None
        if mask is not None:
            level_mask = (mask > 0).astype(np.uint8)
            if s < 1:
                level_mask = cv2.resize(
                    level_mask, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_NEAREST
                )
        a = scale_matrix(s)
        small = a @ m @ np.linalg.inv(a)
        warp = small[:2].astype(np.float32)
        if motion == cv2.MOTION_TRANSLATION:
            warp = np.array([[1, 0, warp[0, 2]], [0, 1, warp[1, 2]]], np.float32)
        try:
            _, warp = cv2.findTransformECC(
                f,
                mv,
                warp,
                motion,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps),
                level_mask,
                5,
            )
        except cv2.error:
            ok = False
            continue
        ok = True
        small = np.vstack([warp.astype(np.float64), [0, 0, 1]])
        m = np.linalg.inv(a) @ small @ a
    return m, ok


def elastic_field(
    fixed: np.ndarray,
    moving: np.ndarray,
    matrix: np.ndarray,
    *,
    smooth_frac: float = 0.015,
    max_frac: float = 0.05,
) -> np.ndarray:
    """Smooth displacement u (2, h, w) on the fixed grid such that moving(M(p + u)) ~ fixed(p).

    DIS optical flow between the fixed image and the affinely warped moving image, smoothed
    by tissue-weighted normalised convolution (sigma = ``smooth_frac`` of the image size),
    clipped to ``max_frac`` of the image size.
    """
    warped = warp_image(moving, matrix, fixed.shape)
    f8 = np.clip(fixed * 255, 0, 255).astype(np.uint8)
    w8 = np.clip(warped * 255, 0, 255).astype(np.uint8)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(f8, w8, None)  # fixed(p) ~ warped(p + flow(p))
    weight = cv2.GaussianBlur(((fixed > 0.1) | (warped > 0.1)).astype(np.float32), (0, 0), 2) + 1e-3
    sigma = max(2.0, smooth_frac * max(fixed.shape))
    den = cv2.GaussianBlur(weight, (0, 0), sigma)
    u = np.stack([cv2.GaussianBlur(flow[..., c] * weight, (0, 0), sigma) / den for c in range(2)])
    lim = max_frac * max(fixed.shape)
    return np.clip(u, -lim, lim).astype(np.float32)


#: Coarse starts whose rotation, once refined, is within this many degrees of the nearby
#: start's answer compete with it on score alone; others must win clearly (see
#: :func:`register_pair`).
NEAR_ROTATION_DEG = 10.0


def _angle_deg(m: np.ndarray) -> float:
    return math.degrees(math.atan2(m[1, 0], m[0, 0]))


def _is_shift(m: np.ndarray) -> bool:
    """Whether ``m`` only shifts (its linear part within 1e-3 of the identity)."""
    return bool(np.abs(np.asarray(m)[:2, :2] - np.eye(2)).max() < 1e-3)


def _angle_apart(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


#: A turned match must beat the best match to the moving section's mirror image by this NCC.
LOOKALIKE_MARGIN = 0.1


def _refine_start(
    fixed: np.ndarray, moving: np.ndarray, start: np.ndarray, motion: int
) -> tuple[np.ndarray, bool, float]:
    """ECC from ``start``; (matrix, converged, NCC of the overlap)."""
    # OpenCV's ECC parametrises rotation by asin and fails beyond +-90 degrees: refine
    # large rotations against a copy of the moving image pre-rotated by the start angle.
    angle = _angle_deg(start)
    # getRotationMatrix2D turns by -angle in the atan2(m10, m00) sense
    pre = _rotation_about_centre(-angle, moving.shape) if abs(angle) > 45 else np.eye(3)
    mov = warp_image(moving, pre, moving.shape) if abs(angle) > 45 else moving
    init_local = np.linalg.inv(pre) @ start
    first_motion = cv2.MOTION_EUCLIDEAN if motion == cv2.MOTION_AFFINE else motion
    if motion == cv2.MOTION_TRANSLATION and abs(angle) > 1:
        first_motion = cv2.MOTION_EUCLIDEAN  # a rotated start needs its rotation kept
    m, ok = ecc_refine(fixed, mov, init_local, first_motion)
    if motion == cv2.MOTION_AFFINE:
        m2, ok2 = ecc_refine(fixed, mov, m, motion, levels=2)
        if ok2:
            m = m2
    m = pre @ m
    return m, ok, overlap_ncc(fixed, moving, m)


def lookalike_score(fixed: np.ndarray, moving: np.ndarray, motion: int) -> float:
    """NCC of the best match of ``fixed`` to the mirror image of ``moving``, at any rotation:
    how well texture alone matches where nothing truly corresponds."""
    mirror = np.ascontiguousarray(moving[::-1])
    return max(_refine_start(fixed, mirror, m, motion)[2] for m in coarse_search(fixed, mirror))


def register_pair(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    method: str = "rigid",
    init: np.ndarray | None = None,
    coarse: bool = True,
    engine: str = "histovol",
) -> PairResult:
    """Register ``moving`` onto ``fixed``; the best of the given start and the coarse search wins."""
    if engine == "stackreg":
        return _register_stackreg(fixed, moving, method)
    motion = MOTIONS[method]
    starts = [np.eye(3) if init is None else np.asarray(init, float)]
    best = None
    init_score = None
    lookalike = None
    k = -1
    while k + 1 < len(starts):
        k += 1
        m, ok, score = _refine_start(fixed, moving, starts[k], motion)
        if k == 0:
            init_score, init_angle, start_angle = score, _angle_deg(m), _angle_deg(starts[0])
        elif (
            _angle_apart(_angle_deg(m), init_angle) > NEAR_ROTATION_DEG
            and _angle_apart(_angle_deg(m), start_angle) > NEAR_ROTATION_DEG
        ):
            # a start turned far from the nearby answer must win clearly: on self-similar
            # texture (EM) a spurious rotation can score about as well as the true one. A start
            # at about the same rotation (a shift ECC could not reach from the nearby start:
            # EM sections 20-40 px apart) only has to score better, and so does one at about
            # the nearby start's own rotation when ECC wandered from that start (13 degrees on
            # a 256 px EM window, to NCC 0.13 against 0.19 unturned)
            if score < init_score + max(0.1, 0.5 * abs(init_score)):
                continue
            # ... and beat the best match to the mirror image of the moving section, which
            # shares its texture and nothing else, by as much: on EM sections far apart that
            # look-alike scores as well as the partner, and `--reference middle` turned an EM
            # window's end sections 95 and 172 degrees
            if lookalike is None:
                lookalike = lookalike_score(fixed, moving, motion)
            if score < lookalike + LOOKALIKE_MARGIN:
                continue
        if best is None or score > best.ncc:
            best = PairResult(m, None, score, ok)
        if (
            k == 0
            and score < GOOD_NCC
            and motion != cv2.MOTION_TRANSLATION
            and _is_shift(starts[0])
        ):
            # the simpler model, a shift alone, when it matches better (checked where the match
            # is not clearly good, as where the rotation search runs): on serial EM, ECC's
            # rigid answer turned 5 degrees where the unturned shift scored higher (NCC 0.184
            # against 0.176), and such turns, every pair a little, added up along the stack
            mt, okt, score_t = _refine_start(fixed, moving, starts[0], cv2.MOTION_TRANSLATION)
            if score_t > best.ncc:
                best = PairResult(mt, None, score_t, okt)
                init_score = score_t
        if k == 0 and coarse and not (ok and score >= GOOD_NCC):
            # the nearby start did not give a clearly good match: search every rotation
            starts += coarse_search(fixed, moving)
    if method == "elastic" and best is not None:
        u = elastic_field(fixed, moving, best.matrix)
        score = overlap_ncc(fixed, moving, best.matrix, u)
        if score > best.ncc:
            best = PairResult(best.matrix, u, score, best.ok)
    return best


def _register_stackreg(fixed: np.ndarray, moving: np.ndarray, method: str) -> PairResult:
    from pystackreg import StackReg

    if method not in STACKREG_MODES:
        raise ValueError(f"the stackreg engine has no '{method}' method")
    sr = StackReg(getattr(StackReg, STACKREG_MODES[method]))
    try:
        m = sr.register(fixed.astype(np.float64), moving.astype(np.float64))
        ok = bool(np.isfinite(m).all())
    except Exception:  # noqa: BLE001 - TurboReg failures are reported as a failed pair
        m, ok = np.eye(3), False
    return PairResult(np.asarray(m, float), None, overlap_ncc(fixed, moving, m) if ok else 0.0, ok)

"""Landmark correction: paired points on a moving and a reference section fit a correction
(affine or thin-plate spline) that is folded into the moving section's transform; the sections
around it follow.

Conventions (:mod:`.transforms`): a transform ``T`` maps an aligned pixel to a source pixel.
Landmarks are given in source pixels of each section: ``p`` on the moving section ``i`` and
``q`` on the reference section ``r``. Today they land at ``a = T_i^-1(p)`` and ``b = T_r^-1(q)``
in the aligned frame; the correction ``C`` (aligned -> aligned) is fitted so that ``C(b) = a``,
and the new transform is ``T_i' = T_i o C``, so that ``T_i'^-1(p) = b``.

Folding it in keeps ``T.json`` as it is: with ``C(x) = A x + R(x)`` (``A`` its affine part,
``R`` the spline's non-affine rest) and ``T(x) = M (x + u(x))``, the new transform is the
matrix ``M A`` and the field ``u'(x) = A_l^-1 (R(x) + u(C(x)))`` (``A_l``: A's 2x2 part) on the
field's grid (a new grid at most :data:`FIELD_SIZE` pixels a side when there was no field).

Neighbours follow (re-solved): the affine corrections of the stack are solved as a chain whose
pairs keep their present relative alignment (every neighbour's correction equal to the next
one's) with the corrected section and the reference section (and any section named in
``keep``) held: the least-squares answer is piecewise linear along the stack, so sections
between the reference and the corrected section take a share of the correction, sections
beyond the corrected one move with it, and sections on the reference's other side stay. The
spline's non-affine part is the corrected section's own (a tear, a fold) and stays with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .transforms import SectionTransform, _apply, field_values

MODELS = ("affine", "tps")
FIELD_SIZE = 512  # a field made for a spline correction has at most this many pixels a side


@dataclass(frozen=True)
class Correction:
    """A fitted correction ``C`` of the aligned frame: ``C(x) = affine @ x + rest(x)``."""

    affine: np.ndarray  # 3x3
    model: str = "affine"
    rbf: object | None = None  # scipy RBFInterpolator of the non-affine rest (tps)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, float).reshape(-1, 2)
        out = _apply(self.affine, xy)
        if self.rbf is not None:
            out = out + self.rbf(xy)
        return out

    def rest(self, xy: np.ndarray) -> np.ndarray:
        """The non-affine part ``R(x)`` (zeros for an affine correction)."""
        xy = np.asarray(xy, float).reshape(-1, 2)
        return np.zeros_like(xy) if self.rbf is None else self.rbf(xy)


@dataclass(frozen=True)
class LandmarkResult:
    """Corrected transforms and the landmark errors (aligned pixels) before and after."""

    transforms: list[SectionTransform]
    correction: Correction
    before_px: np.ndarray
    after_px: np.ndarray
    moved: list[int]

    def table(self) -> list[dict]:
        """One row per landmark: ``index``, ``before_px``, ``after_px``."""
        return [
            {"index": k, "before_px": float(b), "after_px": float(a)}
            for k, (b, a) in enumerate(zip(self.before_px, self.after_px, strict=True))
        ]


def fit_correction(
    target_xy: np.ndarray, current_xy: np.ndarray, *, model: str = "affine", smoothing: float = 0.0
) -> Correction:
    """Fit ``C`` with ``C(target) ~ current`` (least squares; a thin-plate spline interpolates).

    Parameters
    ----------
    target_xy
        (N, 2) where the landmarks should be (the reference section's, aligned frame).
    current_xy
        (N, 2) where the moving section's landmarks are now (aligned frame).
    model
        ``affine`` (at least 3 points, not on one line) or ``tps`` (thin-plate spline over an
        affine, at least 3 points; ``smoothing`` > 0 lets it pass near instead of through).

    Raises
    ------
    InputError
        On an unknown model, unpaired or too few points, or points on one line.
    """
    if model not in MODELS:
        raise InputError(f"Unknown correction model '{model}'; use one of {', '.join(MODELS)}.")
    b = np.asarray(target_xy, float).reshape(-1, 2)
    a = np.asarray(current_xy, float).reshape(-1, 2)
    if len(a) != len(b):
        raise InputError(
            f"The landmarks are not paired: {len(a)} on the moving section, {len(b)} on the "
            "reference; place them in the same order on both."
        )
    if len(a) < 3:
        raise InputError(f"A correction needs at least 3 landmark pairs, not {len(a)}.")
    x = np.c_[b, np.ones(len(b))]
    if np.linalg.matrix_rank(b - b.mean(0), tol=1e-6 * max(1.0, float(np.ptp(b)))) < 2:
        raise InputError("The landmarks lie on one line; spread them over the section.")
    coef, *_ = np.linalg.lstsq(x, a, rcond=None)
    affine = np.eye(3)
    affine[:2] = coef.T
    if model == "affine":
        return Correction(affine, "affine")
    from scipy.interpolate import RBFInterpolator

    rest = a - _apply(affine, b)
    rbf = RBFInterpolator(b, rest, kernel="thin_plate_spline", degree=1, smoothing=smoothing)
    return Correction(affine, "tps", rbf)


def fold_correction(
    t: SectionTransform, c: Correction, canvas: tuple[int, int], *, affine_only: bool = False
) -> SectionTransform:
    """The transform ``t o c`` in ``T.json``'s form (a matrix and a field on a grid).

    Parameters
    ----------
    t
        The section's transform (aligned -> source).
    c
        The correction of the aligned frame.
    canvas
        (h, w) of the aligned frame (for a new field's grid).
    affine_only
        Fold only the affine part of ``c`` (for the sections that follow a corrected one).
    """
    a = c.affine
    m = t.matrix @ a
    spline = c.rbf is not None and not affine_only
    if t.field is None and not spline:
        return SectionTransform(m)
    if t.field is not None:
        shape = tuple(field_values(t.field).shape[1:])
        s = t.field_scale
    else:
        s = min(1.0, FIELD_SIZE / max(canvas))
        shape = (max(2, round(canvas[0] * s)), max(2, round(canvas[1] * s)))
    gy, gx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    full = np.c_[((gx + 0.5) / s - 0.5).ravel(), ((gy + 0.5) / s - 0.5).ravel()]
    if spline:
        cx = c(full)
        rest = c.rest(full)
    else:
        cx = _apply(a, full)
        rest = np.zeros_like(full)
    u = rest + t.displacement_at(cx)
    u = u @ np.linalg.inv(a[:2, :2]).T
    fld = u.T.reshape(2, *shape).astype(np.float32)
    return SectionTransform(m, fld, s)


def propagation_weights(n: int, moving: int, reference: int, keep=()) -> np.ndarray:
    """Share of the correction each section takes: the least-squares answer of a chain whose
    neighbours keep their relative alignment, with ``moving`` at 1 and ``reference`` and
    ``keep`` at 0 (piecewise linear between held sections, constant beyond the last)."""
    knots = {int(k): 0.0 for k in keep if 0 <= int(k) < n}
    knots[int(reference)] = 0.0
    knots[int(moving)] = 1.0
    zs = np.array(sorted(knots))
    vals = np.array([knots[z] for z in zs])
    return np.interp(np.arange(n), zs, vals)


def correct_section(
    transforms: list[SectionTransform],
    moving: int,
    moving_xy: np.ndarray,
    reference: int,
    reference_xy: np.ndarray,
    *,
    canvas: tuple[int, int],
    model: str = "affine",
    follow: bool = True,
    keep=(),
    smoothing: float = 0.0,
) -> LandmarkResult:
    """Correct section ``moving`` so that its landmarks land on the reference's.

    Parameters
    ----------
    transforms
        Every section's transform (aligned -> source, canvas coordinates).
    moving, reference
        Indices of the section to correct and of the section it is corrected onto.
    moving_xy, reference_xy
        (N, 2) paired landmarks, x, y in each section's source pixels, in the same order.
    canvas
        (h, w) of the aligned frame.
    model
        ``affine`` or ``tps`` (thin-plate spline).
    follow
        Re-solve the neighbours (see the module's description); False corrects only
        ``moving``.
    keep
        Sections held where they are besides the reference (sections corrected before).
    smoothing
        Thin-plate spline smoothing (0: through the points).

    Returns
    -------
    LandmarkResult
        New transforms, the correction, per-landmark errors before and after (aligned px),
        and which sections moved.
    """
    n = len(transforms)
    for k, name in ((moving, "moving"), (reference, "reference")):
        if not 0 <= k < n:
            raise InputError(f"The {name} section {k} is not in the stack (0..{n - 1}).")
    if moving == reference:
        raise InputError("The moving and the reference section must differ.")
    p = np.asarray(moving_xy, float).reshape(-1, 2)
    q = np.asarray(reference_xy, float).reshape(-1, 2)
    current = transforms[moving].source_to_aligned(p)
    target = transforms[reference].source_to_aligned(q)
    c = fit_correction(target, current, model=model, smoothing=smoothing)
    out = list(transforms)
    out[moving] = fold_correction(transforms[moving], c, canvas)
    moved = [moving]
    if follow:
        w = propagation_weights(n, moving, reference, keep)
        for k in range(n):
            if k == moving or w[k] == 0:
                continue
            part = Correction(np.eye(3) + w[k] * (c.affine - np.eye(3)))
            out[k] = fold_correction(transforms[k], part, canvas, affine_only=True)
            moved.append(k)
    after = out[moving].source_to_aligned(p)
    before_px = np.linalg.norm(current - target, axis=1)
    after_px = np.linalg.norm(after - out[reference].source_to_aligned(q), axis=1)
    return LandmarkResult(out, c, before_px, after_px, sorted(moved))


__all__ = [
    "MODELS",
    "Correction",
    "LandmarkResult",
    "correct_section",
    "fit_correction",
    "fold_correction",
    "propagation_weights",
]

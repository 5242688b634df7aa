"""Stacks with a known truth for alignment: planes that are aligned by construction, seen
through known rigid jitters, and the error of every aligned plane against the first.

Used by the tests and the benchmark (and by anyone who wants to check an alignment setup on
their own sections).
"""

from __future__ import annotations

import cv2
import numpy as np


def jitter_matrix(
    rng: np.random.Generator, shape: tuple[int, int], max_shift: float = 10.0, max_deg: float = 10.0
) -> np.ndarray:
    """A random rigid 3x3 matrix about the centre of a ``shape`` (h, w) plane: a rotation within
    +-``max_deg`` degrees, then a shift within +-``max_shift`` px on each axis."""
    h, w = shape
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(-max_deg, max_deg), 1.0)
    m[:2, 2] += rng.uniform(-max_shift, max_shift, 2)
    return m


def jitter_stack(
    planes, *, seed: int, max_shift: float = 10.0, max_deg: float = 10.0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each plane seen through its own random rigid jitter J_i.

    Parameters
    ----------
    planes
        Aligned (Y, X) planes.
    seed
        Seed of the jitters.
    max_shift, max_deg
        Bounds of the shift (px) and rotation (degrees).

    Returns
    -------
    stack, truths
        The jittered planes (borders filled with the plane's border median) and every J_i,
        which maps an aligned pixel (x, y, 1) to the jittered one.
    """
    rng = np.random.default_rng(seed)
    out, truths = [], []
    for p in planes:
        h, w = p.shape[:2]
        j = jitter_matrix(rng, (h, w), max_shift, max_deg)
        fill = float(np.median(np.concatenate([p[0], p[-1], p[:, 0], p[:, -1]])))
        out.append(cv2.warpAffine(p, j[:2], (w, h), borderValue=fill))
        truths.append(j)
    return np.stack(out), truths


def deformed_stack(base: np.ndarray, n: int, amp: float = 3.0, seed: int = 0) -> list[np.ndarray]:
    """``n`` planes aligned by construction: one uint8 section under a smooth, purely non-affine
    deformation (up to ``amp`` px) that changes slowly along z, with fresh noise on every plane.
    The deformation has no affine part, so there is nothing for a rigid fit to follow."""
    rng = np.random.default_rng(seed)
    h, w = base.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    design = np.c_[np.ones(h * w), xx.ravel(), yy.ravel()]

    def field():
        f = cv2.GaussianBlur(rng.normal(size=(h, w)).astype(np.float32), (0, 0), h / 8)
        coef, *_ = np.linalg.lstsq(design, f.ravel(), rcond=None)
        f = f - (design @ coef).reshape(h, w)
        return (f / np.abs(f).max()).astype(np.float32)

    u = [field() for _ in range(4)]
    out = []
    for k in range(n):
        a, b = np.cos(0.15 * k), np.sin(0.15 * k)
        mx = (xx + amp * (a * u[0] + b * u[1])).astype(np.float32)
        my = (yy + amp * (a * u[2] + b * u[3])).astype(np.float32)
        p = cv2.remap(base.astype(np.float32), mx, my, cv2.INTER_LINEAR, cv2.BORDER_REFLECT)
        out.append(np.clip(p + rng.normal(0, 12, p.shape), 0, 255).astype(np.uint8))
    return out


def error_vs_first(transforms, truths, shape: tuple[int, int]) -> np.ndarray:
    """The drift curve: for every plane k, the mean distance (over a 5x5 grid of the plane)
    between where plane k and plane 0 put the same aligned point, in px.

    ``transforms`` are the alignment's (with ``.matrix``: aligned -> jittered pixel), ``truths``
    the jitters of :func:`jitter_stack`."""
    h, w = shape
    ys, xs = np.meshgrid(np.linspace(0, h - 1, 5), np.linspace(0, w - 1, 5), indexing="ij")
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    g0 = np.linalg.inv(truths[0]) @ transforms[0].matrix
    return np.array(
        [
            np.linalg.norm((np.linalg.inv(j) @ t.matrix @ pts)[:2] - (g0 @ pts)[:2], axis=0).mean()
            for t, j in zip(transforms, truths, strict=True)
        ]
    )

"""A smooth elastic correction per tile, solved for all tiles at once.

After the rigid solution, the remaining disagreement between neighbours is measured on small
patches along every accepted overlap (local sub-pixel translation by ECC). Each tile gets a
displacement field on a coarse grid of control points (bilinear between them), ``mosaic =
M p + u(p)``; all fields are found together by least squares: the patches' disagreements must
vanish, the fields must be smooth (second differences), and small (what the overlaps leave free
stays rigid). This is the nonlinear step vEMstitch adds for the distortion of EM tiles, here
global instead of pair by pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from .pairwise import apply, footprint_in, translation

#: Smoothness weight (per second difference) and pull towards zero (per control point).
SMOOTH_WEIGHT = 0.6
ZERO_WEIGHT = 0.2


@dataclass
class TileField:
    """Displacement (mosaic px) on a grid of tile pixels: node (r, c) sits at tile pixel
    ``(c * step[1], r * step[0])`` (x, y); ``dx``, ``dy`` have the grid's shape."""

    step: tuple[float, float]
    dx: np.ndarray
    dy: np.ndarray

    def at(self, pts: np.ndarray) -> np.ndarray:
        """Bilinear displacement (n, 2) at tile pixels ``pts`` (n, 2)."""
        from scipy.ndimage import map_coordinates

        pts = np.asarray(pts, float)
        coords = np.stack([pts[:, 1] / self.step[0], pts[:, 0] / self.step[1]])
        ux = map_coordinates(self.dx, coords, order=1, mode="nearest")
        uy = map_coordinates(self.dy, coords, order=1, mode="nearest")
        return np.stack([ux, uy], axis=1)

    def to_dict(self) -> dict:
        """The TILES.json form of the field."""
        return {
            "step": [float(self.step[0]), float(self.step[1])],
            "dx": np.round(self.dx, 4).tolist(),
            "dy": np.round(self.dy, 4).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> TileField:
        return cls(tuple(d["step"]), np.asarray(d["dx"], float), np.asarray(d["dy"], float))


def _grid(shape: tuple[int, int], nodes: int) -> tuple[int, int, tuple[float, float]]:
    h, w = shape
    gy = max(2, int(round(nodes * h / max(h, w))))
    gx = max(2, int(round(nodes * w / max(h, w))))
    return gy, gx, ((h - 1) / (gy - 1), (w - 1) / (gx - 1))


def _bilinear(pts: np.ndarray, gy: int, gx: int, step) -> tuple[np.ndarray, np.ndarray]:
    """Node indices (n, 4) and weights (n, 4) of points on a gy x gx grid."""
    fy = np.clip(pts[:, 1] / step[0], 0, gy - 1 - 1e-9)
    fx = np.clip(pts[:, 0] / step[1], 0, gx - 1 - 1e-9)
    y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    ty, tx = fy - y0, fx - x0
    idx = np.stack([y0 * gx + x0, y0 * gx + x0 + 1, (y0 + 1) * gx + x0, (y0 + 1) * gx + x0 + 1], 1)
    wts = np.stack([(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx], 1)
    return idx, wts


def local_matches(
    a: np.ndarray, b: np.ndarray, rel: np.ndarray, *, patch: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Corresponding points of tiles ``a`` and ``b`` on patches along their overlap.

    ``rel`` is the current b -> a matrix. Each patch of ``a`` inside the overlap is matched by
    ECC (translation) to ``b``; returns points of ``a`` (n, 2) and the pixels of ``b`` (n, 2)
    that show the same place.
    """
    import cv2

    box = footprint_in(rel, b.shape, a.shape)
    if box is None:
        return np.zeros((0, 2)), np.zeros((0, 2))
    x0, y0, x1, y1 = box[0] + 3, box[1] + 3, box[2] - 3, box[3] - 3
    half = patch / 2
    nx = max(1, int((x1 - x0) // patch))
    ny = max(1, int((y1 - y0) // patch))
    cxs = np.linspace(x0 + min(half, (x1 - x0) / 2), x1 - min(half, (x1 - x0) / 2), nx)
    cys = np.linspace(y0 + min(half, (y1 - y0) / 2), y1 - min(half, (y1 - y0) / 2), ny)
    inv = np.linalg.inv(rel)
    hb, wb = b.shape
    pa, pb = [], []
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-4)
    for cy in cys:
        for cx in cxs:
            px0, py0 = int(max(x0, cx - half)), int(max(y0, cy - half))
            px1, py1 = int(min(x1, cx + half)), int(min(y1, cy + half))
            if px1 - px0 < 12 or py1 - py0 < 12:
                continue
            tmpl = np.ascontiguousarray(a[py0:py1, px0:px1], np.float32)
            if tmpl.std() < 1e-3:
                continue
            w = (inv @ translation(px0, py0))[:2].astype(np.float32)
            gx, gy = np.meshgrid([0, px1 - px0 - 1], [0, py1 - py0 - 1])
            corners = np.stack([gx.ravel(), gy.ravel()], 1) @ w[:, :2].T + w[:, 2]
            if corners.min() < 2 or corners[:, 0].max() > wb - 3 or corners[:, 1].max() > hb - 3:
                continue
            w0 = w.copy()
            try:
                rho, w = cv2.findTransformECC(tmpl, b, w, cv2.MOTION_TRANSLATION, criteria, None, 3)
            except cv2.error:
                continue
            if rho < 0.5 or np.abs(w[:, 2] - w0[:, 2]).max() > 6:
                continue
            c = np.array([(px0 + px1 - 1) / 2, (py0 + py1 - 1) / 2])
            pa.append(c)
            pb.append(w[:, :2].astype(float) @ (c - np.array([px0, py0])) + w[:, 2])
    return np.array(pa).reshape(-1, 2), np.array(pb).reshape(-1, 2)


def solve_fields(
    shapes: list[tuple[int, int]],
    mats: list[np.ndarray],
    matches: list[tuple[int, int, np.ndarray, np.ndarray]],
    *,
    nodes: int = 6,
) -> list[TileField]:
    """Displacement fields of all tiles from matched points.

    Parameters
    ----------
    shapes
        (H, W) of every tile.
    mats
        The rigid solution (tile pixel -> mosaic) of every tile.
    matches
        (i, j, points of i, points of j) that show the same place.
    nodes
        Control points along a tile's longer side.

    Returns
    -------
    list of TileField
        One field per tile (zero for a tile no match touches).
    """
    grids = [_grid(s, nodes) for s in shapes]
    offsets = np.cumsum([0] + [gy * gx for gy, gx, _ in grids])
    n_nodes = int(offsets[-1])
    rows, cols, vals, rhs = [], [], [], []
    r = 0
    for i, j, pi, pj in matches:
        if not len(pi):
            continue
        gi, gj = grids[i], grids[j]
        ii, wi = _bilinear(pi, gi[0], gi[1], gi[2])
        jj, wj = _bilinear(pj, gj[0], gj[1], gj[2])
        mis = apply(mats[j], pj) - apply(mats[i], pi)  # u_i(pi) - u_j(pj) = mis
        m = len(pi)
        rr = r + np.arange(m)
        rows += [np.repeat(rr, 4), np.repeat(rr, 4)]
        cols += [(offsets[i] + ii).ravel(), (offsets[j] + jj).ravel()]
        vals += [wi.ravel(), -wj.ravel()]
        rhs.append(mis)
        r += m
    if r == 0:
        return [TileField(g[2], np.zeros((g[0], g[1])), np.zeros((g[0], g[1]))) for g in grids]
    # smoothness: second differences along rows and columns of every tile's grid
    for t, (gy, gx, _) in enumerate(grids):
        base = offsets[t]
        for y in range(gy):
            for x in range(gx):
                for dy, dx in ((0, 1), (1, 0)):
                    y2, x2 = y + 2 * dy, x + 2 * dx
                    if y2 < gy and x2 < gx:
                        idx = [
                            base + y * gx + x,
                            base + (y + dy) * gx + x + dx,
                            base + y2 * gx + x2,
                        ]
                        rows.append(np.full(3, r))
                        cols.append(np.array(idx))
                        vals.append(SMOOTH_WEIGHT * np.array([1.0, -2.0, 1.0]))
                        rhs.append(np.zeros((1, 2)))
                        r += 1
    rows.append(r + np.arange(n_nodes))
    cols.append(np.arange(n_nodes))
    vals.append(np.full(n_nodes, ZERO_WEIGHT))
    rhs.append(np.zeros((n_nodes, 2)))
    r += n_nodes
    A = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n_nodes)
    )
    b = np.concatenate(rhs)
    N = (A.T @ A).tocsc()
    u = np.stack([spsolve(N, A.T @ b[:, 0]), spsolve(N, A.T @ b[:, 1])], axis=1)
    out = []
    for t, (gy, gx, step) in enumerate(grids):
        block = u[offsets[t] : offsets[t + 1]]
        out.append(TileField(step, block[:, 0].reshape(gy, gx), block[:, 1].reshape(gy, gx)))
    return out

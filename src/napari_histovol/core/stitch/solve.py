"""The global placement: one least-squares solution over every accepted edge at once.

Each tile ``k`` gets a transform ``M_k`` (tile pixel -> mosaic pixel) of the chosen model
(translation, rigid, affine). An edge (i, j) measured as ``T`` (j -> i) says that for points
``p`` of ``j`` inside the overlap, ``M_i T p = M_j p``. All these equations, weighted by the
edge's correlation, are solved together (a sparse linear system), so an error in one edge is
shared out over the loops of the grid instead of being carried down a spanning tree. A very
weak pull of every tile towards its nominal place fixes what the edges leave free (where the
mosaic as a whole sits; where a tile without a reliable edge sits). Edges that disagree with
the solution are dropped one at a time, worst first, and the system solved again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from .pairwise import apply

#: Parameters per tile of each model.
N_PARAMS = {"translation": 2, "rigid": 3, "affine": 6}
#: Weight of the pull towards the nominal place, relative to an edge point of NCC 1.
PRIOR_WEIGHT = 1e-6
#: Weight (per tile side in px) of keeping rotation, scale and shear near the identity.
LINEAR_WEIGHT = 1e-3


@dataclass
class Edge:
    """One measured pair: ``matrix`` maps tile ``j`` pixels to tile ``i`` pixels; ``points`` are
    pixels of ``j`` inside the overlap; ``weight`` the confidence (the overlap NCC)."""

    i: int
    j: int
    matrix: np.ndarray
    points: np.ndarray
    weight: float


def _basis(p: np.ndarray, model: str) -> np.ndarray:
    """(n, 2, k) design blocks: ``M p = centre + pc + G(pc) theta`` for points ``pc`` centred
    on the tile (theta: the deviation from the identity, then the centre's mosaic place)."""
    n = len(p)
    x, y = p[:, 0], p[:, 1]
    one, zero = np.ones(n), np.zeros(n)
    if model == "translation":
        g = np.stack([np.stack([one, zero], -1), np.stack([zero, one], -1)], 1)
    elif model == "rigid":  # a small rotation I + [0 -b; b 0] and t, made exact afterwards
        g = np.stack([np.stack([-y, one, zero], -1), np.stack([x, zero, one], -1)], 1)
    else:
        g = np.stack(
            [
                np.stack([x, y, one, zero, zero, zero], -1),
                np.stack([zero, zero, zero, x, y, one], -1),
            ],
            1,
        )
    return g


def _matrix(theta: np.ndarray, centre: np.ndarray, model: str) -> np.ndarray:
    """3x3 tile-pixel -> mosaic matrix from the parameters (which act on centred pixels)."""
    if model == "translation":
        a = np.eye(2)
        t = theta
    elif model == "rigid":
        angle = np.arctan(theta[0])
        a = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        t = theta[1:3]
    else:
        a = np.eye(2) + np.array([[theta[0], theta[1]], [theta[3], theta[4]]])
        t = np.array([theta[2], theta[5]])
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = t - a @ centre
    return m


def solve_placements(
    shapes: list[tuple[int, int]],
    nominal: np.ndarray,
    edges: list[Edge],
    model: str,
) -> list[np.ndarray]:
    """Least-squares transforms of all tiles (tile pixel -> mosaic pixel) from the edges.

    Parameters
    ----------
    shapes
        (H, W) of every tile.
    nominal
        (n, 2) nominal top-left positions (x, y).
    edges
        The accepted edges.
    model
        ``"translation"``, ``"rigid"`` or ``"affine"``.

    Returns
    -------
    list of numpy.ndarray
        One 3x3 matrix per tile; a tile without edges sits at its nominal place.
    """
    n = len(shapes)
    k = N_PARAMS[model]
    centres = np.array([[w / 2.0, h / 2.0] for h, w in shapes])
    rows, cols, vals, rhs = [], [], [], []
    r = 0

    def add(tile: int, g: np.ndarray, weight: np.ndarray, row0: int) -> None:
        m = len(g)
        for axis in range(2):
            rr = row0 + 2 * np.arange(m) + axis
            for c in range(k):
                rows.append(rr)
                cols.append(np.full(m, tile * k + c))
                vals.append(g[:, axis, c] * weight)

    for e in edges:
        p = np.asarray(e.points, float)
        if not len(p):
            continue
        q = apply(e.matrix, p)
        qc, pc = q - centres[e.i], p - centres[e.j]
        w = np.full(len(p), np.sqrt(max(e.weight, 0.05)))
        add(e.i, _basis(qc, model), w, r)
        add(e.j, -_basis(pc, model), w, r)
        # M p = centre + (I + D) pc: the identity part goes to the right-hand side
        rhs.append(((pc - qc) * w[:, None]).ravel())
        r += 2 * len(p)
    # the weak pull towards the nominal place (corners and centre of every tile)
    wp = np.sqrt(PRIOR_WEIGHT)
    for t, (h, w_) in enumerate(shapes):
        pts = np.array([[0, 0], [w_, 0], [0, h], [w_, h], [w_ / 2, h / 2]], float)
        target = pts + nominal[t]
        pc = pts - centres[t]
        g = _basis(pc, model)
        add(t, g, np.full(len(pts), wp), r)
        rhs.append(((target - pc) * wp).ravel())
        r += 2 * len(pts)
    # rotation, scale and shear: the mosaic as a whole keeps the identity's (a hard pull on
    # the mean over all tiles: otherwise shrinking the whole mosaic would trade placement for
    # smaller residuals), each tile is pulled weakly towards it
    if model != "translation":
        d_cols = [0] if model == "rigid" else [0, 1, 3, 4]
        side = float(np.mean([max(s_) for s_ in shapes]))
        for c in d_cols:
            rows.append(np.full(n, r))
            cols.append(np.arange(n) * k + c)
            vals.append(np.full(n, side))
            rhs.append(np.zeros(1))
            r += 1
            for t in range(n):
                rows.append(np.array([r]))
                cols.append(np.array([t * k + c]))
                vals.append(np.array([LINEAR_WEIGHT * side]))
                rhs.append(np.zeros(1))
                r += 1
    A = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n * k)
    )
    b = np.concatenate(rhs)
    theta = np.atleast_1d(spsolve((A.T @ A).tocsc(), A.T @ b)).reshape(n, k)
    return [_matrix(theta[t], centres[t], model) for t in range(n)]


def edge_residual(edge: Edge, mats: list[np.ndarray]) -> float:
    """RMS distance (mosaic px) between where tile ``i`` and tile ``j`` put the edge's points."""
    p = np.asarray(edge.points, float)
    if not len(p):
        return float("nan")
    d = apply(mats[edge.i], apply(edge.matrix, p)) - apply(mats[edge.j], p)
    return float(np.sqrt((d**2).sum(1).mean()))


def components(n: int, edges: list[Edge]) -> np.ndarray:
    """Connected-component label of every tile over the edges."""
    if not edges:
        return np.arange(n)
    i = np.array([e.i for e in edges])
    j = np.array([e.j for e in edges])
    g = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def robust_solve(
    shapes: list[tuple[int, int]],
    nominal: np.ndarray,
    edges: list[Edge],
    model: str,
    *,
    max_residual: float = 2.0,
    mad_factor: float = 5.0,
) -> tuple[list[np.ndarray], list[Edge], dict[int, float]]:
    """:func:`solve_placements`, dropping the worst edge while it disagrees with the rest.

    An edge is dropped when its residual exceeds both ``max_residual`` px and ``mad_factor``
    times the median residual; one at a time, worst first, re-solving after each.

    Returns
    -------
    tuple
        The matrices, the dropped edges, and the residual (px) of every edge by its index in
        ``edges``.
    """
    active = list(range(len(edges)))
    dropped: list[int] = []
    while True:
        mats = solve_placements(shapes, nominal, [edges[a] for a in active], model)
        res = {a: edge_residual(edges[a], mats) for a in range(len(edges))}
        if not active:
            break
        act = np.array([res[a] for a in active])
        med = float(np.median(act))
        worst = int(np.argmax(act))
        if act[worst] > max(max_residual, mad_factor * med) and len(active) > 1:
            dropped.append(active.pop(worst))
            continue
        break
    return mats, [edges[d] for d in dropped], res

"""Working out a grid from the overlaps when neither a grid nor positions are given.

Every way of laying ``n`` tiles on a rows x cols grid, row by row or column by column, is
scored by how well the tiles it calls neighbours correlate in an overlap of unknown width (up
to half a tile; the mean over its neighbour pairs); the best layout's median neighbour shifts
give the nominal positions.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .layout import TileSource
from .pairwise import phase_candidates

#: Overlap fractions tried between neighbours (each searched over +-half its width).
OVERLAP_GUESSES = (0.03, 0.06, 0.1, 0.15, 0.22, 0.32, 0.45)


def candidate_layouts(n: int) -> list[tuple[int, int, str]]:
    """(rows, cols, order) for every factorisation of ``n``; order ``row`` or ``column``."""
    out = []
    for r in range(1, n + 1):
        if n % r == 0:
            c = n // r
            out.append((r, c, "row"))
            if r > 1 and c > 1:
                out.append((r, c, "column"))
    return out


def _cell(k: int, rows: int, cols: int, order: str) -> tuple[int, int]:
    return (k // cols, k % cols) if order == "row" else (k % rows, k // rows)


def infer_layout(source: TileSource, *, max_overlap: float = 0.5) -> tuple[np.ndarray, dict]:
    """Nominal positions of the tiles from their overlaps.

    Parameters
    ----------
    source
        The tiles, in natural name order.
    max_overlap
        The largest overlap fraction considered.

    Returns
    -------
    tuple
        (n, 2) nominal top-left positions, and what was found: ``rows``, ``cols``, ``order``,
        ``score`` (mean NCC of the layout's neighbours), ``step`` (median shifts).

    Raises
    ------
    InputError
        When the tiles differ in size or no layout has neighbours that overlap.
    """
    n = len(source)
    shapes = {tuple(s) for s in source.shapes}
    if len(shapes) > 1:
        raise InputError(
            "The tiles differ in size, so their grid cannot be worked out; give the grid or "
            "the positions.",
            option="grid",
        )
    h, w = source.shapes[0]
    if n == 1:
        return np.zeros((1, 2)), {"rows": 1, "cols": 1, "order": "row", "score": 1.0}
    cache: dict[tuple[int, int, str], tuple[float, np.ndarray]] = {}

    def measure(i: int, j: int, direction: str):
        key = (i, j, direction)
        if key not in cache:
            side = w if direction == "h" else h
            good = []
            for f in OVERLAP_GUESSES:
                if f > max_overlap:
                    break
                d, s = side * (1 - f), max(6.0, 0.5 * f * side)
                off = (d, 0.0) if direction == "h" else (0.0, d)
                cands = phase_candidates(source.gray(i), source.gray(j), off, s)
                good += [(c[1], c[0][:2, 2]) for c in cands if np.isfinite(c[1])]
            cache[key] = max(good, key=lambda g: g[0]) if good else (float("nan"), np.zeros(2))
        return cache[key]

    best = None
    for rows, cols, order in candidate_layouts(n):
        cell = {_cell(k, rows, cols, order): k for k in range(n)}
        scores, hs, vs = [], [], []
        for (r, c), k in cell.items():
            if (r, c + 1) in cell:
                v, shift = measure(k, cell[(r, c + 1)], "h")
                scores.append(np.nan_to_num(v, nan=0.0))
                hs.append(shift)
            if (r + 1, c) in cell:
                v, shift = measure(k, cell[(r + 1, c)], "v")
                scores.append(np.nan_to_num(v, nan=0.0))
                vs.append(shift)
        # the mean, not the median: a wrong layout is right about most of its neighbours (1 x 6
        # for a 2 x 3 grid calls 4 true pairs and 1 false pair neighbours), so its median is
        # a true pair's and it won on a coin toss (a helper's six skin tiles; 15 of 99
        # simulated grids of skin, EM, nuclei and lung); every false pair lowers the mean
        score = float(np.mean(scores)) if scores else -1.0
        if best is None or score > best[0] + 1e-9:
            best = (score, rows, cols, order, hs, vs, cell)
    score, rows, cols, order, hs, vs, cell = best
    step_h = np.median(hs, axis=0) if hs else np.array([w * 0.9, 0.0])
    step_v = np.median(vs, axis=0) if vs else np.array([0.0, h * 0.9])
    nominal = np.zeros((n, 2))
    for (r, c), k in cell.items():
        nominal[k] = c * step_h + r * step_v
    nominal -= nominal.min(0)
    info = {
        "rows": rows,
        "cols": cols,
        "order": order,
        "score": round(score, 4),
        "step": [step_h.tolist(), step_v.tolist()],
    }
    return nominal, info

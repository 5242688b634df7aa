"""What a person should look at in a stitched section: every edge and every tile graded
accepted / weak / rejected from the placement's QC, and the tiles' outlines and seams in mosaic
pixels, so a viewer can draw them coloured by grade.

Grades
------
edge
    ``rejected``: the pair failed the chance test, the stage-model test or the global
    solution. ``weak``: accepted, but as placed its overlap correlates less than halfway from
    chance to a perfect match (NCC < (1 + chance) / 2), or its two tiles disagree on the
    overlap by more than :data:`WEAK_RESIDUAL_PX`. ``accepted`` otherwise.
tile
    ``rejected``: flagged (no reliable neighbour, or cut off from the main mosaic) or more than
    half of its edges rejected: its place is a guess. ``weak``: placed, but at least one of its
    edges is weak or rejected (look at that seam). ``accepted``: every edge accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .placement import EdgeReport, Placement, TilePlacement

GRADES = ("accepted", "weak", "rejected")
#: An accepted edge whose tiles disagree by more than this (px) on the overlap is weak.
WEAK_RESIDUAL_PX = 1.0


@dataclass(frozen=True)
class TileQC:
    """A tile's grade and the one line that says why (its name, then every edge: neighbour,
    NCC as placed, grade)."""

    name: str
    grade: str
    text: str


def edge_grade(edge: EdgeReport, chance: float) -> str:
    """``accepted``, ``weak`` or ``rejected`` for one edge (see the module docstring).

    Parameters
    ----------
    edge
        The edge's QC.
    chance
        The placement's chance threshold (``Placement.chance_threshold``).
    """
    if edge.status != "accepted":
        return "rejected"
    floor = (1.0 + (chance if np.isfinite(chance) else 0.0)) / 2.0
    if not np.isfinite(edge.ncc) or edge.ncc < floor:
        return "weak"
    if np.isfinite(edge.residual_px) and edge.residual_px > WEAK_RESIDUAL_PX:
        return "weak"
    return "accepted"


def tile_qc(placement: Placement) -> list[TileQC]:
    """The grade of every tile, in tile order (see the module docstring).

    Parameters
    ----------
    placement
        A stitched section.

    Returns
    -------
    list of TileQC
    """
    grades = [edge_grade(e, placement.chance_threshold) for e in placement.edges]
    out = []
    for k, t in enumerate(placement.tiles):
        mine = [(e, g) for e, g in zip(placement.edges, grades, strict=True) if k in (e.i, e.j)]
        bad = sum(g == "rejected" for _, g in mine)
        if t.flags or (mine and 2 * bad > len(mine)):
            grade = "rejected"
        elif any(g != "accepted" for _, g in mine):
            grade = "weak"
        else:
            grade = "accepted"
        parts = []
        for e, g in mine:
            other = placement.tiles[e.j if e.i == k else e.i].name
            ncc = f"{e.ncc:.2f}" if np.isfinite(e.ncc) else "n/a"
            parts.append(f"{other} NCC {ncc} {g}")
        text = f"{t.name}: {grade}" + (f" ({'; '.join(t.flags)})" if t.flags else "")
        if parts:
            text += " | " + ", ".join(parts)
        out.append(TileQC(t.name, grade, text))
    return out


def tile_outline(tile: TilePlacement, per_side: int = 8) -> np.ndarray:
    """The border of a placed tile in mosaic pixels: (4 * per_side, 2) points (x, y) in order
    round it, on the outer edges of its border pixels (pixel centres at whole numbers)."""
    h, w = tile.shape
    s = np.linspace(0, 1, per_side, endpoint=False)
    x0, y0, x1, y1 = -0.5, -0.5, w - 0.5, h - 0.5
    pts = np.concatenate(
        [
            np.stack([x0 + s * (x1 - x0), 0 * s + y0], 1),
            np.stack([0 * s + x1, y0 + s * (y1 - y0)], 1),
            np.stack([x1 - s * (x1 - x0), 0 * s + y1], 1),
            np.stack([0 * s + x0, y1 - s * (y1 - y0)], 1),
        ]
    )
    return tile.to_mosaic(pts)


def seam_lines(placement: Placement) -> list[tuple[np.ndarray, str, str]]:
    """One short line per edge across its overlap, in mosaic pixels: (2x2 array of (x, y)
    end points, grade, label). The line joins the two tiles' centres, clipped to the middle
    half, so it crosses the seam it stands for."""
    out = []
    for e in placement.edges:
        a, b = placement.tiles[e.i], placement.tiles[e.j]
        ca = a.to_mosaic(np.array([[(a.shape[1] - 1) / 2, (a.shape[0] - 1) / 2]]))[0]
        cb = b.to_mosaic(np.array([[(b.shape[1] - 1) / 2, (b.shape[0] - 1) / 2]]))[0]
        mid, half = (ca + cb) / 2, (cb - ca) / 4
        ncc = f"{e.ncc:.2f}" if np.isfinite(e.ncc) else "n/a"
        g = edge_grade(e, placement.chance_threshold)
        label = f"{a.name} - {b.name}: NCC {ncc} {g}" + (f" ({e.reason})" if e.reason else "")
        out.append((np.stack([mid - half, mid + half]), g, label))
    return out

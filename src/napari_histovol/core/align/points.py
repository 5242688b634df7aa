"""Point tables (landmarks, annotations): a CSV with ``x`` and ``y`` columns, other columns kept."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class PointTable:
    """Rows of a points CSV: the header, the rows as text, and the x, y columns as numbers."""

    header: list[str]
    rows: list[list[str]]
    ix: int
    iy: int
    xy: np.ndarray  # (N, 2) float

    def with_xy(self, xy: np.ndarray) -> PointTable:
        """The same table with new x, y values (written with 4 decimals)."""
        rows = []
        for r, (x, y) in zip(self.rows, np.asarray(xy, float), strict=True):
            r = list(r)
            r[self.ix], r[self.iy] = f"{x:.4f}", f"{y:.4f}"
            rows.append(r)
        return replace(self, rows=rows, xy=np.asarray(xy, float))


def read_points_csv(path: str | os.PathLike) -> PointTable:
    """Read a CSV of points with ``x`` and ``y`` columns (any case; other columns are kept).

    Raises
    ------
    InputError
        When the file is missing, not text, empty, lacks x/y columns or has a non-numeric x, y.
    """
    from ..io.text import read_text

    text = read_text(path, what="the points file")
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows:
        raise InputError(f"'{path}' is empty; it needs a header line with x and y columns.")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if "x" not in lower or "y" not in lower:
        raise InputError(f"'{path}' needs x and y columns in its header line; it has {header}.")
    ix, iy = lower.index("x"), lower.index("y")
    body = rows[1:]
    try:
        xy = np.array([[float(r[ix]), float(r[iy])] for r in body], float).reshape(-1, 2)
    except (ValueError, IndexError):
        bad = next(k for k, r in enumerate(body) if not _numeric_xy(r, ix, iy))
        raise InputError(
            f"Row {bad + 2} of '{path}' has no numeric x, y ({body[bad]}); fix or remove it."
        ) from None
    if not np.isfinite(xy).all():
        raise InputError(f"'{path}' has x or y values that are not finite numbers.")
    return PointTable(header, body, ix, iy, xy)


def _numeric_xy(row: list[str], ix: int, iy: int) -> bool:
    try:
        float(row[ix]), float(row[iy])
        return True
    except (ValueError, IndexError):
        return False


def write_points_csv(
    path: str | os.PathLike, table: PointTable, *, overwrite: bool = False
) -> Path:
    """Write a point table as CSV, atomically."""
    from ..io.atomic import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.header)
    w.writerows(table.rows)
    return write_text(path, buf.getvalue(), overwrite=overwrite)


def carry_points(
    zyx: np.ndarray, transforms: list, *, inverse: bool = False, plane_of=None
) -> np.ndarray:
    """Carry points drawn on sections into the aligned volume (or, ``inverse``, back).

    Parameters
    ----------
    zyx
        (N, 3) points: plane index, y, x in pixels (a Points layer's or a shape's vertices).
    transforms
        One :class:`.transforms.SectionTransform` per section (aligned pixel -> section
        pixel, in the coordinates the points are given in).
    inverse
        False: section pixels -> aligned pixels; True: aligned pixels -> section pixels.
    plane_of
        Maps a point's rounded plane index to its section index (planes shown for gaps);
        the identity when None. Points on no section (None) are returned unchanged.

    Returns
    -------
    numpy.ndarray
        (N, 3): the same planes, the mapped y, x (the elastic part included).
    """
    pts = np.asarray(zyx, dtype=np.float64).reshape(-1, 3)
    out = pts.copy()
    planes = np.rint(pts[:, 0]).astype(int)
    for plane in np.unique(planes):
        i = int(plane) if plane_of is None else plane_of(int(plane))
        if i is None or not 0 <= i < len(transforms):
            continue
        sel = planes == plane
        xy = pts[sel][:, [2, 1]]
        t = transforms[i]
        mapped = t.aligned_to_source(xy) if inverse else t.source_to_aligned(xy)
        out[sel, 1] = mapped[:, 1]
        out[sel, 2] = mapped[:, 0]
    return out

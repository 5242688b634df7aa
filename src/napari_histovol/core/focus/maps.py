"""Focus maps: scores per tile, the tile-size bounds, and robust out-of-focus flags.

A focus map scores every ``tile`` x ``tile`` block of a section. Tiles are reduced from a
per-pixel response computed once (a block reduction, no per-tile filtering). Flags mark values
that are outliers on the blurry side, relative to the others (robust z-score on log scores:
sharpness is multiplicative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

#: The smallest tile any metric scores (pixels): below this a tile holds too little texture.
MIN_TILE = 8


@dataclass(frozen=True)
class FocusMap:
    """Scores per tile ``(ny, nx)``, the tissue fraction per tile, the tile size in pixels and
    the out-of-focus flag per tile."""

    scores: np.ndarray
    tissue: np.ndarray
    tile: int
    flags: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))


@dataclass(frozen=True)
class PlaneFocus:
    """What a metric measures on one plane.

    Parameters
    ----------
    score
        Sharpness of the whole plane (higher is sharper; 0 for blank planes).
    focus_map
        Scores per tile when a tile size was given, else None.
    defocus_um
        Estimated distance from focus in µm, for metrics that estimate it (the learned one).
    """

    score: float
    focus_map: FocusMap | None = None
    defocus_um: float | None = None


def check_tile(
    tile: int | None, shape: tuple[int, int], *, min_tile: int = MIN_TILE, metric: str = ""
) -> None:
    """Refuse a tile size that does not fit the planes, before any work starts.

    Parameters
    ----------
    tile
        Tile size in pixels, or None for no focus map (always accepted).
    shape
        ``(height, width)`` of the planes.
    min_tile
        The smallest tile the chosen metric can score.
    metric
        The metric's name, for the message.

    Raises
    ------
    InputError
        When the tile is below ``min_tile`` or larger than the planes' shorter side.
    """
    if tile is None:
        return
    h, w = int(shape[0]), int(shape[1])
    top = min(h, w)
    this = f"the {metric} metric" if metric else "this metric"
    if top < min_tile:
        raise InputError(
            f"The sections are {h} x {w} px, smaller than the smallest tile {this} scores "
            f"({min_tile} px); score whole sections without tiles.",
            option="tile",
        )
    if tile < min_tile or tile > top:
        what = (
            f"is below the smallest tile {this} scores ({min_tile} px)"
            if tile < min_tile
            else f"does not fit in sections of {h} x {w} px"
        )
        raise InputError(
            f"A tile of {tile} px {what}; choose a tile between {min_tile} and {top} px, "
            "or score whole sections without tiles.",
            option="tile",
        )


def tile_grid(shape: tuple[int, int], tile: int) -> tuple[int, int]:
    """Number of tiles ``(ny, nx)`` covering a plane (the last row and column may be partial)."""
    return max(1, math.ceil(shape[0] / tile)), max(1, math.ceil(shape[1] / tile))


def _blocks(a: np.ndarray, tile: int, value: float = 0) -> np.ndarray:
    """``a`` padded to whole tiles and viewed as ``(ny, tile, nx, tile)``."""
    ny, nx = tile_grid(a.shape, tile)
    pad = ((0, ny * tile - a.shape[0]), (0, nx * tile - a.shape[1]))
    return np.pad(a, pad, constant_values=value).reshape(ny, tile, nx, tile)


def tissue_per_tile(mask: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Tissue fraction of each tile and its tissue pixel count (padding counts as no tissue)."""
    m = _blocks(mask.astype(np.float32), tile)
    return m.mean(axis=(1, 3)), m.sum(axis=(1, 3))


def reduce_tiles(resp: np.ndarray, how: str, mask: np.ndarray, tile: int) -> np.ndarray:
    """Reduce a per-pixel response over the tissue of each tile.

    Parameters
    ----------
    resp
        Per-pixel response (float).
    how
        ``"mean"``, ``"var"`` (variance) or ``"nvar"`` (variance / mean).
    mask
        Tissue pixels.
    tile
        Tile size in pixels.
    """
    m = _blocks(mask.astype(np.float32), tile)
    count = np.maximum(m.sum(axis=(1, 3)), 1)
    r = _blocks(resp, tile).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        s1 = (r * m).sum(axis=(1, 3)) / count
        if how == "mean":
            return s1
        s2 = (r * r * m).sum(axis=(1, 3)) / count
        var = np.maximum(s2 - s1 * s1, 0)
        if how == "var":
            return var
        return np.where(s1 > 1e-12, var / np.maximum(s1, 1e-12), 0)


def robust_z(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``(log v - median) / (1.4826 MAD)`` over the valid values; zeros with fewer than 3.

    Parameters
    ----------
    values
        Scores (higher is sharper).
    valid
        Which values take part (others get 0).
    """
    v = np.log(np.maximum(np.asarray(values, float), 1e-12))
    ok = np.ones(v.shape, bool) if valid is None else np.asarray(valid, bool)
    if ok.sum() < 3:
        return np.zeros(v.shape)
    med = np.median(v[ok])
    mad = max(1.4826 * float(np.median(np.abs(v[ok] - med))), 0.05)
    return np.where(ok, (v - med) / mad, 0.0)


def robust_flags(
    values: np.ndarray, *, valid: np.ndarray | None = None, threshold: float = 3.5
) -> np.ndarray:
    """True where a value is an outlier on the blurry side (robust z-score below -threshold)."""
    return robust_z(values, valid) < -threshold


def finish_map(
    scores: np.ndarray, tissue: np.ndarray, tile: int, *, min_tissue: float, threshold: float
) -> FocusMap:
    """A :class:`FocusMap` from raw tile scores: tiles with too little tissue score 0 and take
    no part in the flags."""
    ok = tissue >= min_tissue
    scores = np.nan_to_num(np.where(ok, scores, 0.0))
    return FocusMap(scores, tissue, tile, robust_flags(scores, valid=ok, threshold=threshold))


__all__ = [
    "MIN_TILE",
    "FocusMap",
    "PlaneFocus",
    "check_tile",
    "finish_map",
    "reduce_tiles",
    "robust_flags",
    "robust_z",
    "tile_grid",
    "tissue_per_tile",
]

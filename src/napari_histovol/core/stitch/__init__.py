"""Tile stitching: tiles -> seamless sections, with per-edge QC.

Pairwise registration of every overlapping pair (phase correlation, features + RANSAC, ECC
sub-pixel refinement), a chance test against non-adjacent pairs, one global least-squares
solution over all edges, an optional smooth elastic field per tile, and a mosaic rendered
block by block (linear blending or none) through zarr with bounded memory.
"""

from .blend import BLENDS, mosaic_array, render_region
from .layout import (
    ArrayTiles,
    FileTiles,
    TileSource,
    find_tile_sections,
    grid_positions,
    parse_grid,
)
from .placement import MODELS, Placement, TilePlacement, iter_place_tiles, place_tiles
from .run import StitchResult, iter_stitch, stitch

__all__ = [
    "BLENDS",
    "MODELS",
    "StitchResult",
    "iter_stitch",
    "mosaic_array",
    "render_region",
    "stitch",
    "ArrayTiles",
    "FileTiles",
    "Placement",
    "TilePlacement",
    "TileSource",
    "find_tile_sections",
    "grid_positions",
    "iter_place_tiles",
    "parse_grid",
    "place_tiles",
]

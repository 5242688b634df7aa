"""The mosaic as a lazy dask array: every chunk is rendered from the tiles that cover it.

A chunk maps its pixels back into each covering tile (inverse transform, elastic field
included), samples it bilinearly and blends: ``linear`` weights each tile by its distance to
its own border, so the overlap fades linearly from one tile to the other; ``none`` takes each
pixel from the tile whose border is farthest (a hard seam down the middle of the overlap).
Tiles are read on demand through a small cache, so memory is bounded by a few tiles and
chunks, whatever the size of the mosaic.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..errors import InputError
from .layout import TileSource
from .placement import Placement, outline

BLENDS = ("linear", "none")


def _boxes(placement: Placement) -> np.ndarray:
    out = []
    for t in placement.tiles:
        o = outline(t, 4)
        out.append([*np.floor(o.min(0) - 1), *np.ceil(o.max(0) + 1)])
    return np.array(out)


def render_region(
    source: TileSource,
    placement: Placement,
    y0: int,
    y1: int,
    x0: int,
    x1: int,
    *,
    blend: str = "linear",
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels [y0:y1, x0:x1] of the mosaic (the tiles' dtype; 0 where no tile is).

    Parameters
    ----------
    source
        The tiles' pixels.
    placement
        Where every tile goes.
    y0, y1, x0, x1
        The region in mosaic pixels.
    blend
        ``linear`` or ``none``.
    boxes
        Precomputed tile bounding boxes (x0, y0, x1, y1) in mosaic pixels.
    """
    import cv2

    boxes = _boxes(placement) if boxes is None else boxes
    h, w = y1 - y0, x1 - x0
    c = source.channels
    acc = np.zeros((h, w, c), np.float64)
    wsum = np.zeros((h, w), np.float64)
    best = np.full((h, w), -1.0)
    hit = (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)
    if hit.any():
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=float), np.arange(y0, y1, dtype=float))
        pts = np.stack([gx.ravel(), gy.ravel()], 1)
    for k in np.flatnonzero(hit):
        t = placement.tiles[k]
        p = t.to_tile(pts)
        th, tw = t.shape
        px = p[:, 0].reshape(h, w).astype(np.float32)
        py = p[:, 1].reshape(h, w).astype(np.float32)
        dist = np.minimum.reduce([px + 0.5, tw - 0.5 - px, py + 0.5, th - 0.5 - py])
        inside = dist > 0
        if not inside.any():
            continue
        img = source.pixels(k)
        img = img.astype(np.float32) if img.dtype not in (np.uint8, np.uint16, np.float32) else img
        sampled = cv2.remap(img, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sampled = sampled.reshape(h, w, c).astype(np.float64)
        if blend == "linear":
            wt = np.where(inside, dist, 0.0)
            acc += sampled * wt[..., None]
            wsum += wt
        else:
            take = inside & (dist > best)
            acc[take] = sampled[take]
            best[take] = dist[take]
            wsum[take] = 1.0
    out = np.divide(acc, wsum[..., None], out=np.zeros_like(acc), where=wsum[..., None] > 0)
    dtype = np.dtype(source.dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        out = np.clip(np.round(out), info.min, info.max)
    out = out.astype(dtype)
    return out[..., 0] if c == 1 else out


def mosaic_array(
    source: TileSource, placement: Placement, *, blend: str = "linear", chunk: int = 512
) -> da.Array:
    """The mosaic as a lazy (H, W) or (H, W, 3) dask array, one task per chunk.

    Parameters
    ----------
    source
        The tiles' pixels.
    placement
        Where every tile goes (its ``mosaic_shape`` is the array's shape).
    blend
        ``linear`` (fade across the overlap) or ``none`` (hard seam).
    chunk
        Chunk side in pixels.
    """
    if blend not in BLENDS:
        raise InputError(
            f"Unknown blending {blend!r}; use one of {', '.join(BLENDS)}.", option="blend"
        )
    H, W = placement.mosaic_shape
    boxes = _boxes(placement)
    chunks = (_split(H, chunk), _split(W, chunk))
    if source.channels > 1:
        chunks = chunks + ((source.channels,),)

    def block(block_info=None):
        (ya, yb), (xa, xb) = block_info[None]["array-location"][:2]
        return render_region(source, placement, ya, yb, xa, xb, blend=blend, boxes=boxes)

    return da.map_blocks(
        block, dtype=np.dtype(source.dtype), chunks=chunks, meta=np.array((), source.dtype)
    )


def _split(n: int, c: int) -> tuple[int, ...]:
    full, rest = divmod(int(n), int(c))
    return (c,) * full + ((rest,) if rest else ())

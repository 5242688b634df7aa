"""Objects stored as per-section masks cropped to their box, and the label volume built from
them one section at a time (a large volume is never held whole)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: object id -> section z -> that section's cropped mask
ObjectMasks = dict[int, dict[int, "SectionMask"]]


@dataclass
class SectionMask:
    """One section of one object: a bool mask cropped to its box, top-left at (y0, x0)."""

    y0: int
    x0: int
    mask: np.ndarray

    def paste(self, out: np.ndarray, oy: int = 0, ox: int = 0, value: Any = True) -> None:
        """Set ``value`` where the mask is True in ``out`` (whose top-left is at ``oy, ox``)."""
        h, w = self.mask.shape
        y0, x0 = self.y0 - oy, self.x0 - ox
        ya, xa = max(0, y0), max(0, x0)
        yb, xb = min(out.shape[0], y0 + h), min(out.shape[1], x0 + w)
        if ya < yb and xa < xb:
            sub = self.mask[ya - y0 : yb - y0, xa - x0 : xb - x0]
            out[ya:yb, xa:xb][sub] = value


def crop_mask(mask: np.ndarray, oy: int, ox: int) -> SectionMask | None:
    """``mask`` (top-left at ``oy, ox``) cropped to its True pixels; None when it has none."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    a, b, c, d = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return SectionMask(oy + int(a), ox + int(c), mask[a:b, c:d].copy())


def label_dtype(masks: ObjectMasks) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if max(list(masks) or [0]) < 2**16 else np.uint32)


def label_plane(masks: ObjectMasks, z: int, plane_shape: tuple[int, int], dtype: Any = np.uint32):
    """Section ``z`` of the label volume: object k's pixels hold k (earlier ids win overlaps)."""
    out = np.zeros(plane_shape, dtype)
    for k in sorted(masks, reverse=True):
        m = masks[k].get(z)
        if m is not None:
            m.paste(out, value=k)
    return out


def lazy_labels(masks: ObjectMasks, shape: tuple[int, int, int]):
    """The (Z, Y, X) label volume as a lazy dask array, built one section at a time."""
    import dask
    import dask.array as da

    dtype = label_dtype(masks)
    plane_shape = tuple(shape[1:3])
    planes = [
        da.from_delayed(dask.delayed(label_plane)(masks, z, plane_shape, dtype), plane_shape, dtype)
        for z in range(shape[0])
    ]
    return da.stack(planes)


def voxel_counts(masks: ObjectMasks, plane_shape: tuple[int, int]) -> dict[int, int]:
    """Voxels of every object as written in the label volume (overlaps go to the lower id)."""
    counts = dict.fromkeys(sorted(masks), 0)
    for z in sorted({z for per_z in masks.values() for z in per_z}):
        plane = label_plane(masks, z, plane_shape)
        ids, n = np.unique(plane[plane > 0], return_counts=True)
        for k, c in zip(ids.tolist(), n.tolist(), strict=True):
            counts[k] = counts.get(k, 0) + c
    return counts

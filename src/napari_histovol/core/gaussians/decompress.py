"""Turn a stored Gaussian mixture back into voxels: all of it, a region, or another resolution.

The mixture is continuous, so any grid can be sampled: ``zoom`` scales the number of voxels per
axis (finer than the original too), and a region of interest evaluates only the Gaussians whose
footprint reaches it. The result is a lazy dask array evaluated block by block, so writers
stream it to disk without holding the volume in memory.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from ..errors import InputError
from ..io.meta import VolumeMeta
from ..io.volume import Volume
from .hgm import HgmHeader
from .mixture import GaussianMixture
from .render import render_region

#: Edge of the blocks the decoder evaluates at a time.
DECODE_CHUNK = (64, 256, 256)


def parse_roi(text: str, shape) -> tuple[slice, slice, slice]:
    """``"z0:z1,y0:y1,x0:x1"`` (voxels of the original; empty bounds mean the edge) as slices."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise InputError(
            f"A region needs three ranges z0:z1,y0:y1,x0:x1, not '{text}'.", option="roi"
        )
    out = []
    for part, n, axis in zip(parts, shape, "zyx", strict=True):
        bounds = part.split(":")
        if len(bounds) != 2:
            raise InputError(
                f"The {axis} range '{part}' of the region must look like start:stop.", option="roi"
            )
        try:
            a = int(bounds[0]) if bounds[0] else 0
            b = int(bounds[1]) if bounds[1] else n
        except ValueError:
            raise InputError(
                f"The {axis} range '{part}' of the region must hold integers.", option="roi"
            ) from None
        if not 0 <= a < b <= n:
            raise InputError(
                f"The {axis} range {a}:{b} of the region is outside 0:{n}.", option="roi"
            )
        out.append(slice(a, b))
    return tuple(out)


def output_grid(shape, zoom=1.0, roi=None):
    """Shape, origin, step and start (in the full zoomed grid) of a decode.

    With zoom ``f`` the output has ``round(n * f)`` voxels along an axis of ``n``; output voxel
    ``j`` sits at original coordinate ``(j + 0.5) / f - 0.5`` (voxel centres line up with the
    original's edges, as in image resampling).
    """
    zooms = np.broadcast_to(np.asarray(zoom, dtype=np.float64), (3,))
    if not np.all(zooms > 0):
        raise InputError(f"The zoom must be positive, not {zoom}.", option="zoom")
    full = tuple(max(1, int(round(n * z))) for n, z in zip(shape, zooms, strict=True))
    step = tuple(n / m for n, m in zip(shape, full, strict=True))
    origin = tuple(0.5 * s - 0.5 for s in step)
    if roi is None:
        return full, origin, step, (0, 0, 0)
    start, out_shape = [], []
    for sl, z, m in zip(roi, zooms, full, strict=True):
        a = min(m - 1, int(math.floor(sl.start * z)))
        b = max(a + 1, min(m, int(math.ceil(sl.stop * z))))
        start.append(a)
        out_shape.append(b - a)
    return tuple(out_shape), origin, step, tuple(start)


def _to_dtype(values: np.ndarray, header: HgmHeader) -> np.ndarray:
    dtype = np.dtype(header.dtype)
    lo, hi = header.value_range
    values = np.clip(values, lo, hi)
    if dtype.kind in "iub":
        return np.round(values).astype(dtype)
    return values.astype(dtype)


def decompress_array(
    mix: GaussianMixture,
    header: HgmHeader,
    *,
    zoom=1.0,
    roi=None,
    chunks=DECODE_CHUNK,
) -> da.Array:
    """A lazy array of the decoded volume (or region, or zoomed grid), in the original dtype.

    Every block evaluates only the Gaussians that reach it; a region gives exactly the same
    voxels as the same crop of the whole.
    """
    out_shape, origin, step, start = output_grid(header.shape, zoom, roi)
    chunks = tuple(min(c, n) for c, n in zip(chunks, out_shape, strict=True))

    def block(block_info=None):
        loc = block_info[None]["array-location"]
        b_shape = tuple(b - a for a, b in loc)
        b_start = tuple(s + a for s, (a, _) in zip(start, loc, strict=True))
        return _to_dtype(render_region(mix, b_shape, origin, step, b_start), header)

    return da.map_blocks(
        block, dtype=np.dtype(header.dtype), chunks=da.core.normalize_chunks(chunks, out_shape)
    )


def decompress_volume(mix: GaussianMixture, header: HgmHeader, *, zoom=1.0, roi=None) -> Volume:
    """The decoded data as a :class:`Volume` whose voxel size accounts for the zoom."""
    data = decompress_array(mix, header, zoom=zoom, roi=roi)
    _, origin, step, start = output_grid(header.shape, zoom, roi)
    scale = tuple(v * s for v, s in zip(header.voxel_size, step, strict=True))
    # Planes that fall between the original planes (zoom in z) are interpolated, not measured.
    zs = origin[0] + (start[0] + np.arange(data.shape[0])) * step[0]
    synthetic = tuple(bool(abs(v - round(v)) > 1e-6) for v in zs)
    meta = VolumeMeta(
        scale=scale,
        unit=header.unit,
        z_numbers=tuple(range(start[0], start[0] + data.shape[0])),
        synthetic=synthetic,
        scale_known=header.unit != "pixel",
        spacing_known=header.unit != "pixel",
        extra={
            "gaussian_mixture": {
                "gaussians": len(mix),
                "zoom": [float(z) for z in np.broadcast_to(zoom, (3,))],
                "origin_voxel": [
                    float(o + a * s) for o, a, s in zip(origin, start, step, strict=True)
                ],
                "note": "reconstructed from a lossy Gaussian-mixture file",
            }
        },
    )
    return Volume(data, meta)

"""Turn a stored Gaussian mixture back into voxels: all of it, a region, or another resolution.

The mixture is continuous, so any grid can be sampled: ``zoom`` scales the number of voxels per
axis (finer than the original too), and a region of interest evaluates only the Gaussians whose
footprint reaches it. The result is a lazy dask array evaluated block by block, so writers
stream it to disk without holding the volume in memory.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import InputError
from ..io.bounds import format_bytes
from ..io.meta import VolumeMeta
from ..io.naming import find_gaps
from ..io.volume import Volume
from .hgm import HgmHeader
from .mixture import GaussianMixture
from .render import render_region

#: Edge of the blocks the decoder evaluates at a time.
DECODE_CHUNK = (64, 256, 256)

#: Most voxels a decoded volume may have: a flat index of it must fit an int64.
MAX_DECODE_VOXELS = 2**63 - 1
#: Most bytes a decoded volume may have: 128 TiB, the virtual address space of a 64-bit
#: process (x86-64 and arm64 user space), which a memory-mapped writer (.npy) maps at once.
MAX_DECODE_BYTES = 2**47

_REMEDY = "choose a smaller zoom or decode a region"


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


def _zooms(zoom) -> np.ndarray:
    """The zoom as three finite positive factors (z, y, x), or an :class:`InputError`."""
    try:
        zooms = np.asarray(zoom, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"The zoom must be a number, not {zoom!r}.", option="zoom") from None
    if zooms.size not in (1, 3):
        raise InputError(
            f"The zoom takes one factor or three (z, y, x), not {zooms.size}.", option="zoom"
        )
    zooms = np.broadcast_to(zooms, (3,))
    if not np.all(np.isfinite(zooms) & (zooms > 0)):
        raise InputError(f"The zoom must be positive and finite, not {zoom}.", option="zoom")
    return zooms


def _full_shape(shape, zooms: np.ndarray) -> tuple[int, int, int]:
    """Voxels per axis of the whole zoomed grid (exact integers, however large)."""
    full = []
    for n, z, axis in zip(shape, zooms, "zyx", strict=True):
        if n < 1:
            raise InputError(f"The volume to decode has no voxels along {axis} (shape {shape}).")
        m = int(round(float(n) * float(z)))
        if m < 1:
            raise InputError(
                f"A zoom of {z:g} leaves the {axis} axis of {n} voxels with no voxel; use a zoom "
                f"of at least {1 / n:.3g} there.",
                option="zoom",
            )
        full.append(m)
    return tuple(full)


def output_grid(shape, zoom=1.0, roi=None):
    """Shape, origin, step and start (in the full zoomed grid) of a decode.

    With zoom ``f`` the output has ``round(n * f)`` voxels along an axis of ``n``; output voxel
    ``j`` sits at original coordinate ``(j + 0.5) / f - 0.5`` (voxel centres line up with the
    original's edges, as in image resampling).
    """
    zooms = _zooms(zoom)
    full = _full_shape(shape, zooms)
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


@dataclass(frozen=True)
class DecodeSize:
    """What a decode would produce, known before anything is evaluated."""

    shape: tuple[int, int, int]
    dtype: str
    voxels: int
    raw_bytes: int


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def _resolve_roi(roi, shape):
    return parse_roi(roi, shape) if isinstance(roi, str) else roi


def check_decode_size(
    header: HgmHeader, *, zoom=1.0, roi=None, out: str | os.PathLike | None = None
) -> DecodeSize:
    """The shape and raw size of a decode, refused before any work when it cannot finish.

    Call it before decoding (it evaluates nothing). It refuses zooms that are not positive
    finite numbers or leave an axis with no voxel, outputs with more voxels than an int64 can
    index or more bytes than a memory-mapped writer can map (:data:`MAX_DECODE_BYTES`), and,
    when ``out`` is given, outputs whose raw size exceeds the free space of the disk that
    would hold ``out`` (its nearest existing folder).

    Parameters
    ----------
    header
        The ``.hgm`` header (:func:`.hgm.read_hgm` gives it).
    zoom
        One factor or three (z, y, x) applied to the number of voxels per axis.
    roi
        A region of the original voxels: three slices, or text ``"z0:z1,y0:y1,x0:x1"``.
    out
        Where the decoded volume will be written (None: not written, for example shown lazily).

    Returns
    -------
    DecodeSize
        Output shape, dtype, voxel count and raw bytes.

    Raises
    ------
    InputError
        With the figures and what to do (a smaller zoom or a region), naming the ``zoom``
        parameter as the remedy.
    """
    roi = _resolve_roi(roi, header.shape)
    out_shape = output_grid(header.shape, zoom, roi)[0]
    voxels = math.prod(out_shape)
    itemsize = np.dtype(header.dtype).itemsize
    raw = voxels * itemsize
    zooms = _zooms(zoom)
    factor = f"{zooms[0]:g}" if len(set(zooms)) == 1 else ", ".join(f"{z:g}" for z in zooms)
    region = " of the region" if roi is not None else ""
    what = (
        f"Decoding{region} at zoom {factor} gives a {' x '.join(map(str, out_shape))} "
        f"{header.dtype} volume"
    )
    if voxels > MAX_DECODE_VOXELS or raw > MAX_DECODE_BYTES:
        raise InputError(
            f"{what} of {format_bytes(raw)}, beyond the {format_bytes(MAX_DECODE_BYTES)} any "
            f"output can hold; {_REMEDY}.",
            option="zoom",
        )
    if out is not None:
        where = _nearest_existing(Path(os.fspath(out)).expanduser())
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            free = None
        if free is not None and raw > free:
            raise InputError(
                f"{what} of {format_bytes(raw)}, more than the {format_bytes(free)} free on the "
                f"disk of '{where}'; {_REMEDY}, or write it to a disk with more space.",
                option="zoom",
            )
    return DecodeSize(tuple(out_shape), header.dtype, voxels, raw)


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
    voxels as the same crop of the whole. Sizes no output can hold are refused first (see
    :func:`check_decode_size`; call it with ``out`` to also check the disk).
    """
    roi = _resolve_roi(roi, header.shape)
    check_decode_size(header, zoom=zoom, roi=roi)
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


def plane_record(meta: VolumeMeta) -> dict:
    """What an ``.hgm`` file keeps of a volume's planes: their z numbers, which are generated,
    and which physical sizes are known (a volume with gaps came back numbered 0, 1, 2, ...
    with its sections at the wrong depth, and its interpolated planes counted as measured)."""
    meta = meta.with_planes(len(meta.z_numbers)) if meta.z_numbers else meta
    return {
        "z_numbers": [int(z) for z in meta.z_numbers],
        "synthetic": [bool(s) for s in meta.synthetic],
        "scale_known": bool(meta.scale_known),
        "spacing_known": bool(meta.spacing_known),
    }


def volume_fields(meta: VolumeMeta) -> dict:
    """What :func:`.compress.iter_compress` stores of a volume besides its voxels: its voxel
    size, unit and planes (:func:`plane_record`)."""
    return {"voxel_size": meta.scale, "unit": meta.unit, "planes": plane_record(meta)}


def decompress_volume(mix: GaussianMixture, header: HgmHeader, *, zoom=1.0, roi=None) -> Volume:
    """The decoded data as a :class:`Volume` whose voxel size accounts for the zoom, with the
    original's z numbers, gaps and generated planes where the file records them (see
    :func:`plane_record`) and z is not zoomed."""
    roi = _resolve_roi(roi, header.shape)
    data = decompress_array(mix, header, zoom=zoom, roi=roi)
    _, origin, step, start = output_grid(header.shape, zoom, roi)
    scale = tuple(v * s for v, s in zip(header.voxel_size, step, strict=True))
    # Planes that fall between the original planes (zoom in z) are interpolated, not measured.
    zs = origin[0] + (start[0] + np.arange(data.shape[0])) * step[0]
    synthetic = tuple(bool(abs(v - round(v)) > 1e-6) for v in zs)
    z_numbers = tuple(range(start[0], start[0] + data.shape[0]))
    gaps: tuple[int, ...] = ()
    known = (header.unit != "pixel",) * 2
    planes = header.extra.get("planes") or {}
    if len(planes.get("z_numbers", ())) == header.shape[0]:
        known = (bool(planes["scale_known"]), bool(planes["spacing_known"]))
        if step[0] == 1:  # the original's planes, as they were numbered and flagged
            picked = slice(start[0], start[0] + data.shape[0])
            z_numbers = tuple(int(z) for z in planes["z_numbers"][picked])
            synthetic = tuple(bool(s) for s in planes["synthetic"][picked])
            gaps = find_gaps(z_numbers)
    meta = VolumeMeta(
        scale=scale,
        unit=header.unit,
        z_numbers=z_numbers,
        gaps=gaps,
        synthetic=synthetic,
        scale_known=known[0],
        spacing_known=known[1],
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

"""Writing mosaics with bounded memory: OME-Zarr straight from the lazy mosaic; TIFF and PNG
through a temporary zarr pyramid beside the output, streamed tile by tile (or row band by row
band) from it, so a mosaic larger than the machine's memory can be written."""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_output
from ..io.meta import META_KEY, VolumeMeta
from ..io.pyramid import default_levels
from ..io.volume import Volume
from ..progress import Progress, ProgressGenerator

#: Output kinds by suffix.
MOSAIC_SUFFIXES = {
    ".ome.zarr": "ome-zarr",
    ".zarr": "ome-zarr",
    ".ome.tif": "ome-tiff",
    ".ome.tiff": "ome-tiff",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "png",
}
TILE = 512
#: Memory budget of one block of the temporary zarr writes (a few are in flight at once).
BLOCK_BYTES = 8 * 2**20


def mosaic_format(out: str | os.PathLike) -> str:
    """``ome-zarr``, ``ome-tiff``, ``tiff``, ``png`` or ``folder`` (no known suffix)."""
    name = Path(os.fspath(out)).name.lower()
    for suffix, kind in MOSAIC_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    if name.endswith((".jpg", ".jpeg", ".bmp", ".npy", ".npz", ".h5")):
        raise InputError(
            f"Cannot write a mosaic to '{Path(os.fspath(out)).name}'; use .ome.tif, .ome.zarr, "
            ".tif, .png or a folder name."
        )
    return "folder"


def _volume(mosaic: da.Array, meta: VolumeMeta) -> Volume:
    return Volume(mosaic[None], meta.with_planes(1))


def iter_write_mosaic(
    mosaic: da.Array,
    out: str | os.PathLike,
    *,
    meta: VolumeMeta | None = None,
    overwrite: bool = False,
    workers: int = 2,
    client=None,
) -> ProgressGenerator[Path]:
    """Write one mosaic (H, W[, 3]) in the format told by ``out``'s suffix.

    Parameters
    ----------
    mosaic
        The lazy mosaic.
    out
        ``.ome.zarr`` (multiscale), ``.ome.tif`` (pyramidal), ``.tif`` (one level, tiled) or
        ``.png``.
    meta
        Pixel size and units.
    overwrite
        Replace an existing output.
    workers
        Threads computing chunks.
    client
        A dask.distributed client: chunks are computed on its cluster.
    """
    from ..io.ome_zarr import iter_write_ome_zarr

    meta = meta or VolumeMeta()
    kind = mosaic_format(out)
    if kind == "png" and np.dtype(mosaic.dtype) not in (np.uint8, np.uint16):
        raise InputError(
            f".png holds 8 or 16-bit images but the tiles are {mosaic.dtype}; write .tif."
        )
    if kind == "ome-zarr":
        return (
            yield from iter_write_ome_zarr(
                _volume(mosaic, meta), out, overwrite=overwrite, workers=workers, client=client
            )
        )
    if kind == "folder":
        raise InputError("Give the mosaic a file name ending in .ome.tif, .ome.zarr, .tif or .png.")
    out = Path(os.fspath(out)).expanduser()
    with atomic_output(out, overwrite=overwrite, keep_suffix=True) as tmp:
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{out.name}.zarr-") as scratch:
            n_levels = default_levels((1, *mosaic.shape[:2])) if kind == "ome-tiff" else 1
            levels = yield from _iter_level_stores(
                mosaic, meta, Path(scratch), n_levels, workers=workers, client=client
            )
            if kind == "png":
                yield from _write_png(levels[0], tmp)
            else:
                yield from _write_tiff(levels, tmp, meta, ome=kind == "ome-tiff")
    return out


def _iter_level_stores(
    mosaic: da.Array, meta: VolumeMeta, scratch: Path, n_levels: int, *, workers: int, client
) -> ProgressGenerator[list[da.Array]]:
    """Write the mosaic and each coarser level (2x2 mean, as the volume pyramids) to its own
    temporary zarr, level k+1 read back from level k; returns the levels as lazy arrays.

    Level by level, not all levels from one block: a block that feeds every level at once must
    align with the coarsest level's chunks (512 px x 2^levels), which for a large mosaic is the
    whole mosaic, so memory would grow with it. Here every write is cut into blocks of
    :data:`BLOCK_BYTES`.
    """
    from ..io.ome_zarr import iter_write_ome_zarr, read_ome_zarr

    levels: list[da.Array] = []
    src = mosaic
    for k in range(n_levels):
        store = scratch / f"level{k}.ome.zarr"
        yield from iter_write_ome_zarr(
            _volume(src, meta),
            store,
            n_levels=1,
            xy_chunk=TILE,
            compression="lz4",
            workers=workers,
            client=client,
            block_bytes=BLOCK_BYTES,
        )
        levels.append(read_ome_zarr(store).levels[0][0])
        if k + 1 < n_levels:
            src = _halved(levels[-1])
    return levels


def _halved(level: da.Array) -> da.Array:
    """The next pyramid level of a lazy (H, W[, C]) level: 2x2 mean, odd edges repeated."""
    from ..io.pyramid import halve

    lv = level.rechunk({0: 2 * TILE, 1: 2 * TILE})
    chunks = tuple(tuple((c + 1) // 2 for c in ch) for ch in lv.chunks[:2]) + lv.chunks[2:]
    return lv.map_blocks(lambda b: halve(b[None])[0], chunks=chunks, dtype=lv.dtype)


def _bands(level: da.Array, height: int) -> Iterator[np.ndarray]:
    for y in range(0, level.shape[0], height):
        yield np.asarray(level[y : y + height].compute(scheduler="synchronous"))


def _write_tiff(
    levels: list[da.Array], path: Path, meta: VolumeMeta, *, ome: bool
) -> ProgressGenerator[None]:
    import tifffile

    rgb = levels[0].ndim == 3
    total = sum(int(np.ceil(lv.shape[0] / TILE)) for lv in levels)
    done = 0
    progress: list[Progress] = []

    def tiles(level: da.Array) -> Iterator[np.ndarray]:
        nonlocal done
        for band in _bands(level, TILE):
            for x in range(0, band.shape[1], TILE):
                yield band[:, x : x + TILE]
            done += 1
            progress.append(Progress(done, total, "tiff tiles", stage="write"))

    opts: dict = dict(
        tile=(TILE, TILE),
        photometric="rgb" if rgb else "minisblack",
        compression="zlib",
        compressionargs={"level": 1},
    )
    md: dict = {"axes": "YXS" if rgb else "YX"}
    if meta.unit == "micrometer":
        md.update(
            PhysicalSizeX=meta.scale[2],
            PhysicalSizeXUnit="µm",
            PhysicalSizeY=meta.scale[1],
            PhysicalSizeYUnit="µm",
        )
        opts["resolution"] = (1e4 / meta.scale[2], 1e4 / meta.scale[1])
        opts["resolutionunit"] = "CENTIMETER"
    md["MapAnnotation"] = {META_KEY: json.dumps(meta.with_planes(1).to_dict())}
    base = levels[0]
    with tifffile.TiffWriter(path, bigtiff=True, ome=ome) as tif:
        tif.write(
            tiles(base),
            shape=base.shape,
            dtype=base.dtype,
            subifds=len(levels) - 1,
            metadata=md if ome else None,
            **opts,
        )
        yield from _flush(progress)
        lower = {k: v for k, v in opts.items() if k not in ("resolution", "resolutionunit")}
        for lv in levels[1:]:
            tif.write(
                tiles(lv), shape=lv.shape, dtype=lv.dtype, subfiletype=1, metadata=None, **lower
            )
            yield from _flush(progress)


def _flush(progress: list[Progress]) -> Iterator[Progress]:
    while progress:
        yield progress.pop(0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _write_png(level: da.Array, path: Path) -> ProgressGenerator[None]:
    """A PNG streamed band by band (8 or 16 bit, gray or RGB): rows are filtered (none),
    deflated and written as they come."""
    h, w = level.shape[:2]
    rgb = level.ndim == 3
    depth = 16 if level.dtype == np.uint16 else 8
    ihdr = struct.pack(">IIBBBBB", w, h, depth, 2 if rgb else 0, 0, 0, 0)
    comp = zlib.compressobj(6)
    total = int(np.ceil(h / TILE))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr))
        for k, band in enumerate(_bands(level, TILE)):
            rows = band.astype(">u2") if depth == 16 else band
            raw = rows.reshape(rows.shape[0], -1).view(np.uint8)
            raw = np.concatenate([np.zeros((raw.shape[0], 1), np.uint8), raw], axis=1)
            data = comp.compress(raw.tobytes())
            if data:
                f.write(_png_chunk(b"IDAT", data))
            yield Progress(k + 1, total, "png rows", stage="write")
        f.write(_png_chunk(b"IDAT", comp.flush()) + _png_chunk(b"IEND", b""))


def iter_write_section_tiff(
    mosaic: da.Array, path: Path, meta: VolumeMeta, *, workers: int = 2, client=None
) -> ProgressGenerator[None]:
    """One section of a folder output: a tiled TIFF written through a temporary zarr (``path``
    is written as given; the caller's folder is the atomic unit)."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.zarr-") as scratch:
        (level,) = yield from _iter_level_stores(
            mosaic, meta, Path(scratch), 1, workers=workers, client=client
        )
        yield from _write_tiff([level], path, meta, ome=False)

"""OME-Zarr (NGFF 0.4 on Zarr v2, NGFF 0.5 on Zarr v3): multiscale reading and streaming writing.

Layout written: axes (c,) z, y, x with units in micrometres, one ``scale`` transform per
level (y and x doubling), Blosc-zstd compressed chunks of one plane by ``xy_chunk`` pixels,
``omero`` rendering metadata (RGB channels coloured red/green/blue), and napari-histovol's
own block (z numbers, gaps, synthetic-plane flags, source files) under the ``histovol`` key.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import HistovolWarning, InputError
from ..progress import Progress, ProgressGenerator, drain
from .atomic import atomic_output, write_json
from .guarded import guarded_dask
from .meta import (
    LABELS_KEY,
    META_KEY,
    VolumeMeta,
    is_label_volume,
    meta_from_block,
    unit_to_micrometer,
)
from .naming import check_z_numbers
from .pyramid import default_levels, iter_write_pyramid, level_shapes
from .text import read_text
from .volume import Volume

NGFF_VERSIONS = ("0.4", "0.5")
DEFAULT_NGFF = "0.5"


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """True when ``path`` is a Zarr group with NGFF multiscales metadata."""
    p = Path(path)
    if not p.is_dir():
        return False
    for meta_file in ("zarr.json", ".zattrs"):
        f = p / meta_file
        if f.is_file():
            try:
                d = json.loads(read_text(f, what="Zarr metadata"))
            except (InputError, ValueError):
                return False
            if not isinstance(d, dict):
                return False
            attrs = d.get("attributes", d)
            return "multiscales" in attrs or "multiscales" in attrs.get("ome", {})
    return False


# ---------------------------------------------------------------------------------- reading


def read_ome_zarr(path: str | os.PathLike) -> Volume:
    """Open an OME-Zarr image (NGFF 0.4 or 0.5) lazily, all pyramid levels.

    The returned volume is (Z, Y, X) or (Z, Y, X, C): a ``t`` axis of length 1 is dropped,
    a 2D image becomes one plane, channels move last.
    """
    import zarr

    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise InputError(f"'{path}' does not exist.")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as e:  # noqa: BLE001
        raise InputError(f"'{path}' is not a readable Zarr group ({e}).") from None
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    ms_list = ome.get("multiscales") if isinstance(ome, dict) else None
    if not ms_list:
        raise InputError(f"'{path}' is a Zarr group without OME-NGFF 'multiscales' metadata.")
    try:
        ms = ms_list[0]
        axes = [
            a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", ["z", "y", "x"])
        ]
        units = [a.get("unit") if isinstance(a, dict) else None for a in ms.get("axes", [])] or [
            None
        ] * len(axes)
        datasets = list(ms["datasets"])
        paths = [str(d["path"]) for d in datasets]
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise InputError(
            f"'{path}' has OME-NGFF 'multiscales' metadata that cannot be read ({e!r}); "
            "write the volume again."
        ) from None
    try:
        arrays = [group[p] for p in paths]
    except KeyError as e:
        raise InputError(f"'{path}' names a pyramid level {e} that is missing.") from None
    if any(not hasattr(a, "chunks") for a in arrays) or len({a.ndim for a in arrays}) > 1:
        raise InputError(f"'{path}' has pyramid levels that are not arrays of one shape kind.")
    if arrays and arrays[0].ndim != len(axes):
        raise InputError(
            f"'{path}' declares {len(axes)} axes but its arrays have {arrays[0].ndim}; "
            "write the volume again."
        )
    hv = attrs.get(META_KEY)
    hv_meta = meta_from_block(hv, source=str(path))
    if hv_meta is None:
        hv = None
    _check_chunks(path, datasets, arrays, axes, complete=bool(hv and hv.get(COMPLETE_KEY)))
    z_axis = axes.index("z") if "z" in axes else None
    levels = [
        guarded_dask(a, source=str(path), level=d["path"], z_axis=z_axis)
        for a, d in zip(arrays, datasets, strict=True)
    ]
    try:
        scale0 = _dataset_scale(datasets[0], ms, len(axes))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(
            f"'{path}' has a scale transform that cannot be read ({e!r}); write the volume again."
        ) from None

    omero = attrs.get("omero") or ome.get("omero")
    levels, axes_out, rgb, ch_names = _to_zyxc(levels, axes, omero, hv)

    scale_by_axis = dict(zip(axes, scale0, strict=True))
    unit_by_axis = dict(zip(axes, units, strict=False))
    scale = []
    known = []
    for ax in "zyx":
        s = float(scale_by_axis.get(ax, 1.0))
        f = unit_to_micrometer(unit_by_axis.get(ax))
        scale.append(s * f if f else s)
        known.append(f is not None)
    if hv_meta is not None:
        meta = replace(hv_meta, scale=tuple(scale), rgb=rgb, channel_names=ch_names)
    else:
        meta = VolumeMeta(
            scale=tuple(scale),
            unit="micrometer" if any(known) else "pixel",
            scale_known=known[1] and known[2],
            spacing_known=known[0],
            rgb=rgb,
            channel_names=ch_names,
        )
    meta = meta.with_planes(levels[0].shape[0])
    check_z_numbers(meta.z_numbers, source=str(path))
    limits = _omero_limits(omero)
    if limits:
        meta = replace(meta, extra={**meta.extra, "contrast_limits": limits})
    if "image-label" in attrs or "image-label" in ome:  # labels written by any NGFF tool
        meta = replace(meta, extra={**meta.extra, LABELS_KEY: True})
    return Volume(data=levels[0], meta=meta, levels=tuple(levels))


# Set in the histovol metadata block by the writer, which stores every chunk (all-zero ones
# included): a chunk file missing from such a volume is damage, not an empty chunk.
COMPLETE_KEY = "chunks_complete"
_ZARR_META_FILES = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})


def _stored_keys(root: Path) -> set[str]:
    """Relative paths ('/'-separated) of the files under one array's folder."""
    keys: set[str] = set()
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for f in files:
            if f not in _ZARR_META_FILES:
                keys.add(f if rel == "." else f"{rel}/{f}")
    return keys


def _missing_chunks(root: Path, arr) -> tuple[int, tuple[int, ...] | None, tuple[int, ...]]:
    """(how many chunk files are missing, the first one's grid index, the grid's chunk shape),
    from a listing of the folder: nothing is decoded."""
    import itertools
    import math

    grid_chunks = tuple(getattr(arr, "shards", None) or arr.chunks)
    grid = [math.ceil(n / c) for n, c in zip(arr.shape, grid_chunks, strict=True)]
    md = arr.metadata
    if getattr(md, "zarr_format", 3) == 3:
        encode = md.chunk_key_encoding.encode_chunk_key
    else:
        sep = getattr(md, "dimension_separator", None) or "."

        def encode(idx: tuple[int, ...]) -> str:
            return sep.join(str(i) for i in idx) if idx else "0"

    stored = _stored_keys(root)
    missing, first = 0, None
    for idx in itertools.product(*(range(g) for g in grid)):
        if encode(idx) not in stored:
            missing += 1
            if first is None:
                first = idx
    return missing, first, grid_chunks


def _check_chunks(path: Path, datasets, arrays, axes: list[str], *, complete: bool) -> None:
    """Refuse a volume napari-histovol wrote complete that lacks chunk files; warn once about
    chunks a foreign OME-Zarr does not store (they read as the fill value, as NGFF allows)."""
    total, where = 0, ""
    for d, arr in zip(datasets, arrays, strict=True):
        root = path.joinpath(*str(d["path"]).split("/"))
        if not root.is_dir():
            continue  # not a local folder store: nothing to list
        n, first, chunks = _missing_chunks(root, arr)
        if n and not where:
            plane = ""
            if "z" in axes and first is not None:
                plane = f", plane {first[axes.index('z')] * chunks[axes.index('z')]}"
            where = f"level {d['path']}{plane}"
        total += n
    if not total:
        return
    if complete:
        raise InputError(
            f"'{path}' is missing {total} chunk file(s), the first at {where}; napari-histovol "
            "wrote every chunk, so this copy is incomplete: copy the volume again."
        )
    warnings.warn(
        f"'{path}' stores no data for {total} chunk(s) (the first at {where}); they read as "
        "the fill value, as OME-Zarr allows.",
        HistovolWarning,
        stacklevel=3,
    )


def _omero_limits(omero: dict | None) -> list[float] | None:
    """Display range of the first channel from omero rendering settings (napari contrast)."""
    try:
        w = omero["channels"][0]["window"]
        lo, hi = float(w["start"]), float(w["end"])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    return [lo, hi] if hi > lo else None


def _dataset_scale(ds: dict, ms: dict, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for t in ds.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            scale = [float(s) for s in t["scale"]]
    for t in ms.get("coordinateTransformations", []) or []:
        if t.get("type") == "scale":
            scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
    if len(scale) != ndim:
        raise ValueError(f"{len(scale)} scale values for {ndim} axes")
    return scale


def _to_zyxc(levels, axes, omero, hv):
    """Reorder every level to (z, y, x[, c])."""
    axes = list(axes)
    out = []
    rgb = False
    ch_names: tuple[str, ...] = ()
    for arr in levels:
        a = arr
        ax = list(axes)
        if "t" in ax:
            i = ax.index("t")
            if a.shape[i] != 1:
                raise InputError(
                    f"This OME-Zarr is a time series ({a.shape[i]} time points); open one time point."
                )
            a = a[(slice(None),) * i + (0,)]
            ax.pop(i)
        if "z" not in ax:
            a = a[None]
            ax = ["z"] + ax
        if "c" in ax:
            order = [ax.index(n) for n in ("z", "y", "x", "c")]
            a = a.transpose(order)
        else:
            a = a.transpose([ax.index(n) for n in ("z", "y", "x")])
        out.append(a)
    if out[0].ndim == 4:
        n_c = out[0].shape[3]
        if n_c == 1:
            out = [a[..., 0] for a in out]
        else:
            labels = [
                c.get("label", f"channel {i}")
                for i, c in enumerate((omero or {}).get("channels", []))
            ]
            colors = [str(c.get("color", "")).upper() for c in (omero or {}).get("channels", [])]
            flagged = bool(hv and hv.get("rgb"))
            rgb_colors = colors[:3] == ["FF0000", "00FF00", "0000FF"]
            rgb = n_c == 3 and (flagged or (rgb_colors and out[0].dtype == np.uint8))
            ch_names = (
                tuple(labels) if len(labels) == n_c else tuple(f"channel {i}" for i in range(n_c))
            )
    return out, "zyxc" if out[0].ndim == 4 else "zyx", rgb, ch_names


# ---------------------------------------------------------------------------------- writing


def write_ome_zarr(volume: Volume, out: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a volume as a multiscale OME-Zarr (drains :func:`iter_write_ome_zarr`)."""
    return drain(iter_write_ome_zarr(volume, out, **kwargs))


def iter_write_ome_zarr(
    volume: Volume,
    out: str | os.PathLike,
    *,
    ngff_version: str = DEFAULT_NGFF,
    n_levels: int | None = None,
    xy_chunk: int = 1024,
    compression: str = "zstd",
    compression_level: int = 1,
    workers: int = 2,
    overwrite: bool = False,
    block_bytes: int | None = None,
    resume_key: str | None = None,
    client=None,
) -> ProgressGenerator[Path]:
    """Stream a (lazy) volume into a multiscale OME-Zarr, block by block.

    Parameters
    ----------
    volume
        (Z, Y, X) or (Z, Y, X, C) volume with its metadata.
    out
        Output path, conventionally ending in ``.ome.zarr``. Written under a temporary name
        and renamed when complete.
    ngff_version
        ``"0.5"`` (Zarr v3, default) or ``"0.4"`` (Zarr v2) for older readers.
    n_levels
        Pyramid levels (default: halve until the image fits in 256 pixels).
    xy_chunk
        Chunk size in y and x (default 1024); chunks are one plane deep.
    compression, compression_level
        Blosc codec (``"zstd"``, ``"lz4"``, ``"zlib"``) or ``"none"``; level 1 (default)
        compresses at about 1 GB/s per core, within a few % of level 3's size on images.
    workers
        Threads computing and compressing blocks in parallel.
    overwrite
        Replace an existing output (otherwise an existing ``out`` is an error).
    resume_key
        Make the write resumable: a killed run leaves its temporary output, and a later run
        with the same key skips the blocks already written (a different key starts over).
    client
        A ``dask.distributed`` client: blocks are computed on its cluster.
    """
    if ngff_version not in NGFF_VERSIONS:
        raise InputError(
            f"NGFF version must be one of {', '.join(NGFF_VERSIONS)}, not {ngff_version!r}."
        )
    data = _as_dask(volume.data)
    _check_writable_dtype(data.dtype)
    meta = volume.meta.with_planes(data.shape[0])
    n_levels = n_levels or default_levels(data.shape)
    xy_chunk = int(min(xy_chunk, max(64, max(data.shape[1:3]))))
    shapes = level_shapes(data.shape, n_levels)
    with atomic_output(
        out, overwrite=overwrite, is_dir=True, keep_partial=resume_key is not None
    ) as tmp:
        done_blocks = _resume_state(tmp, resume_key)
        if done_blocks is None:
            arrays = _create_arrays(
                tmp,
                shapes,
                data.dtype,
                meta,
                ngff_version,
                xy_chunk,
                compression,
                compression_level,
            )
            if resume_key is not None:
                write_json(tmp / RESUME_FILE, {"key": resume_key}, overwrite=True)
            done_blocks = set()
        else:
            import zarr

            group = zarr.open_group(str(tmp), mode="r+")
            arrays = [group[str(k)] for k in range(n_levels)]
        writer = ChunkWriter(
            tmp,
            arrays,
            zarr_format=3 if ngff_version == "0.5" else 2,
            codec=_numcodecs_codec(compression, compression_level, data.dtype.itemsize),
        )
        channel_last = data.ndim == 4

        def sink(level: int, region: tuple[slice, slice, slice], block: np.ndarray) -> None:
            if channel_last:
                writer.write(level, (slice(0, block.shape[3]),) + region, np.moveaxis(block, -1, 0))
            else:
                writer.write(level, region, block)

        log = open(tmp / BLOCKS_FILE, "a") if resume_key is not None else None  # noqa: SIM115

        def mark(b) -> None:
            if log is not None:
                log.write(_block_id(b) + "\n")
                log.flush()
                os.fsync(log.fileno())

        kw = {"block_bytes": block_bytes} if block_bytes else {}
        try:
            yield from iter_write_pyramid(
                data,
                sink,
                n_levels=n_levels,
                xy_chunk=xy_chunk,
                workers=workers,
                client=client,
                skip=lambda b: _block_id(b) in done_blocks,
                on_block_done=mark,
                labels=is_label_volume(meta),
                **kw,
            )
        finally:
            if log is not None:
                log.close()
        _write_attrs(tmp, arrays, meta, ngff_version, shapes, data)
        for f in (RESUME_FILE, BLOCKS_FILE):
            (tmp / f).unlink(missing_ok=True)
        yield Progress(1, 1, "metadata", stage="finish")
    return Path(out)


RESUME_FILE = ".histovol-resume.json"
BLOCKS_FILE = ".histovol-blocks.txt"


def _block_id(b) -> str:
    return f"{b.z[0]}-{b.z[1]}:{b.y[0]}-{b.y[1]}:{b.x[0]}-{b.x[1]}"


def _resume_state(tmp: Path, key: str | None) -> set[str] | None:
    """Blocks already written in a partial output made with the same key (None: start anew)."""
    if key is None:
        return None
    try:
        if json.loads((tmp / RESUME_FILE).read_text()).get("key") != key:
            raise ValueError
    except (OSError, ValueError):
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
        return None
    blocks = tmp / BLOCKS_FILE
    if not blocks.is_file():
        return set()
    return set(blocks.read_text(encoding="utf-8", errors="replace").split())


def _as_dask(data) -> da.Array:
    if isinstance(data, da.Array):
        return data
    arr = np.asarray(data)
    return da.from_array(arr, chunks=(1,) + arr.shape[1:])


def _check_writable_dtype(dtype: np.dtype) -> None:
    if np.dtype(dtype).kind not in "uif" or np.dtype(dtype).itemsize > 8:
        raise InputError(f"Cannot write pixel type {dtype}; convert to an integer or float type.")


def _compressor(zarr_format: int, name: str, level: int, itemsize: int):
    if name == "none":
        return None
    if name not in ("zstd", "lz4", "zlib", "lz4hc", "blosclz"):
        raise InputError(f"Unknown compression {name!r}; use zstd, lz4, zlib or none.")
    if zarr_format == 3:
        from zarr.codecs import BloscCodec

        return BloscCodec(
            cname=name,
            clevel=level,
            shuffle="shuffle" if itemsize > 1 else "noshuffle",
            typesize=itemsize,
        )
    import numcodecs

    return numcodecs.Blosc(
        cname=name,
        clevel=level,
        shuffle=numcodecs.Blosc.SHUFFLE if itemsize > 1 else numcodecs.Blosc.NOSHUFFLE,
    )


def _numcodecs_codec(name: str, level: int, itemsize: int):
    if name == "none":
        return None
    import numcodecs

    shuffle = numcodecs.Blosc.SHUFFLE if itemsize > 1 else numcodecs.Blosc.NOSHUFFLE
    return numcodecs.Blosc(cname=name, clevel=level, shuffle=shuffle)


class ChunkWriter:
    """Encode and store whole chunks of the arrays just created, bypassing zarr-python's
    per-item write path (3-4x faster here, and thread-safe because every call covers whole,
    distinct chunks). The bytes are exactly what zarr stores for these arrays: C-order,
    little-endian, Blosc-compressed, edge chunks padded with the fill value. Every chunk is
    written, all-zero ones included, so that a chunk file missing later is known to be damage
    (the histovol metadata block says so with :data:`COMPLETE_KEY`)."""

    def __init__(self, root: Path, arrays, *, zarr_format: int, codec) -> None:
        self.root = Path(root)
        self.arrays = arrays
        self.zarr_format = zarr_format
        self.codec = codec
        self._made: set[Path] = set()

    def _key(self, level: int, idx: tuple[int, ...]) -> Path:
        parts = [str(level)] + (["c"] if self.zarr_format == 3 else []) + [str(i) for i in idx]
        return self.root.joinpath(*parts)

    def write(self, level: int, region: tuple[slice, ...], block: np.ndarray) -> None:
        import itertools

        arr = self.arrays[level]
        chunks, shape = arr.chunks, arr.shape
        ranges = []
        for sl, c, n in zip(region, chunks, shape, strict=True):
            if sl.start % c or not (sl.stop % c == 0 or sl.stop == n):
                raise ValueError(f"region {region} is not aligned to chunks {chunks}")
            ranges.append(range(sl.start // c, -(-sl.stop // c)))
        dtype = block.dtype.newbyteorder("<")
        for idx in itertools.product(*ranges):
            src = tuple(
                slice(i * c - sl.start, min((i + 1) * c, sl.stop) - sl.start)
                for i, c, sl in zip(idx, chunks, region, strict=True)
            )
            piece = block[src]
            if piece.shape != tuple(chunks):
                full = np.zeros(chunks, dtype)
                full[tuple(slice(0, k) for k in piece.shape)] = piece
                piece = full
            raw = np.ascontiguousarray(piece, dtype=dtype)
            payload = self.codec.encode(raw) if self.codec is not None else raw.tobytes()
            path = self._key(level, idx)
            if path.parent not in self._made:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(path.parent)
            path.write_bytes(payload)


def _axes_names(meta: VolumeMeta, ndim: int) -> list[str]:
    return (["c"] if ndim == 4 else []) + ["z", "y", "x"]


def _create_arrays(path, shapes, dtype, meta, version, xy_chunk, compression, level):
    import zarr

    zarr_format = 3 if version == "0.5" else 2
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    comp = _compressor(zarr_format, compression, level, np.dtype(dtype).itemsize)
    arrays = []
    for k, shp in enumerate(shapes):
        if len(shp) == 4:
            shape = (shp[3], shp[0], shp[1], shp[2])
            chunks = (1, 1, min(xy_chunk, shp[1]), min(xy_chunk, shp[2]))
        else:
            shape = tuple(shp)
            chunks = (1, min(xy_chunk, shp[1]), min(xy_chunk, shp[2]))
        kw: dict[str, Any] = {"fill_value": 0}
        if zarr_format == 3:
            kw["dimension_names"] = _axes_names(meta, len(shp))
            kw["compressors"] = [comp] if comp is not None else None
        else:
            kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
            kw["compressors"] = comp
        arrays.append(
            group.create_array(name=str(k), shape=shape, chunks=chunks, dtype=dtype, **kw)
        )
    return arrays


def multiscales_metadata(meta: VolumeMeta, shapes, ndim: int, version: str) -> dict:
    """The NGFF ``multiscales`` entry for our levels (y and x doubling per level)."""
    unit = "micrometer" if meta.unit == "micrometer" else None
    axes = []
    if ndim == 4:
        axes.append({"name": "c", "type": "channel"})
    for name in "zyx":
        a = {"name": name, "type": "space"}
        if unit:
            a["unit"] = unit
        axes.append(a)
    datasets = []
    for k in range(len(shapes)):
        s = [meta.scale[0], meta.scale[1] * 2**k, meta.scale[2] * 2**k]
        t = [0.0, (2**k - 1) * meta.scale[1] / 2, (2**k - 1) * meta.scale[2] / 2]
        if ndim == 4:
            s, t = [1.0] + s, [0.0] + t
        tr = [{"type": "scale", "scale": [float(v) for v in s]}]
        if k:
            tr.append({"type": "translation", "translation": [float(v) for v in t]})
        datasets.append({"path": str(k), "coordinateTransformations": tr})
    labels = is_label_volume(meta)
    ms = {
        "name": "labels" if labels else "image",
        "axes": axes,
        "datasets": datasets,
        "type": "nearest" if labels else "mean",
    }
    if version == "0.4":
        ms["version"] = "0.4"
    return ms


def _omero(meta: VolumeMeta, data: da.Array, coarse: np.ndarray) -> dict:
    n_c = data.shape[3] if data.ndim == 4 else 1
    info = np.iinfo(data.dtype) if data.dtype.kind in "ui" else None
    lo_t, hi_t = (
        (float(info.min), float(info.max)) if info else (float(coarse.min()), float(coarse.max()))
    )
    channels = []
    colors = ["FF0000", "00FF00", "0000FF"] if meta.rgb else ["FFFFFF"] * n_c
    names = list(meta.channel_names) or [f"channel {i}" for i in range(n_c)]
    for i in range(n_c):
        ch = coarse[..., i] if coarse.ndim == 4 else coarse
        if ch.size:
            lo, hi = (float(v) for v in np.percentile(ch, [0.1, 99.9]))
        else:
            lo, hi = lo_t, hi_t
        if meta.rgb and info is not None and data.dtype == np.uint8:
            lo, hi = 0.0, 255.0
        if hi <= lo:
            hi = lo + 1
        channels.append(
            {
                "label": names[i] if i < len(names) else f"channel {i}",
                "color": colors[i] if i < len(colors) else "FFFFFF",
                "active": True,
                "window": {"min": lo_t, "max": hi_t, "start": lo, "end": hi},
            }
        )
    return {"channels": channels, "rdefs": {"model": "color" if meta.rgb else "greyscale"}}


#: The display window (omero) is measured on at most this many planes of the coarsest level,
#: so the memory it takes does not grow with the number of sections.
DISPLAY_SAMPLE_PLANES = 32


def _coarse_sample(arr, *, channel_first: bool) -> np.ndarray:
    """Evenly spaced planes of the coarsest level, (z, y, x[, c])."""
    n = arr.shape[1] if channel_first else arr.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(n, DISPLAY_SAMPLE_PLANES)).round().astype(int))
    if channel_first:
        return np.stack([np.moveaxis(arr[:, int(i)], 0, -1) for i in idx])
    return np.stack([arr[int(i)] for i in idx])


def _write_attrs(path, arrays, meta: VolumeMeta, version: str, shapes, data: da.Array) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    coarse = _coarse_sample(arrays[-1], channel_first=data.ndim == 4)
    ms = multiscales_metadata(meta, shapes, data.ndim, version)
    omero = _omero(meta, data, coarse)
    hv = {**meta.to_dict(), COMPLETE_KEY: True}
    ome: dict[str, Any] = {"multiscales": [ms], "omero": omero}
    if is_label_volume(meta):  # NGFF's label image (a standalone one: no source image)
        ome = {"multiscales": [ms], "image-label": {"version": version}}
    if version == "0.5":
        group.attrs.update({"ome": {"version": "0.5", **ome}, META_KEY: hv})
    else:
        group.attrs.update({**ome, META_KEY: hv})


__all__ = [
    "is_ome_zarr",
    "iter_write_ome_zarr",
    "multiscales_metadata",
    "read_ome_zarr",
    "write_ome_zarr",
]

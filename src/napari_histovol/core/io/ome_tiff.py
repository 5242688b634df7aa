"""Pyramidal OME-TIFF: tiled, compressed, one IFD per plane with SubIFDs for the lower levels.

This is the layout Bio-Formats, QuPath and tifffile read as a multi-resolution image. The
full-resolution planes are streamed from the lazy source once; the lower levels are halved
from them on the fly and spilled to a temporary memory map (at most 1/3 of the volume),
then written after the main planes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import CorruptImageError, InputError
from ..progress import Progress, ProgressGenerator, drain
from .atomic import atomic_output
from .bounds import fits_in_memory, format_bytes
from .guarded import guarded_dask
from .meta import META_KEY, VolumeMeta, is_label_volume, meta_from_block
from .naming import check_z_numbers
from .pyramid import default_levels, halve, level_shapes
from .tiff_metadata import parse_ome_map_annotation, tiff_physical_size
from .volume import Volume

#: Name prefix of the thread that computes the next plane while one is written.
PREFETCH_THREAD = "histovol-ome-tiff-prefetch"
TIFF_COMPRESSIONS = ("zlib", "zstd", "lzw", "jpeg", "none")


# ---------------------------------------------------------------------------------- reading


@contextlib.contextmanager
def _quiet_tifffile():
    """tifffile's logged warnings (a damaged file's bad offsets) held back while it runs."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def read_ome_tiff(path: str | os.PathLike) -> Volume:
    """Open a (pyramidal) OME-TIFF or plain TIFF stack lazily, every resolution level."""
    import tifffile
    import zarr

    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise InputError(f"'{path}' does not exist.")
    try:
        with _quiet_tifffile():  # its warnings on a damaged file would precede our one line
            tif = tifffile.TiffFile(str(path))
    except Exception as e:  # noqa: BLE001
        raise InputError(f"'{path}' is not a readable TIFF file ({e}).") from None
    with tif, _quiet_tifffile():
        try:
            series = tif.series[0]
            axes = series.axes
            n_levels = len(series.levels)
            xml = tif.ome_metadata if tif.is_ome else None
            size_um = tiff_physical_size(tif)
            page0 = series.keyframe
        except Exception as e:  # noqa: BLE001  (tifffile's own errors on a damaged file)
            what = "holds no image" if isinstance(e, IndexError) else f"is damaged ({e})"
            raise CorruptImageError(
                f"'{path}' is a TIFF file that {what}; copy it again or remove it."
            ) from None
        size = path.stat().st_size
        ends = [o + c for o, c in zip(page0.dataoffsets, page0.databytecounts, strict=False) if c]
        if ends and max(ends) > size:
            raise InputError(f"'{path}' is truncated ({size} bytes); copy it again.")
    plane_axis = next((axes.index(a) for a in "ZQIT" if a in axes), None)
    levels = []
    for k in range(n_levels):
        store = tifffile.imread(str(path), aszarr=True, series=0, level=k)
        arr = zarr.open(store, mode="r")
        levels.append(guarded_dask(arr, source=str(path), level=k, z_axis=plane_axis))
    _check_chunk_fits(path, levels[0])
    levels, rgb, ch_names = _to_zyxc(levels, axes)

    meta, own = _histovol_meta(path, xml)
    px, py, pz = size_um.x, size_um.y, size_um.z
    if own:
        # a size our own block says was not known is the placeholder an older version wrote
        # (1.0 µm), not a measurement; a size another tool set since is one
        if not meta.scale_known and px is not None and np.isclose(px, meta.scale[2]):
            px = py = None
        if not meta.spacing_known and pz is not None and np.isclose(pz, meta.scale[0]):
            pz = None
    if pz is None and px is not None and not meta.spacing_known:
        meta = replace(meta, scale=(px, *meta.scale[1:]))  # as for a folder: isotropic guess
    scale = (pz or meta.scale[0], py or px or meta.scale[1], px or meta.scale[2])
    meta = replace(
        meta,
        scale=tuple(float(s) for s in scale),
        rgb=rgb,
        channel_names=ch_names,
        scale_known=meta.scale_known or px is not None,
        spacing_known=meta.spacing_known or pz is not None,
        unit="micrometer" if (px or pz or meta.unit == "micrometer") else "pixel",
    )
    meta = meta.with_planes(levels[0].shape[0])
    check_z_numbers(meta.z_numbers, source=str(path))
    return Volume(data=levels[0], meta=meta, levels=tuple(levels))


def _histovol_meta(path: Path, xml: str | None) -> tuple[VolumeMeta, bool]:
    """napari-histovol's own metadata block from the OME-XML (defaults when absent), and
    whether there was one."""
    hv = parse_ome_map_annotation(xml) if xml else None
    if not hv:
        return VolumeMeta(), False
    try:
        block = json.loads(hv)
    except ValueError:
        block = hv  # refused below with a warning
    meta = meta_from_block(block, source=str(path))
    return (meta, True) if meta is not None else (VolumeMeta(), False)


def _check_chunk_fits(path: Path, level0: da.Array) -> None:
    """Refuse a TIFF whose smallest readable piece (an untiled page) would not fit in memory."""
    need = int(np.prod([max(c, default=0) for c in level0.chunks])) * level0.dtype.itemsize
    ok, avail = fits_in_memory(need)
    if not ok:
        raise InputError(
            f"'{path}' stores planes of {format_bytes(need)} that must be decoded whole, but only "
            f"{format_bytes(avail)} of memory is available; save it tiled (e.g. as a pyramidal "
            "OME-TIFF) or downsampled."
        )


def _to_zyxc(levels: list[da.Array], axes: str):
    out = []
    for a in levels:
        ax = list(axes)
        for name in list(ax):
            if name not in "ZYXSC" and a.shape[ax.index(name)] == 1:
                i = ax.index(name)
                a = a[(slice(None),) * i + (0,)]
                ax.pop(i)
        if "Z" not in ax:
            # a plain multi-page TIFF: tifffile names its page axis Q or I (or T in ImageJ
            # files saved as time series); a single such axis is the section axis.
            generic = [n for n in ax if n in "QIT"]
            if len(generic) == 1:
                ax[ax.index(generic[0])] = "Z"
        extra = [n for n in ax if n not in "ZYXSC"]
        if extra:
            raise InputError(
                f"This TIFF has axes {axes}; only z-stacks of gray or colour planes are supported."
            )
        if "Z" not in ax:
            a = a[None]
            ax = ["Z"] + ax
        chan = [n for n in ax if n in "SC"]
        if len(chan) > 1:
            raise InputError(f"This TIFF has both samples and channels ({axes}); not supported.")
        if chan:
            a = a.transpose([ax.index(n) for n in ("Z", "Y", "X", chan[0])])
            if a.shape[-1] == 1:
                a = a[..., 0]
        else:
            a = a.transpose([ax.index(n) for n in ("Z", "Y", "X")])
        out.append(a)
    rgb = out[0].ndim == 4 and out[0].shape[-1] in (3, 4) and "S" in axes
    if rgb and out[0].shape[-1] == 4:
        out = [a[..., :3] for a in out]
    names: tuple[str, ...] = ()
    if out[0].ndim == 4:
        names = (
            ("red", "green", "blue")
            if rgb
            else tuple(f"channel {i}" for i in range(out[0].shape[-1]))
        )
    return out, rgb, names


# ---------------------------------------------------------------------------------- writing


def write_ome_tiff(volume: Volume, out: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a pyramidal OME-TIFF (drains :func:`iter_write_ome_tiff`)."""
    return drain(iter_write_ome_tiff(volume, out, **kwargs))


def iter_write_ome_tiff(
    volume: Volume,
    out: str | os.PathLike,
    *,
    n_levels: int | None = None,
    tile: int = 512,
    compression: str = "zlib",
    compression_level: int | None = None,
    workers: int = 2,
    overwrite: bool = False,
) -> ProgressGenerator[Path]:
    """Stream a volume into a tiled pyramidal OME-TIFF (BigTIFF, SubIFD levels).

    Parameters
    ----------
    compression
        ``zlib`` (deflate, the default: read by every OME reader), ``zstd``, ``lzw``,
        ``jpeg`` (lossy, 8-bit only) or ``none``.
    tile
        Tile size in pixels (a multiple of 16).
    """

    if compression not in TIFF_COMPRESSIONS:
        raise InputError(
            f"Unknown TIFF compression {compression!r}; use one of {', '.join(TIFF_COMPRESSIONS)}."
        )
    data = (
        volume.data if isinstance(volume.data, da.Array) else da.from_array(np.asarray(volume.data))
    )
    if data.dtype.kind not in "uif":
        raise InputError(f"Cannot write pixel type {data.dtype} to TIFF.")
    if compression == "jpeg" and data.dtype != np.uint8:
        raise InputError("JPEG compression holds only 8-bit images; use zlib or zstd.")
    if tile % 16:
        raise InputError(f"The TIFF tile size must be a multiple of 16, not {tile}.")
    meta = volume.meta.with_planes(data.shape[0])
    n_levels = n_levels or default_levels(data.shape)
    shapes = level_shapes(data.shape, n_levels)
    rgb = data.ndim == 4 and data.shape[3] == 3
    if data.ndim == 4 and not rgb:
        raise InputError(
            "OME-TIFF output supports gray or RGB volumes; write multichannel data to OME-Zarr."
        )
    comp = None if compression == "none" else compression
    if compression_level is None and comp in ("zlib", "zstd"):
        compression_level = 1  # ~3x faster than the libraries' default, a few % larger
    comp_args = {"level": compression_level} if compression_level is not None and comp else None
    options: dict[str, Any] = dict(
        tile=(tile, tile),
        photometric="rgb" if rgb else "minisblack",
        compression=comp,
        compressionargs=comp_args,
        maxworkers=workers,
        buffersize=32 * 2**20,  # bytes compressed per pass; tifffile's default holds ~0.5 GB
    )
    if meta.scale_known:
        options["resolution"] = (1e4 / meta.scale[2], 1e4 / meta.scale[1])
        options["resolutionunit"] = "CENTIMETER"
    ome_meta = _ome_metadata(meta, rgb)
    with (
        atomic_output(out, overwrite=overwrite) as tmp,
        tempfile.TemporaryDirectory(
            dir=Path(tmp).parent, prefix=f".{Path(out).name}.levels-"
        ) as spill_dir,
    ):
        # tifffile pulls tiles from a generator inside one write() call; run it in a thread
        # and relay progress (and cancellation) through a queue.
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()
        args = (tmp, data, shapes, Path(spill_dir), options, ome_meta, tile, events, cancel)
        args += (is_label_volume(meta),)
        thread = threading.Thread(target=_write_tiff_thread, args=args, daemon=True)
        thread.start()
        try:
            while True:
                item = events.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            thread.join()
    return Path(out)


class _Cancelled(Exception):
    pass


def _write_tiff_thread(
    tmp, data, shapes, spill_dir, options, ome_meta, tile, events, cancel, labels=False
) -> None:
    import tifffile

    spills: list[_PlaneSpill] = []
    stack = contextlib.ExitStack()
    try:
        n_levels = len(shapes)
        Z = data.shape[0]
        total = Z * n_levels
        for k in range(1, n_levels):
            spills.append(_PlaneSpill(spill_dir / f"l{k}.raw", shapes[k], data.dtype))

        def planes() -> Iterator[np.ndarray]:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix=PREFETCH_THREAD) as pre:
                nxt = pre.submit(_compute_plane, data, 0)
                for z in range(Z):
                    plane = nxt.result()
                    if cancel.is_set():
                        raise _Cancelled
                    if z + 1 < Z:
                        nxt = pre.submit(_compute_plane, data, z + 1)
                    lvl = plane[None]
                    for k in range(1, n_levels):
                        lvl = halve(lvl, labels=labels)
                        spills[k - 1][z] = lvl[0]
                    yield plane
                    events.put(Progress(z + 1, total, f"plane {z + 1}/{Z}", stage="write"))

        def tiles_of(plane_iter: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            for plane in plane_iter:
                H, W = plane.shape[:2]
                for y in range(0, H, tile):
                    for x in range(0, W, tile):
                        yield plane[y : y + tile, x : x + tile]

        lower = {k: v for k, v in options.items() if k not in ("resolution", "resolutionunit")}
        # closed here, in this thread, whatever happens: a generator left suspended by a failed
        # write (a full disk) keeps its prefetch thread, and when the garbage collector
        # finalises it later inside one of dask's workers, the finaliser waits for a plane
        # that only that worker could compute (a deadlock that hung the process at exit)
        source = planes()
        stack.callback(source.close)
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            tif.write(
                tiles_of(source),
                shape=shapes[0],
                dtype=data.dtype,
                subifds=n_levels - 1,
                metadata=ome_meta,
                **options,
            )
            for k in range(1, n_levels):
                if cancel.is_set():
                    raise _Cancelled
                lvl = spills[k - 1]
                tif.write(
                    tiles_of(lvl.planes()),
                    shape=lvl.shape,
                    dtype=lvl.dtype,
                    subfiletype=1,
                    metadata=None,
                    **lower,
                )
                events.put(Progress(Z * (k + 1), total, f"level {k}", stage="write"))
        events.put(None)
    except BaseException as e:  # noqa: BLE001 - relayed to the consuming generator
        stack.close()  # before the error (and the frames it holds) leaves this thread
        events.put(e)
    finally:
        stack.close()
        for sp in spills:
            sp.close()


class _PlaneSpill:
    """Planes of one lower pyramid level in a raw temporary file, written and read with
    pwrite/pread (not memory-mapped, so they do not count towards resident memory)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.plane_shape = self.shape[1:]
        self.plane_bytes = int(np.prod(self.plane_shape)) * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def __setitem__(self, z: int, plane: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(plane, self.dtype).tobytes())
        offset = z * self.plane_bytes
        while view:  # a short write is retried, so a full disk raises ENOSPC
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def planes(self) -> Iterator[np.ndarray]:
        for z in range(self.shape[0]):
            buf = os.pread(self.fd, self.plane_bytes, z * self.plane_bytes)
            yield np.frombuffer(buf, self.dtype).reshape(self.plane_shape)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _compute_plane(data: da.Array, z: int) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(data[z].compute(scheduler="threads")))


def _ome_metadata(meta: VolumeMeta, rgb: bool) -> dict[str, Any]:
    md: dict[str, Any] = {"axes": "ZYXS" if rgb else "ZYX"}
    # only what is known: a placeholder 1.0 µm read back as a measured size (an unknown
    # section spacing became a known 1 µm, and the isotropic reconstruction took 125 rows for
    # one section step)
    if meta.unit == "micrometer" and meta.scale_known:
        md.update(
            PhysicalSizeX=meta.scale[2],
            PhysicalSizeXUnit="µm",
            PhysicalSizeY=meta.scale[1],
            PhysicalSizeYUnit="µm",
        )
    if meta.unit == "micrometer" and meta.spacing_known:
        md.update(PhysicalSizeZ=meta.scale[0], PhysicalSizeZUnit="µm")
    syn = ",".join(str(z) for z in meta.synthetic_z)
    md["MapAnnotation"] = {META_KEY: json.dumps(meta.to_dict()), "synthetic_planes": syn or "none"}
    return md

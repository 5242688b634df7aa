"""``.npy`` volumes: memory-mapped reading; streaming writing; metadata in ``NAME.npy.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import InputError
from ..progress import Progress, ProgressGenerator, drain
from .atomic import atomic_output, check_output, preallocate, write_json
from .meta import META_KEY, VolumeMeta, meta_from_block
from .naming import check_z_numbers
from .pyramid import iter_write_pyramid
from .text import read_text
from .volume import Volume


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON file that carries a ``.npy`` volume's metadata (``vol.npy`` -> ``vol.npy.json``)."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def read_npy(path: str | os.PathLike) -> Volume:
    """Open a ``.npy`` file memory-mapped (nothing is read until used)."""
    path = Path(os.fspath(path)).expanduser()
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"'{path}' does not exist.") from None
    except ValueError as e:
        raise InputError(f"'{path}' is not a readable .npy array ({e}).") from None
    if arr.dtype.kind not in "uifb":
        raise InputError(f"'{path}' holds {arr.dtype} values, not an image.")
    side = sidecar_path(path)
    meta = None
    if side.is_file():
        text = read_text(side, what="the metadata file of a .npy volume")
        try:
            d = json.loads(text)
        except ValueError as e:
            raise InputError(
                f"'{side}' is not valid JSON ({e}); repair it or remove it to open the .npy "
                "without its metadata."
            ) from None
        meta = meta_from_block(d.get(META_KEY, d) if isinstance(d, dict) else d, source=str(side))
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and meta is None and arr.shape[-1] in (3, 4) and min(arr.shape[:2]) >= 8:
        arr = arr[None]  # one RGB(A) image
    if arr.ndim not in (3, 4):
        raise InputError(f"'{path}' has shape {arr.shape}; expected (z, y, x) or (z, y, x, c).")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    rgb = arr.ndim == 4 and arr.shape[-1] in (3, 4)
    data = da.from_array(arr, chunks=(1,) + arr.shape[1:])
    if rgb and arr.shape[-1] == 4:
        data = data[..., :3]
    if meta is None:
        meta = VolumeMeta(rgb=rgb, channel_names=("red", "green", "blue") if rgb else ())
    meta = meta.with_planes(arr.shape[0])
    check_z_numbers(meta.z_numbers, source=str(side))
    return Volume(data=data, meta=meta)


def save_array(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` whose disk space is reserved first, so that a full disk is an ``ENOSPC``
    :class:`OSError` (``np.save`` reports a short write without an error number). Use it on
    a temporary path from :func:`~.atomic.atomic_output`."""
    arr = np.asarray(array)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=arr.dtype, shape=arr.shape)
    try:
        preallocate(path, mm.offset + mm.nbytes)
        mm[...] = arr
        mm.flush()
    finally:
        del mm
    return Path(os.fspath(path))


def _pwrite_all(fd: int, raw: bytes, offset: int) -> None:
    view = memoryview(raw)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_npy(volume: Volume, out: str | os.PathLike, **kwargs) -> Path:
    """Write a volume to ``.npy`` (drains :func:`iter_write_npy`)."""
    return drain(iter_write_npy(volume, out, **kwargs))


def iter_write_npy(
    volume: Volume, out: str | os.PathLike, *, overwrite: bool = False, workers: int = 2
) -> ProgressGenerator[Path]:
    """Stream a volume into a memory-mapped ``.npy`` plus its ``.npy.json`` metadata."""
    data = (
        volume.data if isinstance(volume.data, da.Array) else da.from_array(np.asarray(volume.data))
    )
    meta = volume.meta.with_planes(data.shape[0])
    out = Path(out)
    check_output(sidecar_path(out), overwrite=overwrite)
    with atomic_output(out, overwrite=overwrite) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=data.dtype, shape=data.shape)
        offset, nbytes = int(mm.offset), int(mm.nbytes)
        del mm  # the header is written; the data goes in with pwrite, not through a map
        # reserve the disk first: a full disk is then an error now, not a SIGBUS (a map over a
        # sparse file) or a short file half way through
        preallocate(tmp, offset + nbytes)
        plane_bytes = int(np.prod(data.shape[1:])) * data.dtype.itemsize
        fd = os.open(tmp, os.O_RDWR)
        try:

            def sink(level: int, region: tuple[slice, ...], block: np.ndarray) -> None:
                # blocks span whole planes (xy_chunk covers y and x): contiguous bytes
                raw = np.ascontiguousarray(block, dtype=data.dtype).tobytes()
                _pwrite_all(fd, raw, offset + region[0].start * plane_bytes)

            yield from iter_write_pyramid(
                data, sink, n_levels=1, xy_chunk=max(data.shape[1:3]), workers=workers
            )
        finally:
            os.close(fd)
        write_json(sidecar_path(out), {META_KEY: meta.to_dict()}, overwrite=overwrite)
        yield Progress(1, 1, "metadata", stage="finish")
    return out

"""``.npy`` volumes: memory-mapped reading; streaming writing; metadata in ``NAME.npy.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import InputError
from ..progress import Progress, ProgressGenerator, drain
from .atomic import atomic_output, check_output
from .meta import META_KEY, VolumeMeta
from .pyramid import iter_write_pyramid
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
        try:
            d = json.loads(side.read_text())
            meta = VolumeMeta.from_dict(d.get(META_KEY, d))
        except ValueError as e:
            raise InputError(f"'{side}' is not valid JSON ({e}).") from None
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
    return Volume(data=data, meta=meta.with_planes(arr.shape[0]))


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

        def sink(level, region, block):
            mm[region] = block

        yield from iter_write_pyramid(
            data, sink, n_levels=1, xy_chunk=max(data.shape[1:3]), workers=workers
        )
        mm.flush()
        with atomic_output(sidecar_path(out), overwrite=overwrite) as side_tmp:
            side_tmp.write_text(json.dumps({META_KEY: meta.to_dict()}, indent=1))
        yield Progress(1, 1, "metadata", stage="finish")
    return out

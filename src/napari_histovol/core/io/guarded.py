"""Lazy arrays whose reads fail in one sentence.

A damaged chunk of an OME-Zarr (or tile of an OME-TIFF) raises a decoder error (``blosc``,
``zstd``, ``zlib``...) only when it is read, often deep inside a dask computation. The arrays
here wrap the storage so that such a failure becomes one :class:`InputError` naming the
volume, the pyramid level and the plane, wherever the read happens.
"""

from __future__ import annotations

import uuid
from typing import Any

import dask.array as da
import numpy as np

from ..errors import HistovolError, InputError


class GuardedArray:
    """Array-like view of a chunked store array (zarr) that turns read failures into
    :class:`InputError`.

    Parameters
    ----------
    array
        The storage array (``shape``, ``dtype``, ``chunks``, ``__getitem__``).
    source
        The volume's path, for the message.
    level
        The pyramid level (its dataset path), for the message.
    z_axis
        Index of the plane axis in ``array`` (None when it has none).
    """

    def __init__(self, array: Any, *, source: str, level: str | int, z_axis: int | None) -> None:
        self.array = array
        self.source = source
        self.level = level
        self.z_axis = z_axis
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in array.chunks)

    def _plane(self, key: Any) -> str:
        if self.z_axis is None or not isinstance(key, tuple) or len(key) <= self.z_axis:
            return ""
        k = key[self.z_axis]
        if isinstance(k, slice):
            start = k.start or 0
            stop = self.shape[self.z_axis] if k.stop is None else k.stop
            return f", plane {start}" if stop - start <= 1 else f", planes {start}-{stop - 1}"
        return f", plane {int(k)}"

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except (HistovolError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - any decoder or storage failure is damage
            detail = f"{type(e).__name__}: {e}".strip().rstrip(".")
            raise InputError(
                f"'{self.source}' has damaged data at level {self.level}{self._plane(key)} "
                f"({detail}); copy the volume again or write it anew."
            ) from None


def guarded_dask(array: Any, *, source: str, level: str | int, z_axis: int | None) -> da.Array:
    """A dask array over ``array``, one task per storage chunk, whose reads fail in one
    sentence (see :class:`GuardedArray`)."""
    g = GuardedArray(array, source=source, level=level, z_axis=z_axis)
    return da.from_array(
        g,
        chunks=g.chunks,
        name=f"histovol-read-{uuid.uuid4().hex}",
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * g.ndim, dtype=g.dtype),
    )

"""Volume: a lazy (dask) array with its metadata and, optionally, a multiscale pyramid."""

from __future__ import annotations

from dataclasses import dataclass, field

import dask.array as da

from .meta import VolumeMeta


@dataclass(frozen=True)
class Volume:
    """A (Z, Y, X) or (Z, Y, X, C) volume.

    Parameters
    ----------
    data
        Full-resolution array (dask, lazily read).
    meta
        Scale, z numbers, gaps, synthetic flags, source files.
    levels
        The multiscale pyramid, full resolution first (``(data,)`` when single-scale).
    """

    data: da.Array
    meta: VolumeMeta
    levels: tuple[da.Array, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.levels:
            object.__setattr__(self, "levels", (self.data,))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

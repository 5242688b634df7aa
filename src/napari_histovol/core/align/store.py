"""Per-section arrays kept on disk, a few in memory: alignment's state does not grow in memory
with the number of sections (issue 11: ``build`` peak memory grew 1.8 MB a section)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np


class SectionStore:
    """A list-like store of one array per section: written once as ``.npy`` in a scratch
    folder, read back on demand, the ``cache`` most recently used kept in memory.

    Parameters
    ----------
    n
        Number of sections.
    folder
        Where to keep the arrays (a temporary folder when None); :meth:`close` removes it if
        this store created it.
    cache
        How many arrays to keep in memory.
    """

    def __init__(self, n: int, folder: str | os.PathLike | None = None, *, cache: int = 6) -> None:
        self.n = n
        self._tmp = None
        if folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="histovol-sections-")
            folder = self._tmp.name
        self.folder = Path(folder)
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._size = max(1, cache)
        self._present: set[int] = set()
        self._lock = threading.RLock()  # pair registrations read from several threads

    def __len__(self) -> int:
        return self.n

    def _path(self, i: int) -> Path:
        return self.folder / f"{i:06d}.npy"

    def _remember(self, i: int, arr: np.ndarray) -> None:
        self._cache[i] = arr
        self._cache.move_to_end(i)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)

    def __setitem__(self, i: int, arr: np.ndarray) -> None:
        with self._lock:
            np.save(self._path(i), arr, allow_pickle=False)
            self._present.add(i)
            self._remember(i, arr)

    def __getitem__(self, i: int) -> np.ndarray:
        if i < 0:
            i += self.n
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
            if i not in self._present:
                raise IndexError(f"section {i} was not stored")
            arr = np.load(self._path(i), allow_pickle=False)
            self._remember(i, arr)
            return arr

    def close(self) -> None:
        """Forget the cached arrays and remove the folder if this store created it."""
        self._cache.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        elif self._created:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._created = False

    def __enter__(self) -> SectionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Where the tiles are: the tiles of a folder (grouped by section), their pixels, and their
nominal places (a grid, a positions file, or worked out from the overlaps).

Section numbers in tile names. A tile name carries its section when one of its numbers is led
by a section word, ``s``, ``sec``, ``section``, ``slice``, ``z`` or ``t`` (any case, an optional
``_`` or ``-`` between word and number), and that number takes more than one value across the
folder: ``sec03_tile05.png``, ``S2-r1-c3.tif``, ``ImageName_t01_p07.tif``. Names without such a
number (``1_2_3.png``, ``tile_07.tif``) make one section. Within a section the tiles are in
natural name order (``tile_2`` before ``tile_10``).
"""

from __future__ import annotations

import csv
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.imagefile import ImageInfo, decode, probe
from ..io.naming import natural_key
from ..io.slices import list_section_files

_SECTION_NUMBER = re.compile(r"(?:^|[^a-z])(?:section|slice|sec|s|z|t)[_-]?(\d+)", re.IGNORECASE)
_GRID = re.compile(r"^\s*(\d+)\s*[x×X,]\s*(\d+)\s*$")


# ----------------------------------------------------------------------------- tile pixels


class TileSource:
    """The pixels of a set of tiles, read on demand.

    Subclasses give :meth:`pixels`; :meth:`gray` (float32, the registration image) is derived
    from it. Decoded tiles are kept in a small least-recently-used cache, so memory stays
    bounded by ``cache`` tiles whatever the number of tiles.
    """

    names: list[str]
    shapes: list[tuple[int, int]]
    channels: int
    dtype: np.dtype

    def __init__(self, cache: int = 12) -> None:
        self._cache_size = cache
        self._cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:  # sent to dask workers without its cache and lock
        d = dict(self.__dict__)
        d["_cache"] = OrderedDict()
        d.pop("_lock", None)
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def _load(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cached(self, key: tuple[int, str], make) -> np.ndarray:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    def pixels(self, i: int) -> np.ndarray:
        """Tile ``i`` as stored: (H, W) or (H, W, 3)."""
        return self._cached((i, "px"), lambda: self._load(i))

    def gray(self, i: int) -> np.ndarray:
        """Tile ``i`` as one float32 channel (the mean of the colours), for registration."""

        def make() -> np.ndarray:
            px = self.pixels(i)
            g = px.mean(axis=2) if px.ndim == 3 else px
            return np.ascontiguousarray(g, dtype=np.float32)

        return self._cached((i, "gray"), make)


class ArrayTiles(TileSource):
    """Tiles held in memory (tests, benchmarks, the Python API).

    Parameters
    ----------
    arrays
        One (H, W) or (H, W, 3) array per tile, all of one dtype and channel count.
    names
        A name per tile (default ``tile_000``...).
    """

    def __init__(self, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> None:
        super().__init__(cache=4)
        if not len(arrays):
            raise InputError("There are no tiles to stitch.")
        self.arrays = [np.asarray(a) for a in arrays]
        self.names = (
            list(names) if names is not None else [f"tile_{k:03d}" for k in range(len(arrays))]
        )
        self.shapes = [tuple(a.shape[:2]) for a in self.arrays]
        self.channels = 3 if self.arrays[0].ndim == 3 else 1
        self.dtype = self.arrays[0].dtype
        _check_alike(self.names, [a.ndim for a in self.arrays], [a.dtype for a in self.arrays])

    def _load(self, i: int) -> np.ndarray:
        return self.arrays[i]


class FileTiles(TileSource):
    """Tiles read from image files (headers probed at once, pixels decoded on demand).

    Parameters
    ----------
    paths
        The tile files, in the order of the layout.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], cache: int = 12) -> None:
        super().__init__(cache=cache)
        if not len(paths):
            raise InputError("There are no tiles to stitch.")
        self.paths = [str(p) for p in paths]
        self.names = [os.path.basename(p) for p in self.paths]
        infos: list[ImageInfo] = [probe(p) for p in self.paths]
        self.infos = infos
        self.shapes = [tuple(i.shape) for i in infos]
        self.channels = infos[0].channels
        self.dtype = np.dtype(infos[0].dtype)
        _check_alike(self.names, [i.channels for i in infos], [np.dtype(i.dtype) for i in infos])

    @property
    def pixel_size_um(self) -> float | None:
        """The pixel size the first tile's header gives (µm), or None."""
        return self.infos[0].pixel_size_um

    def _load(self, i: int) -> np.ndarray:
        return decode(self.paths[i], self.infos[i])


def _check_alike(names, kinds, dtypes) -> None:
    for n, k, d in zip(names, kinds, dtypes, strict=True):
        if k != kinds[0] or d != dtypes[0]:
            raise InputError(
                f"Tile '{n}' is {'colour' if k in (3,) else 'gray'} {d} but '{names[0]}' is "
                f"{'colour' if kinds[0] in (3,) else 'gray'} {dtypes[0]}; all tiles of a mosaic "
                "must have one pixel type."
            )


# ------------------------------------------------------------------------ tiles of a folder


@dataclass(frozen=True)
class SectionTiles:
    """The tile files of one section: its z number (None for a folder of one section) and the
    paths in natural name order."""

    z: int | None
    paths: tuple[str, ...]


def tile_section_number(name: str) -> int | None:
    """The section number a tile name carries (see the module docstring), or None.

    >>> tile_section_number("sec03_tile05.png"), tile_section_number("ImageName_t01_p07.tif")
    (3, 1)
    >>> tile_section_number("1_2_3.png") is None
    True
    """
    stem = os.path.basename(name).split(".")[0]
    found = _SECTION_NUMBER.findall(stem)
    return int(found[0]) if found else None


def find_tile_sections(folder: str | os.PathLike) -> list[SectionTiles]:
    """The tiles of a folder grouped by section (see the module docstring for the rule).

    Raises
    ------
    InputError
        When the folder does not exist, holds no images, or some tiles carry a section number
        and others do not.
    """
    paths = sorted(list_section_files(folder), key=lambda p: natural_key(os.path.basename(p)))
    numbers = [tile_section_number(p) for p in paths]
    if len({n for n in numbers}) <= 1:
        return [SectionTiles(None, tuple(paths))]
    if None in numbers:
        odd = paths[numbers.index(None)]
        raise InputError(
            f"Tile '{os.path.basename(odd)}' carries no section number but other tiles in "
            f"'{folder}' do; put each section's tiles in the same naming scheme."
        )
    groups: dict[int, list[str]] = {}
    for p, n in zip(paths, numbers, strict=True):
        groups.setdefault(int(n), []).append(p)  # type: ignore[arg-type]
    return [SectionTiles(z, tuple(groups[z])) for z in sorted(groups)]


# ----------------------------------------------------------------------------- nominal layout


def parse_grid(text: str) -> tuple[int, int]:
    """``"3x4"`` -> (3, 4): rows and columns of a grid.

    Raises
    ------
    InputError
        When the text is not two whole numbers of at least 1 joined by ``x``.
    """
    m = _GRID.match(str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise InputError(
            f"'{text}' is not a grid; give rows and columns as ROWSxCOLS, for example 3x4.",
            option="grid",
        )
    return int(m.group(1)), int(m.group(2))


def grid_positions(
    shapes: Sequence[tuple[int, int]], grid: tuple[int, int], overlap: float
) -> np.ndarray:
    """Nominal top-left (x, y) of tiles laid row by row, left to right, on a ``grid``.

    Parameters
    ----------
    shapes
        (H, W) of every tile, in layout order.
    grid
        (rows, cols); rows x cols must equal the number of tiles.
    overlap
        Fraction of a tile shared with its neighbour, in [0, 1).

    Returns
    -------
    numpy.ndarray
        (n, 2) float array of x, y positions in pixels.
    """
    rows, cols = grid
    n = len(shapes)
    if rows * cols != n:
        raise InputError(
            f"A {rows}x{cols} grid holds {rows * cols} tiles but there are {n}; give the grid "
            "of this folder's tiles.",
            option="grid",
        )
    if not 0 <= overlap < 1:
        raise InputError(
            f"The overlap must be a fraction in [0, 1), not {overlap}.", option="overlap"
        )
    h = max(s[0] for s in shapes)
    w = max(s[1] for s in shapes)
    k = np.arange(n)
    return np.stack([(k % cols) * w * (1 - overlap), (k // cols) * h * (1 - overlap)], axis=1)


def read_positions(path: str | os.PathLike, names: Sequence[str]) -> np.ndarray:
    """Nominal top-left positions from a ``file,x,y`` CSV, in the order of ``names``.

    Raises
    ------
    InputError
        When the file is missing or malformed, names a tile that is not there, or leaves a
        tile out.
    """
    from ..io.text import read_text

    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise InputError(f"The positions file '{path}' does not exist.", option="positions")
    rows = list(csv.reader(read_text(path, what="the positions file").splitlines()))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows or [c.strip().lower() for c in rows[0][:3]] != ["file", "x", "y"]:
        raise InputError(
            f"'{path.name}' must start with the header file,x,y (one tile per line).",
            option="positions",
        )
    where: dict[str, tuple[float, float]] = {}
    for line, r in enumerate(rows[1:], start=2):
        try:
            name, x, y = r[0].strip(), float(r[1]), float(r[2])
        except (IndexError, ValueError):
            raise InputError(
                f"Line {line} of '{path.name}' is not file,x,y with two numbers: {','.join(r)!r}.",
                option="positions",
            ) from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(f"Line {line} of '{path.name}' has a position that is not finite.")
        where[os.path.basename(name)] = (x, y)
    unknown = sorted(set(where) - set(names))
    if unknown:
        raise InputError(
            f"'{path.name}' names '{unknown[0]}', which is not among the tiles; check the file "
            "names.",
            option="positions",
        )
    missing = [n for n in names if n not in where]
    if missing:
        raise InputError(
            f"'{path.name}' gives no position for tile '{missing[0]}'"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "; add a line file,x,y for every tile.",
            option="positions",
        )
    return np.array([where[n] for n in names], dtype=float)

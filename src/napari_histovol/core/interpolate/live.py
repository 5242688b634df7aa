"""A live interpolated volume: planes synthesised on demand, flows cached per pair.

:func:`live_interpolate` plans the same output as :func:`~.stack.iter_interpolate` (z numbers,
synthetic flags, plane sources, scale / (N + 1)) but builds a dask array with one chunk per
output plane. A measured plane's task reads its section; a generated plane's task takes the
pair's two sections and flow from a :class:`PairCache` (estimated on the first visit of the
pair) and synthesises only its own t. Nothing is computed until a plane is asked for, so a
viewer that shows one plane computes one plane, and memory does not grow with the number of
frames: the cache holds at most a few pairs, whatever N is. Flows do not depend on N, so a
cache shared between builds makes a change of the frame count cheap.

The tasks call the cache and the model runner in this process: the graph is for the local
threaded scheduler (a viewer, a writer in the same process), not for a distributed cluster
(use :func:`~.stack.iter_interpolate` there).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import dask.array as da
import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from .flow import PairFlow, cast_like, estimate_pair_flow
from .plan import Plan, make_plan
from .stack import InterpolationResult, check_method, frame_at, interpolated_meta

#: Default bound of a :class:`PairCache`: 1 GiB (eight pairs of 2048 px RGB sections).
CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class PairEntry:
    """What a generated plane needs from its pair: the two sections and (``flow``) their flow."""

    a: np.ndarray
    b: np.ndarray
    flow: PairFlow | None = None
    #: ``learned``: the model's planes between a and b (inclusive) and their times t
    grid: np.ndarray | None = None
    grid_t: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the sections and the flow."""
        n = self.a.nbytes + self.b.nbytes + (self.grid.nbytes if self.grid is not None else 0)
        if self.flow is not None:
            f = self.flow
            n += f.f_ab.nbytes + f.f_ba.nbytes + f.vis_a.nbytes + f.vis_b.nbytes
        return int(n)


class PairCache:
    """A bounded, thread-safe least-recently-used cache of :class:`PairEntry` by pair.

    Parameters
    ----------
    max_bytes
        Entries are dropped, least recently used first, while they hold more than this;
        the newest entry is always kept (a single pair larger than the bound still works).

    Notes
    -----
    Two threads asking for the same missing pair at once compute it once: the second waits
    for the first. ``computed`` counts the pairs computed (cache misses), ``hits`` the
    lookups answered from the cache, ``planes`` the generated planes made with it.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, PairEntry] = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self.computed = 0
        self.hits = 0
        self.planes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached entries."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def get(self, key: Hashable, make: Callable[[], PairEntry]) -> PairEntry:
        """The entry for ``key``, made with ``make()`` (once, whatever the threads) if absent.

        Parameters
        ----------
        key
            Identifies the pair: source, the two section indices and the method.
        make
            Computes the entry; called outside the lock, so other pairs are served meanwhile.

        Returns
        -------
        PairEntry
            The cached or newly made entry.
        """
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry
                waiting = self._pending.get(key)
                if waiting is None:
                    done = self._pending[key] = threading.Event()
                    break
            waiting.wait()  # another thread is making it; look again when it is done
        try:
            entry = make()
        except BaseException:
            with self._lock:
                del self._pending[key]
            done.set()
            raise
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self.computed += 1
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                total -= old.nbytes
            del self._pending[key]
        done.set()
        return entry

    def count_plane(self) -> None:
        """Record one generated plane made from a cached pair."""
        with self._lock:
            self.planes += 1

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        with self._lock:
            self._entries.clear()


class _Planes:
    """The callable behind every chunk of a live volume: plane i of the plan."""

    def __init__(
        self, source, plan, *, method, runner, tile, cache, source_key, z_numbers=()
    ) -> None:
        self.source = source  # (Z, Y, X[, C]) dask array, one chunk per section
        self.plan = plan
        self.z_numbers = tuple(z_numbers)
        self.kept = plan.kept
        self.method = method
        self.runner = runner
        self.tile = tile
        self.cache = cache
        self.source_key = source_key

    def section(self, i: int) -> np.ndarray:
        # Read here (on a cache miss only) rather than as a graph dependency, so a cached pair
        # costs no read. A compute nested in a task: synchronous on this thread, and with no
        # callbacks (napari's dask cache is a global callback whose bookkeeping is not safe
        # for two computes of the same keys at once).
        return np.asarray(self.source[i].compute(scheduler="synchronous", callbacks=()))

    def entry(self, ia: int, ib: int) -> PairEntry:
        def make() -> PairEntry:
            a, b = self.section(ia), self.section(ib)
            if self.method == "learned":
                return self._learned_entry(ia, ib, a, b)
            flow = estimate_pair_flow(a, b) if self.method == "flow" else None
            return PairEntry(a, b, flow)

        model = id(self.runner) if self.method == "learned" else None
        return self.cache.get((self.source_key, ia, ib, self.method, model), make)

    def _learned_entry(self, ia: int, ib: int, a: np.ndarray, b: np.ndarray) -> PairEntry:
        """The learned model's planes between sections ia and ib, from a window of the pair
        and one measured neighbour on each side (the spline under the model needs them)."""
        from ..isotropic.apply import reconstruct_window

        k = self.kept.index(ia)
        window = self.kept[max(0, k - 1) : k + 3]
        stack = np.stack([a if i == ia else b if i == ib else self.section(i) for i in window])
        zs = [self.z_numbers[i] for i in window]
        pos, planes = reconstruct_window(self.runner, stack, zs)
        za, zb = self.z_numbers[ia], self.z_numbers[ib]
        inside = (pos >= za - 1e-9) & (pos <= zb + 1e-9)
        return PairEntry(a, b, grid=planes[inside], grid_t=(pos[inside] - za) / (zb - za))

    def plane(self, i: int) -> np.ndarray:
        f = self.plan.frames[i]
        if not f.synthetic:
            return self.section(f.source)
        e = self.entry(f.a, f.b)
        if e.grid is not None:
            self.cache.count_plane()
            return cast_like(_on_grid(e.grid, e.grid_t, f.t), e.a.dtype)
        out = frame_at(
            e.a, e.b, f.t, method=self.method, flow=e.flow, runner=self.runner, tile=self.tile
        )
        self.cache.count_plane()
        return out

    def __call__(self, index: np.ndarray) -> np.ndarray:
        return np.stack([self.plane(int(i)) for i in np.ravel(index)])


def _on_grid(grid: np.ndarray, grid_t: np.ndarray, t: float) -> np.ndarray:
    """The plane at time t, linearly between the two grid planes around it."""
    k = int(np.clip(np.searchsorted(grid_t, t, side="right") - 1, 0, len(grid_t) - 2))
    w = (t - grid_t[k]) / (grid_t[k + 1] - grid_t[k])
    return (1 - w) * grid[k] + w * grid[k + 1]


def live_interpolate(
    volume: Volume,
    *,
    frames_between: int = 0,
    replace_z: tuple[int, ...] | list[int] = (),
    method: str = "flow",
    model_dir: str | os.PathLike | None = None,
    runner=None,
    tile: int = 512,
    cache: PairCache | None = None,
    source_key: Hashable | None = None,
) -> InterpolationResult:
    """The interpolated volume as a lazy dask array with one chunk per output plane.

    Parameters
    ----------
    volume
        (Z, Y, X[, C]) sections with their z numbers (gaps are missing numbers).
    frames_between, replace_z, method, model_dir, tile
        As for :func:`~.stack.iter_interpolate`; the output and its metadata are the same.
    runner
        A running :class:`~.model.ModelRunner` for ``method="model"`` (kept open: the caller
        closes it). Without one, a runner is started from ``model_dir`` and the result owns it
        (:meth:`InterpolationResult.close` stops it). For ``method="learned"``: the trained
        :class:`~napari_histovol.core.isotropic.network.AxialModel` (required); a pair's
        planes come from the model on its grid over the pair and a neighbour on each side,
        and planes between grid planes linearly from them, so one model serves every N.
    cache
        Where pairs' sections and flows are kept; share one between builds so that a new frame
        count, or a new list of sections to replace, reuses the flows already estimated.
        A private cache is made when None.
    source_key
        Identifies ``volume``'s data in the cache (default: its dask name). Give the same key
        only for the same data.

    Returns
    -------
    InterpolationResult
        The lazy volume (its ``plan``; ``runner`` when this call started one). Computing plane
        i computes only that plane (and, on a pair's first visit, that pair's flow).

    Raises
    ------
    InputError
        For an unknown method, a model method without model, or a plan that cannot be made.
    """
    check_method(method)
    if method == "model" and runner is None and not model_dir:
        raise InputError(
            "The model method needs a model folder (a TensorFlow SavedModel); give its path.",
            option="model_dir",
        )
    if method == "learned" and runner is None:
        raise InputError(
            "The learned method needs a trained model; train one on these sections first."
        )
    meta = volume.meta.with_planes(volume.shape[0])
    plan = make_plan(meta.z_numbers, frames_between=frames_between, replace=tuple(replace_z))
    owned = None
    if method == "model" and runner is None:
        from .model import ModelRunner

        runner = owned = ModelRunner(model_dir)
    cache = cache if cache is not None else PairCache()
    source = volume.data.rechunk((1,) + tuple(volume.shape[1:]))
    key = source_key if source_key is not None else volume.data.name
    planes = _Planes(
        source,
        plan,
        method=method,
        runner=runner,
        tile=tile,
        cache=cache,
        source_key=key,
        z_numbers=meta.z_numbers,
    )
    out = _plane_array(planes, plan, volume, name=_name(key, plan, method, tile, cache, runner))
    return InterpolationResult(
        Volume(out, interpolated_meta(meta, plan, method=method)), plan, owned
    )


def _name(key, plan: Plan, method: str, tile: int, cache, runner) -> str:
    text = repr((key, plan.frames, method, tile, id(cache), id(runner)))
    return f"live-interpolate-{method}-{hashlib.sha1(text.encode()).hexdigest()[:20]}"


def _plane_array(planes: _Planes, plan: Plan, volume: Volume, *, name: str) -> da.Array:
    """One chunk per planned plane, each made by ``planes`` from its index."""
    n = len(plan.frames)
    index = da.arange(n, chunks=1, dtype=np.int64)
    extra = volume.shape[1:]
    return da.map_blocks(
        planes,
        index,
        dtype=volume.dtype,
        chunks=((1,) * n,) + tuple((s,) for s in extra),
        new_axis=list(range(1, 1 + len(extra))),
        name=name,
        meta=np.empty((0,) * volume.data.ndim, volume.dtype),
    )


__all__ = ["CACHE_BYTES", "PairCache", "PairEntry", "live_interpolate"]

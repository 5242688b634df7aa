"""napari's global dask cache is shared by napari's slicing and the plugin's worker threads;
dask's Cache is not thread safe (dask#10396): one computation finishing clears every task's
start time and the other thread's next task raised KeyError (seen in the Sections tab test).
Ground truth: the interleaving that raises, replayed on the cache's callbacks in order."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest


def _interleaved(cache) -> None:
    """Thread A starts a task, thread B's computation finishes, A's task ends."""
    key = ("x", 0)
    cache._start({})
    cache._pretask(key, {}, {})
    cache._finish({}, {}, False)  # B done: start times cleared
    cache._posttask(key, np.zeros(4), {}, {"dependencies": {key: set()}}, 0)


def test_napari_dask_cache_survives_another_threads_finish():
    from dask.cache import Cache
    from napari.utils import _dask_utils

    from napari_histovol._dask_cache import guard_napari_dask_cache

    with pytest.raises(KeyError):
        _interleaved(Cache(1e6))  # dask's own cache: the race napari's slicing hit
    assert guard_napari_dask_cache()
    assert guard_napari_dask_cache()  # idempotent
    _interleaved(_dask_utils._DASK_CACHE)  # guarded: the task is simply not cached
    # and the cache still caches and serves what it computes
    a = da.from_array(np.arange(16.0), chunks=4)
    with _dask_utils.resize_dask_cache(1e6):
        assert float((a * 2).sum().compute()) == 240.0
        assert float((a * 2).sum().compute()) == 240.0

"""napari's dask cache, made safe to share with the plugin's worker threads.

napari computes every slice of a dask-backed layer inside its global ``dask.cache.Cache``
context, and dask's callbacks are global: a section a worker thread computes at the same
moment runs with the same cache. That cache is not thread safe (dask issue #10396, napari
#5591): when one computation finishes it clears the start times of every task, and the other
thread's next finished task raises ``KeyError`` in ``Cache._posttask``, in napari's slicing or
in the worker (seen in this plugin's Sections tab test, one run in several). The guard lets a
task whose start time is gone skip the cache (it is only a cache) instead of raising, as dask's
proposed fix (dask PR #10432) does.
"""

from __future__ import annotations

import sys

_GUARDED = "_histovol_thread_tolerant"


def guard_napari_dask_cache() -> bool:
    """Make napari's global dask cache tolerate computations on several threads.

    Returns
    -------
    bool
        Whether napari's cache is guarded (False when napari's dask helpers are not loaded:
        nothing computes in napari's cache then).
    """
    module = sys.modules.get("napari.utils._dask_utils")
    cache = getattr(module, "_DASK_CACHE", None)
    if cache is None:
        return False
    if getattr(cache, _GUARDED, False):
        return True
    plain_posttask = cache._posttask

    def _posttask(key, value, dsk, state, id):  # noqa: A002 - dask's callback signature
        # another thread's computation finished and cleared the start times: not cached
        if key not in cache.starttimes:
            return
        plain_posttask(key, value, dsk, state, id)

    # dask reads the callbacks from the instance each time the cache context is entered
    cache._posttask = _posttask
    setattr(cache, _GUARDED, True)
    return True

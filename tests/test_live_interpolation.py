"""The live interpolated volume (core): the same planes and metadata as the per-pair build,
one chunk per plane computed on demand, flows cached per pair (bounded, thread-safe)."""

from __future__ import annotations

import threading
import time

import dask.array as da
import numpy as np
import pytest

from napari_histovol.core.errors import InputError
from napari_histovol.core.interpolate import (
    PairCache,
    interpolate,
    interpolate_pair,
    live_interpolate,
)
from napari_histovol.core.interpolate.live import PairEntry
from napari_histovol.core.io.meta import VolumeMeta
from napari_histovol.core.io.volume import Volume

from .conftest import tissue


def _volume(rgb=True, zs=(1, 2, 4, 5), shape=(48, 64)):
    stack = np.stack([tissue(shape, i, rgb=rgb) for i in range(len(zs))])
    meta = VolumeMeta(rgb=rgb, z_numbers=tuple(zs), scale=(6.0, 0.5, 0.5)).with_planes(len(zs))
    return Volume(da.from_array(stack, chunks=(2,) + stack.shape[1:]), meta), stack


@pytest.mark.parametrize(
    "method, frames, replace", [("flow", 2, ()), ("linear", 0, ()), ("flow", 1, (2,))]
)
def test_live_volume_equals_the_per_pair_build(method, frames, replace):
    vol, _ = _volume()
    live = live_interpolate(vol, frames_between=frames, replace_z=replace, method=method)
    ref = interpolate(vol, frames_between=frames, replace_z=replace, method=method)
    assert live.volume.meta == ref.volume.meta  # z numbers, flags, sources, scale / (N + 1)
    assert live.volume.data.chunks[0] == (1,) * live.volume.shape[0]
    np.testing.assert_array_equal(live.volume.data.compute(), ref.volume.data.compute())


def test_a_plane_is_computed_alone_and_flows_are_reused_across_frame_counts():
    vol, stack = _volume(rgb=False)
    cache = PairCache()
    five = live_interpolate(vol, frames_between=5, cache=cache)
    k = next(i for i, f in enumerate(five.plan.frames) if f.synthetic and f.a == 1)
    f = five.plan.frames[k]
    got = np.asarray(five.volume.data[k])
    np.testing.assert_array_equal(got, interpolate_pair(stack[1], stack[2], [f.t])[0])
    assert (cache.computed, cache.planes) == (1, 1)  # one pair, one plane: nothing else
    fifty = live_interpolate(vol, frames_between=50, cache=cache)
    assert fifty.volume.shape[0] == 4 * 51 + 1
    j = next(i for i, g in enumerate(fifty.plan.frames) if g.synthetic and g.a == 1)
    np.asarray(fifty.volume.data[j : j + 3])
    assert (cache.computed, cache.hits, cache.planes) == (1, 3, 4)  # the flow was reused


def test_the_cache_is_bounded_and_computes_a_pair_once_across_threads():
    a = np.zeros((100, 100), np.uint8)
    entry_bytes = PairEntry(a, a).nbytes
    cache = PairCache(max_bytes=2 * entry_bytes)
    calls = []

    def make():
        calls.append(1)
        time.sleep(0.05)
        return PairEntry(a.copy(), a.copy())

    threads = [threading.Thread(target=cache.get, args=("p", make)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.computed == 1 and cache.hits == 7
    for key in ("q", "r", "s"):
        cache.get(key, make)
    assert len(cache) == 2 and cache.nbytes == 2 * entry_bytes
    assert "s" in cache and "p" not in cache  # least recently used dropped first


def test_a_failed_pair_is_not_cached_and_bad_requests_are_input_errors():
    cache = PairCache()

    def fail():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get("p", fail)
    assert len(cache) == 0
    vol, _ = _volume()
    with pytest.raises(InputError, match="Unknown interpolation method"):
        live_interpolate(vol, method="cubic")
    with pytest.raises(InputError, match="needs a model folder"):
        live_interpolate(vol, method="model")
    with pytest.raises(InputError, match="Cannot replace z 3"):
        live_interpolate(vol, replace_z=[3])

"""Progress generators: run to the end, or wound up where they are stopped."""

from __future__ import annotations

import threading

import pytest

from napari_histovol.core.progress import Progress, drain


def _steps(log):
    try:
        for k in range(5):
            yield Progress(k + 1, 5, f"step {k + 1}")
        return "done"
    finally:
        log.append(threading.current_thread().name)


def test_drain_returns_the_generators_value():
    log = []
    seen = []
    assert drain(_steps(log), seen.append) == "done"
    assert [p.done for p in seen] == [1, 2, 3, 4, 5]
    assert log == [threading.current_thread().name]


def test_a_callback_that_stops_the_run_closes_the_generator_in_this_thread():
    log = []

    def cancel_at_two(p):
        if p.done == 2:
            raise KeyboardInterrupt

    gen = _steps(log)
    with pytest.raises(KeyboardInterrupt):
        drain(gen, cancel_at_two)
    # wound up now, here (not later by the garbage collector in some other thread)
    assert log == [threading.current_thread().name]
    assert gen.gi_frame is None


def test_an_interrupted_write_stops_its_running_blocks_at_their_next_step():
    """A block-wise write that stopped (Ctrl-C, Cancel, an error) cancelled its queued blocks
    but waited for the running ones to finish (a Ctrl-C in `histovol isotropic` took 68 s).
    Blocks whose computation checks for cancellation between steps now stop at the next one.
    Here block 0 is quick and its storing fails; block 1, a long computation, is running."""
    import threading

    import dask.array as da
    import numpy as np

    from napari_histovol.core.io.pyramid import iter_write_pyramid
    from napari_histovol.core.progress import check_cancelled, drain

    steps = {"n": 0}
    running = threading.Event()

    def block_fn(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 0:
            running.wait(10)  # block 1 has started
            return block
        for _ in range(400):  # a long computation: 400 steps of 5 ms
            check_cancelled()
            steps["n"] += 1
            running.set()
            threading.Event().wait(0.005)
        return block

    src = da.zeros((2, 64, 64), np.uint8, chunks=(1, 64, 64)).map_blocks(
        block_fn, dtype=np.uint8, meta=np.zeros((0, 0, 0), np.uint8)
    )

    def sink(level, where, arr):
        raise OSError("the disk is full")

    gen = iter_write_pyramid(src, sink, n_levels=1, xy_chunk=64, workers=2, block_bytes=64 * 64)
    with pytest.raises(OSError):
        drain(gen)
    assert 0 < steps["n"] < 400  # block 1 was running, and stopped before its end

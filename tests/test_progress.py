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

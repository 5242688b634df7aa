"""Progress reporting shared by the CLI (tqdm), the napari widgets (thread workers) and scripts.

Long work is written as a generator ``iter_<verb>(...)`` that yields :class:`Progress`
and *returns* its result; :func:`drain` runs such a generator to the end and gives the result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside a worker thread whose job was cancelled (see :func:`check_cancelled`)."""


#: worker thread id -> the cancel event of the job it is computing for
_CANCEL_EVENTS: dict[int, threading.Event] = {}
_CANCEL_LOCK = threading.Lock()


@contextmanager
def cancellable_by(event: threading.Event) -> Iterator[None]:
    """Run the block (in a worker thread) for a job that ``event`` cancels: long loops inside
    it call :func:`check_cancelled` between steps, so an interrupted job's running blocks stop
    at their next step instead of finishing (a Ctrl-C in ``histovol isotropic`` took 68 s)."""
    ident = threading.get_ident()
    with _CANCEL_LOCK:
        previous = _CANCEL_EVENTS.get(ident)
        _CANCEL_EVENTS[ident] = event
    try:
        yield
    finally:
        with _CANCEL_LOCK:
            if previous is None:
                _CANCEL_EVENTS.pop(ident, None)
            else:
                _CANCEL_EVENTS[ident] = previous


def check_cancelled() -> None:
    """Raise :class:`Cancelled` when this thread's job was cancelled (a no-op elsewhere)."""
    event = _CANCEL_EVENTS.get(threading.get_ident())
    if event is not None and event.is_set():
        raise Cancelled("the job was cancelled")


@dataclass(frozen=True)
class Progress:
    """One step of long-running work.

    Parameters
    ----------
    done, total
        Units finished so far and units in all (``total`` may be 0 when unknown).
    message
        What is being done now, for a progress bar's label.
    stage
        Name of the pipeline stage (``"read"``, ``"write"``, ...).
    """

    done: int
    total: int
    message: str = ""
    stage: str = ""

    @property
    def fraction(self) -> float:
        """Completed fraction in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.done / self.total) if self.total else 0.0


ProgressGenerator = Generator[Progress, None, T]


def drain(gen: ProgressGenerator[T], callback: Callable[[Progress], Any] | None = None) -> T:
    """Run a progress generator to completion and return its result.

    Parameters
    ----------
    gen
        A generator that yields :class:`Progress` and returns a value.
    callback
        Called with every :class:`Progress` (for example to update a tqdm bar).

    Notes
    -----
    When the callback raises (a cancel, Ctrl+C), the generator is closed here, in this thread:
    left to the garbage collector, its ``finally`` blocks and thread pools would be wound up
    in whatever thread collects it, possibly one of dask's workers that a pool is waiting on.
    """
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(p)
    finally:
        gen.close()


def drain_with_tqdm(gen: ProgressGenerator[T], *, desc: str = "", disable: bool | None = None) -> T:
    """Run a progress generator, showing a tqdm bar on stderr (one bar per stage)."""
    from tqdm.auto import tqdm

    bar = None
    stage = None

    def update(p: Progress) -> None:
        nonlocal bar, stage
        if bar is None or p.stage != stage:
            if bar is not None:
                bar.close()
            stage = p.stage
            label = f"{desc} {p.stage}".strip() if p.stage else desc
            bar = tqdm(total=p.total or None, desc=label, unit="step", disable=disable, leave=False)
        if p.total and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        if p.message:
            bar.set_postfix_str(p.message, refresh=False)
        bar.refresh()

    try:
        return drain(gen, update)
    finally:
        if bar is not None:
            bar.close()

"""Cooperative cancellation of a fit.

A caller that may want to stop a fit (a widget's Cancel button) passes a cancel signal: any
object with ``is_set()``, such as a :class:`threading.Event`. Every fitting thread checks it
between two optimiser steps and raises :class:`FitCancelled`, so once the signal is set, no
thread computes more than the step it is in.
"""

from __future__ import annotations

import time
from typing import Protocol


class CancelSignal(Protocol):
    """What a fit checks between steps (a :class:`threading.Event` is one)."""

    def is_set(self) -> bool: ...


class FitCancelled(Exception):
    """A fit stopped because its cancel signal was set; nothing was produced.

    Not a :class:`~napari_histovol.core.errors.HistovolError`: the user asked for it, so front
    ends report "cancelled" rather than an error.
    """


def check_cancel(cancel: CancelSignal | None) -> None:
    """Raise :class:`FitCancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise FitCancelled


class AnySignal:
    """Set when any of its signals is set (None entries are ignored)."""

    def __init__(self, *signals: CancelSignal | None) -> None:
        self._signals = tuple(s for s in signals if s is not None)

    def is_set(self) -> bool:
        return any(s.is_set() for s in self._signals)


class ClusterSignal:
    """A cancel signal a fit on a ``dask.distributed`` worker can check: a named
    ``distributed.Event``, asked at most every ``interval`` seconds (each check is a message to
    the scheduler). It pickles to its name, so it travels with the task."""

    def __init__(self, name: str, interval: float = 0.5) -> None:
        self.name = name
        self.interval = interval
        self._event = None
        self._set = False
        self._next = 0.0

    def is_set(self) -> bool:
        if self._set:
            return True
        now = time.monotonic()
        if now >= self._next:
            from distributed import Event

            if self._event is None:
                self._event = Event(self.name)
            self._set = bool(self._event.is_set())
            self._next = now + self.interval
        return self._set

    def __getstate__(self) -> dict:
        return {"name": self.name, "interval": self.interval}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["name"], state["interval"])

"""Run a core progress generator on a thread worker wired to the progress row.

One notification per failure (napari's own worker would add a second, with a traceback, for
the same error), one per distinct warning, and the generator closed when the job is cancelled,
so its clean-up (temporary files, child processes, fit threads) runs at once.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Generator
from typing import Any

from superqt.utils import GeneratorWorker

from .._dask_cache import guard_napari_dask_cache
from ..core.errors import HistovolError, HistovolWarning, with_hint
from ..core.progress import Progress

#: The panel's words for the core parameters errors name (``HistovolError.option``).
GUI_REMEDIES = {
    "overwrite": "tick 'replace existing output'",
    "on_corrupt": "or tick 'skip unreadable sections'",
    "pixel_size": "set the pixel size in the Sections tab",
    "section_spacing": "set the section spacing in the Sections tab",
    "model_dir": "choose the model folder",
}


def error_text(exc: BaseException) -> str:
    """The one sentence a user sees for a failed job."""
    if isinstance(exc, HistovolError):
        return " ".join(with_hint(exc, GUI_REMEDIES).split())
    from ..core.io.atomic import is_disk_full

    if is_disk_full(exc):
        return "The disk is full; free some space on it and run again."
    return f"{type(exc).__name__}: {exc}"


class _ClosingWorker(GeneratorWorker):
    """A generator worker that closes its generator when it is cancelled (the plain worker
    leaves it suspended until garbage collection)."""

    def work(self):
        try:
            return super().work()
        finally:
            if self.abort_requested:
                self._gen.close()


def run_progress_generator(
    make_generator: Callable[[], Generator[Progress, None, Any]],
    *,
    on_progress: Callable[[Progress], None],
    on_done: Callable[[Any], None],
    on_error: Callable[[str], None] | None = None,
    on_cancelled: Callable[[], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    before_start: Callable[[GeneratorWorker], None] | None = None,
) -> GeneratorWorker:
    """Start ``make_generator()`` in a worker thread.

    Every yielded :class:`Progress` goes to ``on_progress`` in the GUI thread; the generator's
    return value to ``on_done``; a failure to ``on_error`` with its sentence (and one error
    notification); ``worker.quit()`` cancels between two yields and calls ``on_cancelled``.
    ``before_start(worker)`` connects any further signals: a signal connected after the
    worker started is missed when the job ends first (a quick job's ``finished`` before the
    caller's next line ran).
    """
    from napari.utils.notifications import show_error, show_warning

    guard_napari_dask_cache()  # the job computes sections while napari slices layers

    def job():  # a generator function, as the worker needs, around the factory's generator
        return (yield from make_generator())

    worker = _ClosingWorker(job)
    worker.yielded.connect(on_progress)
    worker.returned.connect(on_done)
    shown: set[str] = set()

    def warned(args: tuple) -> None:
        message, category = str(args[0]), args[1]
        if issubclass(category, HistovolWarning) and message not in shown:
            shown.add(message)
            show_warning(message)

    def errored(exc: Exception) -> None:
        text = error_text(exc)
        if not isinstance(exc, HistovolError):  # a bug: keep the traceback for developers
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        show_error(text)
        if on_error is not None:
            on_error(text)

    worker.warned.connect(warned)
    worker.errored.connect(errored)
    if on_cancelled is not None:
        worker.aborted.connect(on_cancelled)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    if before_start is not None:
        before_start(worker)
    worker.start()
    return worker

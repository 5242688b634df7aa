"""Run a core progress generator on a napari thread worker, wired to a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_warning

from ..core.errors import HistovolError
from ..core.progress import Progress


def run_progress_generator(
    make_generator: Callable[[], Generator[Progress, None, Any]],
    *,
    on_progress: Callable[[Progress], None],
    on_done: Callable[[Any], None],
    on_finished: Callable[[], None] | None = None,
) -> GeneratorWorker:
    """Start ``make_generator()`` in a worker thread.

    Every yielded :class:`Progress` goes to ``on_progress`` in the GUI thread; the generator's
    return value to ``on_done``. ``worker.quit()`` cancels between two yields. Errors caused by
    the input show as one-line notifications; warnings as warning notifications.
    """
    import warnings

    def run():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = yield from make_generator()
        return result, [str(w.message) for w in caught]

    worker = create_worker(run, _start_thread=False)
    worker.yielded.connect(on_progress)

    def done(value):
        result, messages = value
        for m in dict.fromkeys(messages):
            show_warning(m)
        on_done(result)

    worker.returned.connect(done)

    def errored(exc: Exception) -> None:
        if isinstance(exc, HistovolError):
            show_error(str(exc))
        else:
            show_error(f"{type(exc).__name__}: {exc}")

    worker.errored.connect(errored)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker

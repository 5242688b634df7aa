"""User-facing errors: one clear sentence that says what, which file, and what to do."""

from __future__ import annotations


class HistovolError(Exception):
    """Base class for errors caused by the user's input or environment.

    The CLI prints ``str(error)`` on one line and exits with status 2; napari shows it
    as a notification. Programming errors are *not* HistovolErrors and keep their traceback.
    """


class InputError(HistovolError):
    """The input (folder, file, array, option) cannot be used as given."""


class CorruptImageError(InputError):
    """An image file cannot be decoded (corrupt, truncated or not an image)."""


class OutputError(HistovolError):
    """The output cannot be written (exists already, unwritable, disk full)."""


class HistovolWarning(UserWarning):
    """A problem that was worked around (different sizes, one slice, skipped file)."""

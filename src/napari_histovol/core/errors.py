"""User-facing errors: one clear sentence that says what, which file, and what to do.

Core messages never name a command-line flag or a widget control: the same sentence reaches a
shell user and a napari user. Where one of the core function's own parameters is the remedy
(``overwrite``, ``on_corrupt``, ``pixel_size``...), the error names that parameter in
``option`` and each front end adds its own words for it (``--overwrite`` in the CLI, the
"Replace existing output" box in napari).
"""

from __future__ import annotations


class HistovolError(Exception):
    """Base class for errors caused by the user's input or environment.

    The CLI prints ``str(error)`` on one line and exits with status 2; napari shows it
    as a notification. Programming errors are *not* HistovolErrors and keep their traceback.

    Parameters
    ----------
    message
        One sentence: what is wrong, with which file, and what to do.
    option
        The keyword parameter of the core function that would resolve the problem (for
        example ``"overwrite"``), so that a front end can name its own control for it.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class InputError(HistovolError, ValueError):
    """The input (folder, file, array, option) cannot be used as given."""


class CorruptImageError(InputError):
    """An image file cannot be used: corrupt, truncated, not an image, or too large to decode."""


class OutputError(HistovolError):
    """The output cannot be written (exists already, unwritable, disk full)."""


class HistovolWarning(UserWarning):
    """A problem that was worked around (different sizes, one slice, skipped file)."""


def with_hint(error: HistovolError, hints: dict[str, str]) -> str:
    """The error's sentence with a front end's words for its ``option`` added before the full stop.

    >>> with_hint(OutputError("'a.zarr' exists already; allow replacing it.", option="overwrite"),
    ...           {"overwrite": "--overwrite"})
    "'a.zarr' exists already; allow replacing it (--overwrite)."
    """
    text = str(error).rstrip()
    hint = hints.get(error.option or "")
    if not hint:
        return text
    if text.endswith("."):
        return f"{text[:-1]} ({hint})."
    return f"{text} ({hint})"

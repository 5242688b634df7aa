"""Reading the small text files users give (CSV, JSON, YAML): one sentence when they cannot be
read, are binary, or are not UTF-8."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError


def read_text(
    path: str | os.PathLike, *, what: str = "the file", max_bytes: int = 256 * 2**20
) -> str:
    """The text of a small UTF-8 file (a BOM is dropped).

    Parameters
    ----------
    path
        The file.
    what
        What the file is, for the message (``"the transforms file"``).
    max_bytes
        Larger files are refused (a text input of this size is a mistake).

    Raises
    ------
    InputError
        When it is missing, a folder, unreadable, too large, binary or not UTF-8 text.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise InputError(f"{what.capitalize()} '{p}' does not exist.")
    if p.is_dir():
        raise InputError(f"{what.capitalize()} '{p}' is a folder; give the file.")
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise InputError(
                f"'{p}' is {size / 2**20:.0f} MB, too large to be {what}; check the file name."
            )
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"Cannot read {what} '{p}': {e.strerror}.") from None
    if b"\x00" in data[:65536]:
        raise InputError(f"'{p}' is a binary file, not {what} (text); check the file name.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"'{p}' is not UTF-8 text (byte {e.start}); save {what} as UTF-8."
        ) from None

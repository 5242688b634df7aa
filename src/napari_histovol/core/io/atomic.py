"""Write to a temporary name beside the output, rename when complete; never overwrite silently."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError


def temp_name(out: Path) -> Path:
    """The temporary path used while ``out`` is being written (a hidden sibling)."""
    return out.parent / f".{out.name}.partial"


def check_output(out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check that ``out`` may be written; return it as a Path.

    Raises
    ------
    OutputError
        When it exists and ``overwrite`` is False, or its folder cannot be created or written.
    """
    out = Path(os.fspath(out)).expanduser()
    if out.exists() and not overwrite:
        raise OutputError(
            f"'{out}' exists already; choose another name or pass --overwrite to replace it."
        )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"Cannot create the folder '{parent}' for '{out.name}': {e.strerror}."
        ) from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"Cannot write to the folder '{parent}': permission denied.")
    return out


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        try:
            p.unlink()
        except OSError:
            pass


@contextmanager
def atomic_output(
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    is_dir: bool = False,
    keep_partial: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path to write into; rename it to ``out`` only if the block succeeds.

    On any exception (or a cancelled generator) the temporary output is removed, so no
    half-written file or folder is ever left under the final name. With ``keep_partial`` a
    leftover temporary output is handed back to be resumed, and kept if this run fails too.
    """
    out = check_output(out, overwrite=overwrite)
    tmp = temp_name(out)
    if not keep_partial:
        _remove(tmp)  # a stale leftover of a killed run
    try:
        if is_dir and not tmp.is_dir():
            tmp.mkdir()
        yield tmp
    except OSError as e:
        if not keep_partial:
            _remove(tmp)
        if e.errno == errno.ENOSPC:
            raise OutputError(
                f"The disk is full while writing '{out}'; nothing was written."
            ) from None
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(f"Cannot write '{out}': {e.strerror}.") from None
        raise
    except BaseException:
        if not keep_partial:
            _remove(tmp)
        raise
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old"
        _remove(old)
        os.replace(out, old)
        os.replace(tmp, out)
        _remove(old)
    else:
        os.replace(tmp, out)

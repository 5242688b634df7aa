"""Every file and folder napari-histovol writes goes through here.

An output is written under a hidden temporary name beside it and renamed when complete, so a
half-written file never carries the final name. An existing output is replaced only with
``overwrite=True``, and even then a folder that napari-histovol did not write (a user's own
folder, the working directory) is never replaced. A full disk (or quota) anywhere during the
write removes the temporary output and raises one :class:`OutputError`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ..errors import OutputError

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}
# a folder holding one of these was written by napari-histovol (or is an OME-Zarr) and may be
# replaced with overwrite=True
FIELDS_MARKER = ".histovol-fields"  # in a transforms file's folder of elastic fields
_OUR_FOLDER_MARKERS = (
    "zarr.json",
    ".zattrs",
    ".zgroup",
    "histovol.json",
    ".histovol-interpolate.json",
    FIELDS_MARKER,
)


def temp_name(out: Path, *, keep_suffix: bool = False) -> Path:
    """The temporary path used while ``out`` is being written (a hidden sibling).

    With ``keep_suffix`` the temporary name ends like ``out`` (``.partial-sec_01.png``), for
    writers that choose the format by the suffix.
    """
    if keep_suffix:
        return out.parent / f".partial-{out.name}"
    return out.parent / f".{out.name}.partial"


def _replaceable_folder(p: Path) -> bool:
    try:
        return not any(p.iterdir()) or any((p / m).exists() for m in _OUR_FOLDER_MARKERS)
    except OSError:
        return False


def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.fspath(p)).expanduser().resolve()


def check_not_input(
    out: str | os.PathLike, inputs: Sequence[str | os.PathLike], *, not_inside: bool = False
) -> None:
    """Refuse an output that would replace an input: the same path, or a folder that holds it
    (replacing it deletes the input); with ``not_inside``, also an output inside an input
    folder (a volume written among the sections it was read from becomes one of them, and
    the folder no longer reads).

    Raises
    ------
    OutputError
        Naming the input the output would replace.
    """
    target = _resolved(out)
    for given in inputs:
        if given is None or str(given) == "":
            continue
        source = _resolved(given)
        if target == source or target in source.parents:
            what = "is" if target == source else "holds"
            raise OutputError(
                f"The output '{out}' {what} the input '{given}'; writing it would replace the "
                "input, so choose another output name."
            )
        if not_inside and source.is_dir() and source in target.parents:
            raise OutputError(
                f"The output '{out}' is inside the input folder '{given}'; it would become one "
                "of the files that folder is read from, so write it elsewhere."
            )


def check_output(
    out: str | os.PathLike, *, overwrite: bool = False, kind: str | None = None
) -> Path:
    """Check that ``out`` may be written; return it as a Path (user ``~`` expanded).

    Parameters
    ----------
    out
        The output path.
    overwrite
        Whether an existing output may be replaced.
    kind
        ``"file"`` or ``"dir"`` when the output's kind is known: a folder is never replaced by
        a file.

    Raises
    ------
    OutputError
        When it exists and ``overwrite`` is False, when it is a folder napari-histovol did not
        write, or when its folder cannot be created or written.
    """
    out = Path(os.fspath(out)).expanduser()
    if out.exists() or out.is_symlink():
        if out.is_dir() and kind == "file":
            raise OutputError(f"'{out}' is a folder; give a file name for the output.")
        if not overwrite:
            raise OutputError(
                f"'{out}' exists already; choose another name or allow replacing it.",
                option="overwrite",
            )
        if out.is_dir() and not out.is_symlink() and not _replaceable_folder(out):
            raise OutputError(
                f"'{out}' is a folder that napari-histovol did not write, so it is not replaced; "
                "choose another output name."
            )
    parent = out.parent
    if not parent.parent.is_dir():
        # a mistyped path is refused, not created: one missing folder level is made (an
        # output folder named with the output), no more
        raise OutputError(
            f"The folder '{parent.parent}' does not exist, so '{out}' cannot be written "
            "there; check the path or create the folder first."
        )
    try:
        parent.mkdir(exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"Cannot create the folder '{parent}' for '{out.name}': {e.strerror}."
        ) from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"Cannot write to the folder '{parent}': permission denied.")
    return out


def remove_path(p: Path) -> None:
    """Remove a file or folder if it is there (errors ignored)."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        try:
            p.unlink()
        except OSError:
            pass


def os_error_in(exc: BaseException | None) -> OSError | None:
    """The first OSError in an exception's chain (libraries wrap them: tifffile, zarr, dask)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


#: numpy's ``tofile`` (``np.save``) reports a full disk as a short write, with no errno
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


def is_disk_full(exc: BaseException) -> bool:
    """True when an exception comes from a full disk or an exhausted quota (a build on a full
    disk said only "90000 requested and 81888 written": a helper's journey)."""
    e = os_error_in(exc)
    if e is not None and e.errno in _DISK_FULL:
        return True
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is None and _SHORT_WRITE.match(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def output_error(exc: BaseException, out: Path) -> OutputError | None:
    """The one-sentence error for a failed write of ``out``, or None when it is not an OS error
    about the output (a programming error keeps its traceback)."""
    if is_disk_full(exc):
        return OutputError(
            f"The disk is full while writing '{out}'; nothing was written: free some space and "
            "run again."
        )
    e = os_error_in(exc)
    if e is None:
        return None
    if e.errno in _NO_PERMISSION:
        return OutputError(f"Cannot write '{out}': {e.strerror.lower()}.")
    return None


@contextmanager
def atomic_output(
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    is_dir: bool = False,
    keep_partial: bool = False,
    keep_suffix: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path to write into; rename it to ``out`` only if the block succeeds.

    On any exception (or a cancelled generator) the temporary output is removed, so no
    half-written file or folder is ever left under the final name. With ``keep_partial`` a
    leftover temporary output is handed back to be resumed, and kept if this run fails too,
    except when the disk is full: then it is removed to give the space back. With
    ``keep_suffix`` the temporary name ends with ``out``'s name (see :func:`temp_name`).
    """
    out = check_output(out, overwrite=overwrite, kind="dir" if is_dir else "file")
    with output_lock(out):
        tmp = temp_name(out, keep_suffix=keep_suffix)
        if not keep_partial:
            remove_path(tmp)  # a stale leftover of a killed run
        try:
            if is_dir and not tmp.is_dir():
                tmp.mkdir()
            yield tmp
        except BaseException as exc:
            if not keep_partial or is_disk_full(exc):
                remove_path(tmp)
            err = output_error(exc, out) if isinstance(exc, Exception) else None
            if err is not None:
                raise err from None
            raise
        try:
            if out.exists() or out.is_symlink():
                old = out.parent / f".{out.name}.old"
                remove_path(old)
                os.replace(out, old)
                os.replace(tmp, out)
                remove_path(old)
            else:
                os.replace(tmp, out)
        except OSError as exc:
            remove_path(tmp)
            raise output_error(exc, out) or exc from None


def lock_name(out: Path) -> Path:
    """The lock file beside ``out`` that a run writing it holds (its process id inside)."""
    return out.parent / f".{out.name}.histovol-lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _take_lock(lock: Path, out: Path) -> bool:
    """Create ``lock`` with this process's id; False where no lock can be written (an
    unwritable folder, a full disk: the write itself reports that). A lock whose process is
    gone (a killed run) is taken over; a live one refuses the run."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text(encoding="utf-8").split()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            if pid > 0 and _alive(pid):
                who = "this process" if pid == os.getpid() else f"process {pid}"
                raise OutputError(
                    f"Another histovol run ({who}) is writing '{out}' now; wait for it to "
                    f"finish or stop it (a run that was killed leaves '{lock.name}', which the "
                    "next run takes over)."
                ) from None
            remove_path(lock)  # stale: its run is gone
            continue
        except OSError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
        except OSError:
            remove_path(lock)
            return False
        return True
    return False


#: the outputs whose lock this process holds: (thread that took it, how many holders)
_HELD: dict[Path, list] = {}
_HELD_GUARD = threading.Lock()


@contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold ``out``'s lock while a run works towards it (:func:`atomic_output` takes it as it
    writes; a job with long work before its write, as a build's alignment, takes it from its
    start): a second run for the same output (another terminal, another tab) is refused in
    one sentence instead of both writing the same temporary output (one failed with a raw
    zarr message and left it behind) or one deleting the other's cache (two builds).

    The thread that holds a lock may take it again (a build, then its writer)."""
    out = Path(os.fspath(out)).expanduser()
    key = _resolved(out)
    me = threading.get_ident()
    with _HELD_GUARD:
        mine = _HELD.get(key)
        if mine is not None and mine[0] == me:
            mine[1] += 1
            again = True
        else:
            again = False
    if again:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key][1] -= 1
        return
    lock = lock_name(out)
    held = _take_lock(lock, out)
    if held:
        with _HELD_GUARD:
            _HELD[key] = [me, 1]
    try:
        yield
    finally:
        if held:
            with _HELD_GUARD:
                _HELD.pop(key, None)
            remove_path(lock)


@contextmanager
def atomic_outputs(
    outs: Sequence[str | os.PathLike], *, overwrite: bool = False
) -> Iterator[list[Path]]:
    """:func:`atomic_output` for several files written together (a result and its side files):
    all are checked before anything is written, and none is left if the block fails."""
    paths = [Path(os.fspath(o)).expanduser() for o in outs]
    for p in paths:
        check_output(p, overwrite=overwrite)
    with ExitStack() as stack:
        yield [stack.enter_context(atomic_output(p, overwrite=overwrite)) for p in paths]


def preallocate(path: str | os.PathLike, size: int) -> None:
    """Reserve ``size`` bytes of disk for the file at ``path`` before it is filled.

    A memory-mapped output over a sparse file dies with SIGBUS when the disk fills up under
    it; reserving the blocks first turns a full disk into an ``ENOSPC`` :class:`OSError` at
    once (which :func:`atomic_output` reports in one sentence). Where the file system cannot
    reserve space, its free space is checked instead.
    """
    fd = os.open(os.fspath(path), os.O_RDWR)
    try:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, int(size))
                return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
        st = os.fstatvfs(fd)
        have = os.fstat(fd).st_blocks * 512
        if int(size) - have > st.f_bavail * st.f_frsize:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write a text file atomically (temporary name, rename); returns its path."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(os.fspath(path)).expanduser()


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write a binary file atomically (temporary name, rename); returns its path."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(os.fspath(path)).expanduser()


def write_json(path: str | os.PathLike, doc: Any, *, overwrite: bool = False) -> Path:
    """Write a JSON document atomically (indented one space, UTF-8); returns its path."""
    return write_text(path, json.dumps(doc, indent=1, ensure_ascii=False), overwrite=overwrite)

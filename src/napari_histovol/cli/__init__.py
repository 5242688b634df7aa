"""The ``histovol`` command: one module per subcommand over :mod:`napari_histovol.core`.

Each subcommand module has ``NAME``, ``register(subparsers)`` (declares its options, mostly
from :mod:`._options`, with choices imported from core) and ``run(args)``. Everything the
command refuses, argparse's complaints included, prints one line starting ``histovol: error:``
and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import glob
import sys
import warnings
from pathlib import Path

from .. import __version__
from . import (
    align,
    build,
    compress,
    convert,
    decompress,
    demo,
    focus,
    focus_train,
    info,
    interpolate,
    isotropic,
    qc,
    restore,
    segment,
    stitch,
    warp_points,
)
from ._options import Parser, UsageError, error_line

EXIT_BAD_INPUT = 2
SUBCOMMANDS = (
    info,
    convert,
    stitch,
    align,
    warp_points,
    interpolate,
    isotropic,
    build,
    focus,
    focus_train,
    qc,
    restore,
    compress,
    decompress,
    segment,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``histovol`` parser with every subcommand registered."""
    parser = Parser(
        prog="histovol",
        description="Serial sections to 3D volumes: read, align, interpolate, stack, inspect "
        "(napari-histovol).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in SUBCOMMANDS:
        p = module.register(sub)
        flags = {s for action in p._actions for s in action.option_strings}
        p.set_defaults(run=module.run, _flags=flags)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"histovol: warning: {message}", file=sys.stderr)


def _fail(text: str) -> int:
    one_line = " ".join(str(text).split())  # library messages (YAML, zarr) can span lines
    print(f"histovol: error: {one_line}", file=sys.stderr)
    return EXIT_BAD_INPUT


#: argument names that hold paths a command writes, and paths it reads
_OUTPUT_ARGS = ("output", "json_out", "masks", "tiles_out")
_INPUT_ARGS = ("input", "path", "prompts", "scribbles", "qc", "positions")


def _check_outputs_are_not_inputs(args) -> None:
    """No command writes over what it reads (``histovol segment vol.ome.zarr vol.ome.zarr
    --overwrite`` replaced the image with its labels)."""
    from ..core.io.atomic import check_not_input

    inputs = [getattr(args, k) for k in _INPUT_ARGS if isinstance(getattr(args, k, None), str)]
    read_too = [f for p in inputs for f in _read_alongside(p)]
    stores = [p for p in inputs if _is_store(p)]
    for k in _OUTPUT_ARGS:
        out = getattr(args, k, None)
        if isinstance(out, str) and out:
            # OUT (a volume) may not land among the sections it was read from; side files
            # (--json, --masks) may, the folder reader passes over them, but not over the
            # metadata the input is read with (`info sections/ --json sections/histovol.json
            # --overwrite` erased the folder's scale and generated planes) nor inside a store
            check_not_input(out, inputs, not_inside=k == "output")
            check_not_input(out, read_too)
            check_not_input(out, stores, not_inside=True)


def _read_alongside(path: str) -> list[str]:
    """The metadata files read with the volume at ``path``: a folder's ``histovol.json`` and
    ``synthetic.txt``, a ``.npy``'s ``.npy.json``."""
    from pathlib import Path

    from ..core.io.npy import sidecar_path
    from ..core.io.slices import SIDECAR, SYNTHETIC_LIST

    p = Path(path).expanduser()
    if p.is_dir():
        return [str(p / SIDECAR), str(p / SYNTHETIC_LIST)]
    if p.suffix.lower() == ".npy":
        return [str(sidecar_path(p))]
    return []


def _is_store(path: str) -> bool:
    """Whether ``path`` is a folder read as one volume (an OME-Zarr store), not a folder of
    files: as the readers tell them apart."""
    from pathlib import Path

    from ..core.io.detect import detect_format

    return Path(path).expanduser().is_dir() and detect_format(path) == "ome-zarr"


def _interrupted_line(args) -> str:
    """What an interrupted command says: whether anything it did is kept beside its output
    for the same command to resume from (a build stopped while aligning said so and kept
    nothing: a helper's journey)."""
    out = getattr(args, "output", None)
    if not out:
        return "histovol: interrupted; nothing was written."
    from ..core.io.atomic import temp_name
    from ..core.pipeline import work_folder

    out = Path(out).expanduser()
    kept = [
        p
        for p in (
            temp_name(out),
            temp_name(out, keep_suffix=True),
            work_folder(out),
            *out.parent.glob(f".{glob.escape(out.name)}.histovol-*.pt"),
        )
        if p.exists() and (not p.is_dir() or any(p.iterdir()))
    ]
    if kept:
        return (
            f"histovol: interrupted; '{out.name}' was not written. What was done is kept "
            f"beside it ('{kept[0].name}'): run the same command again to resume."
        )
    return (
        f"histovol: interrupted; '{out.name}' was not written and nothing was kept: the same "
        "command starts again from the beginning."
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``histovol`` console script."""
    from ..core.errors import HistovolError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        return _fail(str(e))
    warnings.showwarning = _show_warning
    try:
        _check_outputs_are_not_inputs(args)
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a reader that stopped reading is met here, not at exit
        return code
    except HistovolError as e:
        return _fail(error_line(e, args))
    except UsageError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print(_interrupted_line(args), file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout stopped reading (`histovol info X | head -5`): not an error of
        # the command; stdout is pointed at /dev/null so that its flush at exit is silent
        import os

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except MemoryError:
        return _fail(
            "the machine ran out of memory; use smaller sections (--size where the command has "
            "it) or a machine with more memory."
        )
    except OSError as e:  # the environment, not the program: a full disk, a vanished file
        from ..core.io.atomic import is_disk_full

        if is_disk_full(e):
            out = getattr(args, "output", None)
            where = f" while writing '{out}'" if out else ""
            return _fail(f"the disk is full{where}; free some space on it and run again.")
        where = f" '{e.filename}'" if e.filename else ""
        return _fail(f"{e.strerror or e}{where}.")


__all__ = ["EXIT_BAD_INPUT", "SUBCOMMANDS", "build_parser", "main"]

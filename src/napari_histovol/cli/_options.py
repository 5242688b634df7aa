"""What the subcommands share: the parser class, option types, options declared once, reading
the input, progress bars, and the command line's words for the core's remedies."""

from __future__ import annotations

import argparse
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import HistovolError, with_hint

T = TypeVar("T")


class UsageError(Exception):
    """A command line argparse refused; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage block, a pointer to ``--help`` instead."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        sub = self.prog.partition(" ")[2]  # "histovol build" -> "build"
        raise UsageError(f"{sub + ': ' if sub else ''}{message} (see '{self.prog} --help').")


# ------------------------------------------------------------------------------ option types


def _number(text: str, kind: type, what: str):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    v = _number(text, float, "a number")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    v = _number(text, int, "a whole number")
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    v = _number(text, int, "a whole number")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


def z_list(text: str) -> list[int]:
    """argparse type: z numbers separated by commas (``12,31``)."""
    from ..core.errors import InputError
    from ..core.interpolate.plan import parse_z_numbers

    try:
        return parse_z_numbers(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).rstrip(".")) from None


# --------------------------------------------------------------------- options declared once


def add_input(p: argparse.ArgumentParser, help: str = "folder of sections or volume") -> None:
    p.add_argument("input", metavar="IN", help=help)


def add_overwrite(p: argparse.ArgumentParser, what: str = "OUT") -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} if it exists (never a folder napari-histovol did not write)",
    )


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_skip_bad(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out corrupt, truncated or oversized section images (they become gaps) "
        "instead of stopping",
    )


def add_scale(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pixel-size",
        type=positive_float,
        metavar="UM",
        help="x/y pixel size in µm (overrides what the files say)",
    )
    p.add_argument(
        "--section-spacing",
        type=positive_float,
        metavar="UM",
        help="distance between sections in µm",
    )


def add_workers(
    p: argparse.ArgumentParser, help: str = "threads computing and writing blocks"
) -> None:
    p.add_argument(
        "--workers", type=positive_int, metavar="N", help=f"{help} (default: {default_workers()})"
    )


def add_scheduler(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a dask.distributed scheduler (tcp://host:8786) to compute on (default: local threads)",
    )


def add_slice_format(p: argparse.ArgumentParser) -> None:
    from ..core.io.imagefile import IMAGE_EXTENSIONS

    formats = tuple(
        dict.fromkeys(e.lstrip(".") for e in IMAGE_EXTENSIONS if e not in (".tiff", ".jpeg"))
    )
    p.add_argument(
        "--slice-format",
        choices=formats,
        help="image format of slices when OUT is a folder (default: the input's)",
    )


def default_workers() -> int:
    return min(4, os.cpu_count() or 2)


# ------------------------------------------------------------------------------------ helpers


def on_corrupt(args: argparse.Namespace) -> str:
    return "skip" if getattr(args, "skip_bad", False) else "error"


def read_input(args: argparse.Namespace, path: str | None = None, *, single_image=False):
    """The input volume, lazily, with the scale options and --skip-bad applied; with
    ``single_image``, a single image file (a stitched .png mosaic) too, as one plane."""
    from ..core.io.detect import read_volume, read_volume_or_image

    return (read_volume_or_image if single_image else read_volume)(
        path if path is not None else args.input,
        on_corrupt=on_corrupt(args),
        pixel_size=getattr(args, "pixel_size", None),
        section_spacing=getattr(args, "section_spacing", None),
    )


def add_global_align(p: argparse.ArgumentParser) -> None:
    """``--neighbours K`` and ``--smooth SECTIONS`` (the global alignment's options)."""
    from ..core.align import DEFAULT_NEIGHBOURS, MAX_NEIGHBOURS

    p.add_argument(
        "--neighbours",
        type=positive_int,
        default=DEFAULT_NEIGHBOURS,
        metavar="K",
        help=f"global: register each section to K neighbours on each side (1-{MAX_NEIGHBOURS}, "
        f"default {DEFAULT_NEIGHBOURS})",
    )
    p.add_argument(
        "--smooth",
        type=float,
        default=0.0,
        metavar="SECTIONS",
        help="global: keep what changes slower than SECTIONS along z (tissue shape), correct "
        "only faster jitter (default 0: off)",
    )


def output_format(args: argparse.Namespace, *, check_folder: bool = True) -> str:
    """OUT's format from its name, checked before any work: ``--slice-format`` only with a
    folder, and an existing OUT only with ``--overwrite`` (a folder too, unless the command
    resumes its own folders and checks them itself: ``check_folder=False``)."""
    from ..core.errors import InputError
    from ..core.io.atomic import check_output
    from ..core.io.detect import detect_format

    fmt = detect_format(args.output, for_output=True)
    if getattr(args, "slice_format", None) and fmt != "folder":
        raise InputError("--slice-format applies only when OUT is a folder.")
    if fmt != "folder":
        check_output(args.output, overwrite=args.overwrite)
    elif check_folder:
        check_output(args.output, overwrite=args.overwrite, kind="dir")
    return fmt


def write_options(fmt: str, **given: Any) -> dict[str, Any]:
    """The writer options that apply to format ``fmt`` among ``given`` (others are dropped)."""
    from ..core.io.detect import writer_accepts

    return {k: v for k, v in given.items() if v is not None and writer_accepts(fmt, k)}


def model_checkpoint(output: str, what: str) -> Path:
    """Where a command keeps the model it trained for ``output`` until ``output`` is written
    (a hidden file beside it: a killed run reuses the model)."""
    out = Path(output).expanduser()
    return out.parent / f".{out.name}.histovol-{what}.pt"


def progress(gen: Generator[Any, None, T], args: argparse.Namespace, desc: str) -> T:
    """Drain a core progress generator with a tqdm bar on stderr (none with --quiet)."""
    from ..core.progress import drain_with_tqdm

    return drain_with_tqdm(gen, desc=desc, disable=True if getattr(args, "quiet", False) else None)


# ------------------------------------------------------- the command line's words for remedies

#: core parameter named by an error's ``option`` -> (the flag that sets it, words for the hint)
REMEDIES: dict[str, tuple[str, str]] = {
    "overwrite": ("--overwrite", "--overwrite"),
    "on_corrupt": ("--skip-bad", "or --skip-bad to leave it out as a missing section"),
    "pixel_size": ("--pixel-size", "--pixel-size UM"),
    "section_spacing": ("--section-spacing", "--section-spacing UM"),
    "model_dir": ("--model", "--model DIR"),
    "engine": ("--engine", "--engine"),
    "method": ("--method", "--method"),
    "scheduler": ("--scheduler", "--scheduler"),
    "ratio": ("--ratio", "--ratio R or --gaussians N"),
    "gaussians": ("--gaussians", "--gaussians N"),
    "roi": ("--roi", "--roi z0:z1,y0:y1,x0:x1"),
    "zoom": ("--zoom", "--zoom F"),
    "size": ("--size", "--size PX"),
    "neighbours": ("--neighbours", "--neighbours K"),
    "smooth": ("--smooth", "--smooth SECTIONS"),
    "frames_between": ("--frames-between", "--frames-between N"),
    "tile": ("--tile", "--tile PX"),
    "metric": ("--metric", "--metric"),
    "reg_size": ("--reg-size", "--reg-size PX"),
    "stack_focus_z": ("--stack-focus", "--stack-focus Z"),
    "stack_step_um": ("--stack-step", "--stack-step UM"),
    "grid": ("--grid", "--grid ROWSxCOLS or --positions POS.csv"),
    "positions": ("--positions", "--positions POS.csv"),
    "overlap": ("--overlap", "--overlap FRACTION"),
    "model": ("--model", "--model"),
    "blend": ("--blend", "--blend"),
    "factor": ("--factor", "--factor F"),
    "time_budget": ("--time-budget", "--time-budget SECONDS"),
}


def error_line(err: HistovolError, args: argparse.Namespace | None) -> str:
    """The one line printed for a core error: its sentence plus this command's flag for the
    remedy it names (when the subcommand has that flag)."""
    flags = getattr(args, "_flags", set()) if args is not None else set()
    hints = {k: words for k, (flag, words) in REMEDIES.items() if flag in flags}
    return with_hint(err, hints)

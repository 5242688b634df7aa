"""The ``histovol`` command: a thin argparse layer over :mod:`napari_histovol.core`.

Bad input prints one sentence to stderr and exits with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from . import __version__
from .core.errors import HistovolError, InputError

EXIT_BAD_INPUT = 2


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def _add_scale_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pixel-size",
        type=_positive_float,
        metavar="UM",
        help="x/y pixel size in µm (overrides what the files say)",
    )
    p.add_argument(
        "--section-spacing",
        type=_positive_float,
        metavar="UM",
        help="distance between sections in µm",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out corrupt or truncated section images (they become gaps) instead of stopping",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="histovol",
        description="Serial sections to 3D volumes: read, convert, inspect (napari-histovol).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "info",
        help="what a folder or volume holds: count, shape, dtype, z numbers, gaps",
        description="Describe a folder of sections or a volume (.ome.zarr, .ome.tif, .npy).",
    )
    p.add_argument("path", help="folder of section images or volume file")
    p.add_argument(
        "--json",
        dest="json_out",
        metavar="OUT.json",
        nargs="?",
        const="-",
        help="write the description as JSON (to a file, or stdout when no file is given)",
    )
    p.add_argument("--skip-bad", action="store_true", help="leave out corrupt section images")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "convert",
        help="folder <-> .ome.zarr <-> .ome.tif (pyramidal) <-> .npy",
        description="Convert between a folder of sections, OME-Zarr, pyramidal OME-TIFF and "
        ".npy. The output format follows OUT's suffix (.ome.zarr, .ome.tif, .npy, else a folder).",
    )
    p.add_argument("input", help="folder of sections or volume")
    p.add_argument("output", help="OUT.ome.zarr, OUT.ome.tif, OUT.npy or an output folder")
    _add_scale_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--levels", type=_positive_int, help="pyramid levels (default: down to 256 px)")
    p.add_argument("--ngff-version", choices=("0.4", "0.5"), help="OME-Zarr version (default 0.5)")
    p.add_argument(
        "--chunk",
        type=_positive_int,
        metavar="PX",
        help="OME-Zarr chunk / OME-TIFF tile size in y and x",
    )
    p.add_argument(
        "--compression", help="zstd (Zarr default), zlib (TIFF default), lz4, lzw, jpeg, none"
    )
    p.add_argument(
        "--slice-format",
        choices=("tif", "png", "jpg", "bmp"),
        help="image format of slices when OUT is a folder (default: the input's)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=min(4, os.cpu_count() or 2),
        help="threads computing and compressing blocks",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "demo",
        help="open the bundled sample sections in napari (--no-gui: write files only)",
        description="Open the bundled ANHIR lung-lesion sections in napari. With --no-gui (or "
        "when there is no display) write them as OME-Zarr plus a PNG overview instead.",
    )
    p.add_argument("--no-gui", action="store_true", help="write files only, do not open napari")
    p.add_argument(
        "--out", default="histovol-demo", help="folder for the files (default ./histovol-demo)"
    )
    p.add_argument(
        "--screenshot", metavar="PNG", help="save a screenshot of the napari window and close it"
    )
    p.set_defaults(func=cmd_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"histovol: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``histovol`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args) or 0)
    except HistovolError as e:
        print(f"histovol: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("histovol: interrupted; nothing was left half-written.", file=sys.stderr)
        return 130


def cmd_info(args: argparse.Namespace) -> int:
    from .core.info import describe, format_description

    d = describe(args.path, on_corrupt="skip" if args.skip_bad else "error")
    if args.json_out is None:
        print(format_description(d))
    elif args.json_out == "-":
        print(json.dumps(d, indent=1))
    else:
        Path(args.json_out).write_text(json.dumps(d, indent=1))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .core.io.detect import detect_format, iter_write_volume, read_volume
    from .core.progress import drain_with_tqdm

    fmt = detect_format(args.output, for_output=True)
    if Path(args.input).expanduser().resolve() == Path(args.output).expanduser().resolve():
        raise InputError("The input and the output are the same path; choose another output name.")
    vol = read_volume(
        args.input,
        on_corrupt="skip" if args.skip_bad else "error",
        pixel_size=args.pixel_size,
        section_spacing=args.section_spacing,
    )
    opts: dict = {"overwrite": args.overwrite}
    if fmt == "ome-zarr":
        opts.update(
            ngff_version=args.ngff_version,
            n_levels=args.levels,
            xy_chunk=args.chunk,
            compression=args.compression,
            workers=args.workers,
        )
    elif fmt == "ome-tiff":
        opts.update(
            n_levels=args.levels,
            tile=args.chunk,
            compression=args.compression,
            workers=args.workers,
        )
    elif fmt == "npy":
        opts.update(workers=args.workers)
    else:
        opts.update(ext=args.slice_format)
    _reject_unused(args, fmt)
    out = drain_with_tqdm(
        iter_write_volume(vol, args.output, **opts), desc="convert", disable=args.quiet or None
    )
    print(f"wrote {out} ({fmt}, {vol.shape[0]} planes)")
    return 0


def _reject_unused(args: argparse.Namespace, fmt: str) -> None:
    unused = {
        "ome-zarr": ["slice_format"],
        "ome-tiff": ["slice_format", "ngff_version"],
        "npy": ["slice_format", "ngff_version", "levels", "chunk", "compression"],
        "folder": ["ngff_version", "levels", "chunk", "compression"],
    }[fmt]
    given = [n for n in unused if getattr(args, n, None) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise InputError(f"{flag} does not apply when writing {fmt} output.")


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in (
        "darwin",
        "win32",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from ._sample_data import sample_folder

    folder = sample_folder()
    if args.no_gui or not _has_display():
        if not args.no_gui:
            print(
                "histovol: no display found; writing the demo files instead (as with --no-gui).",
                file=sys.stderr,
            )
        return _demo_files(folder, Path(args.out))
    return _demo_gui(folder, args.screenshot)


def _demo_files(folder: Path, out_dir: Path) -> int:
    import warnings as _w

    from .core.errors import HistovolWarning
    from .core.io.detect import iter_write_volume, read_volume
    from .core.preview import write_overview_png
    from .core.progress import drain_with_tqdm

    with _w.catch_warnings():
        _w.simplefilter("ignore", HistovolWarning)
        vol = read_volume(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    zarr_path = out_dir / "lung_lesion3.ome.zarr"
    drain_with_tqdm(iter_write_volume(vol, zarr_path, overwrite=True), desc="demo")
    png = write_overview_png(vol, out_dir / "lung_lesion3_sections.png")
    print(
        f"wrote {zarr_path} ({vol.shape[0]} sections, gaps at z {', '.join(map(str, vol.meta.gaps))})"
    )
    print(f"wrote {png}")
    return 0


def _demo_gui(folder: Path, screenshot: str | None) -> int:
    import napari

    viewer = napari.Viewer(title="napari-histovol demo: lung lesion 3 sections")
    viewer.open(str(folder), plugin="napari-histovol")
    if screenshot:
        from qtpy.QtCore import QTimer

        def snap():
            viewer.screenshot(screenshot, canvas_only=False)
            viewer.close()

        QTimer.singleShot(1500, snap)
    napari.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

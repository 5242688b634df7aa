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
        "align",
        help="align sections: translation, rigid, affine or elastic, with QC",
        description="Align the sections of IN and write the aligned volume to OUT (format from its "
        "suffix, as in convert). Registration runs on downsized copies; the transforms are applied to "
        "the full-resolution sections.",
    )
    p.add_argument("input", help="folder of sections or volume")
    p.add_argument("output", help="OUT.ome.zarr, OUT.ome.tif, OUT.npy or an output folder")
    p.add_argument(
        "--method", choices=("translation", "rigid", "affine", "elastic"), default="rigid"
    )
    p.add_argument(
        "--reference",
        choices=("previous", "middle", "first"),
        default="previous",
        help="previous: each to its aligned neighbour outward from the middle (default); "
        "middle/first: all directly to that section",
    )
    p.add_argument(
        "--engine",
        choices=("histovol", "stackreg"),
        default="histovol",
        help="histovol: coarse rotation search + ECC (default); stackreg: pystackreg as the seed",
    )
    p.add_argument(
        "--reg-size",
        type=_positive_int,
        default=512,
        metavar="PX",
        help="register on copies at most PX pixels a side (default 512)",
    )
    p.add_argument(
        "--channel",
        choices=("auto", "od", "intensity", "inverted"),
        default="auto",
        help="registration channel (auto: optical density for brightfield RGB)",
    )
    p.add_argument(
        "--transforms",
        metavar="T.json",
        help="write the transforms (matrix per slice, elastic fields)",
    )
    p.add_argument(
        "--qc",
        metavar="QC.json",
        help="write the QC report (NCC before/after, transform sizes, flags)",
    )
    p.add_argument(
        "--apply",
        metavar="T.json",
        help="do not register: apply these transforms (another channel or a "
        "higher-resolution copy of the same sections)",
    )
    _add_scale_options(p)
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT (and T.json / QC.json) if they exist"
    )
    p.add_argument("--workers", type=_positive_int, default=min(4, os.cpu_count() or 2))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser(
        "warp-points",
        help="map x,y points of one input slice into the aligned frame",
        description="Map x,y points (landmarks, annotations) given in the pixel coordinates of one "
        "input slice into the aligned frame, elastic part included. POINTS.csv needs x and y columns "
        "(any case); other columns are kept.",
    )
    p.add_argument("transforms", metavar="T.json")
    p.add_argument("slice", metavar="SLICE", help="the slice's file name, z number, or #index")
    p.add_argument("points", metavar="POINTS.csv")
    p.add_argument("output", metavar="OUT.csv")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_warp_points)

    p = sub.add_parser(
        "interpolate",
        help="generate sections between sections, fill missing numbers, replace damaged ones",
        description="Generate interpolated planes: N frames between neighbouring sections "
        "(--frames-between) or exactly the missing z numbers (--fill-gaps), and/or regenerate damaged "
        "sections (--replace). Generated planes are flagged synthetic. A folder OUT is written plane by "
        "plane and a rerun resumes it.",
    )
    p.add_argument("input", help="folder of sections or volume")
    p.add_argument("output", help="output folder (resumable), OUT.ome.zarr, OUT.ome.tif or OUT.npy")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--frames-between", type=int, metavar="N", help="N evenly spaced frames between neighbours"
    )
    mode.add_argument(
        "--fill-gaps", action="store_true", help="generate exactly the missing z numbers (default)"
    )
    p.add_argument(
        "--replace", metavar="Z,Z,...", help="z numbers of damaged sections to regenerate"
    )
    p.add_argument(
        "--replace-flagged",
        metavar="QC.json",
        help="regenerate the sections flagged in an align QC file",
    )
    p.add_argument(
        "--method",
        choices=("flow", "linear", "model"),
        default="flow",
        help="flow: motion-compensated from optical flow (default); linear: cross-fade; "
        "model: a FILM/InterpolAI TensorFlow SavedModel (--model)",
    )
    p.add_argument("--model", metavar="DIR", help="SavedModel folder for --method model")
    p.add_argument(
        "--tile",
        type=_positive_int,
        default=512,
        metavar="PX",
        help="model tile size (default 512)",
    )
    p.add_argument(
        "--slice-format", choices=("tif", "png", "jpg", "bmp"), help="image format of a folder OUT"
    )
    _add_scale_options(p)
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT (a folder made with other parameters)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser(
        "build",
        help="folder of sections -> aligned, interpolated, multiscale OME-Zarr volume",
        description="The main job: read a folder of sections (z numbers, gaps), put them on a common "
        "canvas (--size), align them (--align), fill the gaps or add N frames between sections, and "
        "write a multiscale OME-Zarr with physical scale and synthetic-plane flags, plus "
        "OUT.transforms.json and OUT.qc.json beside it. Streams with bounded memory; --resume finishes a "
        "killed run.",
    )
    p.add_argument("input", help="folder of sections (or a volume)")
    p.add_argument("output", help="OUT.ome.zarr")
    p.add_argument(
        "--frames-between",
        type=int,
        metavar="N",
        help="N frames between sections (default: fill gaps only)",
    )
    p.add_argument(
        "--align", choices=("none", "translation", "rigid", "affine", "elastic"), default="rigid"
    )
    p.add_argument("--reference", choices=("previous", "middle", "first"), default="previous")
    p.add_argument(
        "--reg-size",
        type=_positive_int,
        default=512,
        metavar="PX",
        help="registration size (default 512)",
    )
    p.add_argument(
        "--size",
        type=_positive_int,
        metavar="PX",
        help="downsize sections to at most PX pixels a side",
    )
    p.add_argument(
        "--interpolation",
        choices=("flow", "linear"),
        default="flow",
        help="how generated planes are made",
    )
    _add_scale_options(p)
    p.add_argument(
        "--resume", action="store_true", help="reuse cached registrations and finish a killed run"
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="dask.distributed scheduler address (default: local threads)",
    )
    p.add_argument("--ngff-version", choices=("0.4", "0.5"), default="0.5")
    p.add_argument("--workers", type=_positive_int, default=min(4, os.cpu_count() or 2))
    p.add_argument("--overwrite", action="store_true", help="replace OUT and its side files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser(
        "focus",
        help="sharpness of sections and tiles: flags, focus maps, best plane",
        description="Score the sharpness of every section (and tile, with --tile) on its tissue; "
        "flag sections and tiles blurry relative to the stack (robust z-score); pick the best plane "
        "of a focus stack with a sub-step estimate.",
    )
    p.add_argument("input", help="folder of sections, focus stack or volume")
    p.add_argument(
        "--metric",
        choices=("laplacian", "tenengrad", "brenner", "normalized_variance", "spectral"),
        default="laplacian",
    )
    p.add_argument(
        "--tile",
        type=_positive_int,
        metavar="PX",
        help="also score tiles of PX pixels (focus maps)",
    )
    p.add_argument(
        "--threshold",
        type=_positive_float,
        default=3.5,
        metavar="Z",
        help="flag when the robust z-score is below -Z (default 3.5)",
    )
    p.add_argument(
        "--json",
        dest="json_out",
        metavar="OUT.json",
        help="write the scores, flags and maps as JSON",
    )
    p.add_argument("--skip-bad", action="store_true", help="leave out corrupt section images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_focus)

    p = sub.add_parser(
        "focus-train",
        help="train the defocus-distance regressor on your own sharp images",
        description="Train the focus regressor (residual CNN, Adam, ReduceLROnPlateau, early stopping) on "
        "sharp images defocused with a pillbox + diffraction PSF and noise; optionally add a real focus "
        "stack whose in-focus plane and step are known.",
    )
    p.add_argument("sharp", help="folder (or volume) of in-focus images")
    p.add_argument("output", metavar="OUT.pt", help="where to write the model")
    p.add_argument("--steps", type=_positive_int, default=1500)
    p.add_argument("--pixel-size", type=_positive_float, default=0.5, metavar="UM")
    p.add_argument(
        "--na", type=_positive_float, default=0.5, help="numerical aperture of the objective"
    )
    p.add_argument("--max-defocus", type=_positive_float, default=8.0, metavar="UM")
    p.add_argument("--stack", help="a real focus stack (folder) to add")
    p.add_argument(
        "--stack-focus", type=int, metavar="Z", help="z number of the stack's in-focus plane"
    )
    p.add_argument("--stack-step", type=_positive_float, metavar="UM", help="the stack's z step")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_focus_train)

    p = sub.add_parser(
        "compress",
        help="fit a 3D Gaussian mixture to a volume and store it as .hgm",
        description="Fit anisotropic 3D Gaussians to a single-channel volume (block by block "
        "when it is big) and store them quantised and entropy coded in OUT.hgm. The settings "
        "used go to OUT.fit.yaml and the fit's figures (PSNR, SSIM, ratio, loss history) to "
        "OUT.fit.json.",
    )
    p.add_argument("input", help="volume: folder of sections, .ome.zarr, .tif or .npy")
    p.add_argument("output", help="OUT.hgm")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--ratio", type=_positive_float, help="target compression ratio (raw bytes / file bytes)"
    )
    budget.add_argument("--gaussians", type=_positive_int, metavar="N", help="number of Gaussians")
    p.add_argument(
        "--time-budget",
        type=_positive_float,
        metavar="SECONDS",
        help="stop optimising after this long (the fit so far is kept)",
    )
    p.add_argument(
        "--config",
        metavar="FIT.yaml",
        help="fit settings (a saved OUT.fit.yaml works); options given here win",
    )
    p.add_argument("--iterations", type=_positive_int, help="optimiser steps per block")
    p.add_argument(
        "--block-size", type=_positive_int, metavar="PX", help="edge of the fitted blocks"
    )
    p.add_argument("--scheduler", metavar="ADDRESS", help="fit blocks on this dask cluster")
    p.add_argument("--workers", type=_positive_int, help="blocks fitted at once (default: cores)")
    _add_scale_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT and its side files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser(
        "decompress",
        help="evaluate an .hgm file: the whole volume, a region, or another resolution",
        description="Evaluate the Gaussians of IN.hgm on a voxel grid and write it as OUT "
        "(.ome.zarr, .ome.tif/.tif, .npy or a folder of slices). --roi takes voxel ranges of "
        "the original volume; --zoom samples a finer or coarser grid (the mixture is "
        "continuous).",
    )
    p.add_argument("input", help="IN.hgm")
    p.add_argument("output", help="OUT.ome.zarr, OUT.tif, OUT.npy or a folder")
    p.add_argument("--roi", metavar="z0:z1,y0:y1,x0:x1", help="region of the original volume")
    p.add_argument(
        "--zoom",
        type=_positive_float,
        default=1.0,
        metavar="F",
        help="voxels per original voxel along each axis (2: twice as fine; 0.5: half)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=min(4, os.cpu_count() or 2),
        help="threads evaluating and writing blocks",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_decompress)

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


def _write_side_file(path: str | None, overwrite: bool, writer) -> None:
    if not path:
        return
    from .core.io.atomic import check_output

    check_output(path, overwrite=overwrite)
    writer(path)


def cmd_align(args: argparse.Namespace) -> int:
    from .core.align import apply_transforms, iter_align
    from .core.io.atomic import check_output
    from .core.io.detect import detect_format, iter_write_volume, read_volume
    from .core.progress import drain_with_tqdm

    detect_format(args.output, for_output=True)
    check_output(args.output, overwrite=args.overwrite)
    for side in (args.transforms, args.qc):
        if side:
            check_output(side, overwrite=args.overwrite)
    vol = read_volume(
        args.input,
        on_corrupt="skip" if args.skip_bad else "error",
        pixel_size=args.pixel_size,
        section_spacing=args.section_spacing,
    )
    quiet = args.quiet or None
    if args.apply:
        aligned = apply_transforms(vol, args.apply)
    else:
        result = drain_with_tqdm(
            iter_align(
                vol,
                method=args.method,
                reference=args.reference,
                engine=args.engine,
                reg_size=args.reg_size,
                channel=args.channel,
                workers=args.workers,
            ),
            desc="align",
            disable=quiet,
        )
        aligned = result.volume
        _write_side_file(args.transforms, True, result.save_transforms)
        _write_side_file(args.qc, True, result.save_qc)
        flagged = result.flagged_z
        q = result.qc
        print(
            f"aligned {vol.shape[0]} sections ({args.method}, reference {args.reference}): mean NCC of neighbours "
            f"{q['mean_ncc_before'] if q['mean_ncc_before'] is not None else float('nan'):.3f} -> "
            f"{q['mean_ncc_after'] if q['mean_ncc_after'] is not None else float('nan'):.3f}"
            + (f"; flagged z: {', '.join(map(str, flagged))}" if flagged else "")
        )
    out = drain_with_tqdm(
        iter_write_volume(aligned, args.output, overwrite=args.overwrite, workers=args.workers),
        desc="align",
        disable=quiet,
    )
    print(f"wrote {out}")
    return 0


def cmd_warp_points(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from .core.align.transforms import load_transforms
    from .core.io.atomic import atomic_output

    tf = load_transforms(args.transforms)
    i = tf.index_of(args.slice)
    try:
        with open(args.points, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise InputError(f"Cannot read '{args.points}': {e.strerror}.") from None
    if not rows:
        raise InputError(f"'{args.points}' is empty.")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if "x" not in lower or "y" not in lower:
        raise InputError(
            f"'{args.points}' needs x and y columns in its header line; it has {header}."
        )
    ix, iy = lower.index("x"), lower.index("y")
    try:
        pts = np.array([[float(r[ix]), float(r[iy])] for r in rows[1:] if r], float)
    except (ValueError, IndexError) as e:
        raise InputError(f"'{args.points}' has a row without numeric x, y ({e}).") from None
    mapped = tf.transforms[i].source_to_aligned(pts) if len(pts) else pts
    with (
        atomic_output(args.output, overwrite=args.overwrite) as tmp,
        open(tmp, "w", newline="") as f,
    ):
        w = csv.writer(f)
        w.writerow(header)
        for r, (x, y) in zip([r for r in rows[1:] if r], mapped, strict=True):
            r = list(r)
            r[ix], r[iy] = f"{x:.4f}", f"{y:.4f}"
            w.writerow(r)
    print(f"wrote {args.output} ({len(pts)} points of slice {tf.files[i] or i})")
    return 0


def _parse_z_list(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(
            f"--replace takes z numbers separated by commas, like 12,31; not '{text}'."
        ) from None


def _flagged_from_qc(path: str | None) -> list[int]:
    if not path:
        return []
    try:
        doc = json.loads(Path(path).read_text())
        if "flagged_z" in doc and "sections" not in doc:  # a histovol focus report
            return [int(z) for z in doc["flagged_z"]]
        return [int(s["z"]) for s in doc["sections"] if s.get("flags")]
    except FileNotFoundError:
        raise InputError(f"The QC file '{path}' does not exist.") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"'{path}' is not a napari-histovol QC file ({e}).") from None


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .core.interpolate import iter_interpolate, iter_write_interpolated_folder
    from .core.io.detect import detect_format, iter_write_volume, read_volume
    from .core.progress import drain_with_tqdm

    fmt = detect_format(args.output, for_output=True)
    n = args.frames_between or 0
    if n < 0:
        raise InputError("--frames-between must be 0 or more.")
    replace_z = sorted(
        set(_parse_z_list(args.replace)) | set(_flagged_from_qc(args.replace_flagged))
    )
    vol = read_volume(
        args.input,
        on_corrupt="skip" if args.skip_bad else "error",
        pixel_size=args.pixel_size,
        section_spacing=args.section_spacing,
    )
    quiet = args.quiet or None
    result = drain_with_tqdm(
        iter_interpolate(
            vol,
            frames_between=n,
            replace_z=replace_z,
            method=args.method,
            model_dir=args.model,
            tile=args.tile,
        ),
        desc="interpolate",
        disable=quiet,
    )
    try:
        if result.plan.n_synthetic == 0:
            print(
                "histovol: nothing to generate: no gaps, no --frames-between, no --replace.",
                file=sys.stderr,
            )
        if fmt == "folder":
            params = {
                "input": str(Path(args.input).resolve()),
                "frames_between": n,
                "replace": replace_z,
                "method": args.method,
                "model": args.model,
                "tile": args.tile,
            }
            out = drain_with_tqdm(
                iter_write_interpolated_folder(
                    result,
                    args.output,
                    ext=args.slice_format,
                    overwrite=args.overwrite,
                    params=params,
                ),
                desc="interpolate",
                disable=quiet,
            )
        else:
            if args.slice_format:
                raise InputError("--slice-format applies only when OUT is a folder.")
            out = drain_with_tqdm(
                iter_write_volume(result.volume, args.output, overwrite=args.overwrite),
                desc="interpolate",
                disable=quiet,
            )
    finally:
        result.close()
    print(
        f"wrote {out}: {result.volume.shape[0]} planes, {result.plan.n_synthetic} generated "
        f"({args.method}), z spacing {result.volume.meta.scale[0]:g} {result.volume.meta.unit}"
    )
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .core.pipeline import iter_build_volume
    from .core.progress import drain_with_tqdm

    res = drain_with_tqdm(
        iter_build_volume(
            args.input,
            args.output,
            frames_between=args.frames_between,
            align=args.align,
            reference=args.reference,
            reg_size=args.reg_size,
            size=args.size,
            pixel_size=args.pixel_size,
            section_spacing=args.section_spacing,
            interp_method=args.interpolation,
            resume=args.resume,
            scheduler=args.scheduler,
            overwrite=args.overwrite,
            on_corrupt="skip" if args.skip_bad else "error",
            workers=args.workers,
            ngff_version=args.ngff_version,
        ),
        desc="build",
        disable=args.quiet or None,
    )
    z, y, x = res.scale
    print(
        f"wrote {res.out}: {' x '.join(map(str, res.shape))}, voxel {z:g} x {y:g} x {x:g}, "
        f"{len(res.synthetic_z)} generated planes"
        + (f", flagged z {', '.join(map(str, res.flagged_z))}" if res.flagged_z else "")
    )
    for p in (res.transforms, res.qc):
        if p:
            print(f"wrote {p}")
    return 0


def cmd_focus(args: argparse.Namespace) -> int:
    from .core.focus import iter_focus_stack
    from .core.io.atomic import atomic_output
    from .core.io.detect import read_volume
    from .core.progress import drain_with_tqdm

    vol = read_volume(args.input, on_corrupt="skip" if args.skip_bad else "error")
    rep = drain_with_tqdm(
        iter_focus_stack(vol, metric=args.metric, tile=args.tile, threshold=args.threshold),
        desc="focus",
        disable=args.quiet or None,
    )
    print(f"{'z':>6}  {'score':>12}  {'z-score':>8}  flag  file")
    for p in rep["planes"]:
        tiles = (
            f"  ({p['tiles']['flagged']} blurry tiles)"
            if "tiles" in p and p["tiles"]["flagged"]
            else ""
        )
        print(
            f"{p['z']:>6}  {p['score']:>12.6g}  {p['robust_z']:>8.2f}  {'BLUR' if p['out_of_focus'] else '    '}"
            f"  {p['file']}{tiles}"
        )
    print(
        f"best plane: z {rep['best_plane']} (sub-step {rep['best_plane_subframe']:.2f}); "
        f"out of focus: {', '.join(map(str, rep['flagged_z'])) or 'none'}"
    )
    if args.json_out:
        with atomic_output(args.json_out, overwrite=True) as tmp:
            tmp.write_text(json.dumps(rep, indent=1))
    return 0


def cmd_focus_train(args: argparse.Namespace) -> int:
    import numpy as np

    from .core.focus import focus_channel
    from .core.focus_model import PATCH, FocusDataset, Optics, save_model, train
    from .core.io.atomic import check_output
    from .core.io.detect import read_volume

    check_output(args.output, overwrite=args.overwrite)
    vol = read_volume(args.sharp)
    sharp = [focus_channel(np.asarray(vol.data[i].compute())) for i in range(vol.shape[0])]
    real = []
    if args.stack:
        if args.stack_focus is None or args.stack_step is None:
            raise InputError("--stack needs --stack-focus Z and --stack-step UM.")
        st = read_volume(args.stack)
        for i, z in enumerate(st.meta.z_numbers):
            g = focus_channel(np.asarray(st.data[i].compute()))
            d = abs(z - args.stack_focus) * args.stack_step
            for y in range(0, g.shape[0] - PATCH + 1, PATCH):
                for x in range(0, g.shape[1] - PATCH + 1, PATCH):
                    real.append((g[y : y + PATCH, x : x + PATCH], d))
    optics = Optics(pixel_um=args.pixel_size, na=args.na, max_defocus_um=args.max_defocus)
    try:
        ds = FocusDataset(sharp, optics, real=real)
    except ValueError as e:
        raise InputError(f"Cannot train: {e}.") from None
    model, history = train(
        ds,
        steps=args.steps,
        progress=lambda s, n, mae: print(f"step {s}/{n}: validation MAE {mae:.3f} um", flush=True),
    )
    info = {
        "trained_on": str(args.sharp),
        "real_stack": args.stack,
        "steps": history[-1]["step"] if history else 0,
        "val_mae_um": min(h["val_mae_um"] for h in history) if history else None,
        "history": history,
    }
    save_model(model, args.output, optics=optics, info=info)
    print(f"wrote {args.output} (validation MAE {info['val_mae_um']:.3f} um)")
    return 0


def _fit_side_files(out: str) -> tuple[Path, Path]:
    base = Path(out)
    stem = base.name[: -len(".hgm")] if base.name.lower().endswith(".hgm") else base.name
    return base.with_name(stem + ".fit.yaml"), base.with_name(stem + ".fit.json")


def cmd_compress(args: argparse.Namespace) -> int:
    from .core.gaussians import FitConfig, fit_report, iter_compress
    from .core.io.atomic import atomic_output, check_output
    from .core.io.detect import read_volume
    from .core.progress import drain_with_tqdm

    if not args.output.lower().endswith(".hgm"):
        raise InputError(f"The output '{args.output}' must end in .hgm.")
    if args.ratio is None and args.gaussians is None and args.config is None:
        raise InputError("Give a target with --ratio R or --gaussians N (or a --config file).")
    cfg = FitConfig.from_yaml(
        args.config,
        ratio=args.ratio,
        gaussians=args.gaussians,
        time_budget=args.time_budget,
        iterations=args.iterations,
        block_size=args.block_size,
    )
    yaml_path, json_path = _fit_side_files(args.output)
    for path in (args.output, yaml_path, json_path):
        check_output(path, overwrite=args.overwrite)
    vol = read_volume(
        args.input,
        on_corrupt="skip" if args.skip_bad else "error",
        pixel_size=args.pixel_size,
        section_spacing=args.section_spacing,
    )
    if vol.meta.rgb or vol.data.ndim != 3:
        raise InputError(
            f"'{args.input}' is not a single-channel 3D volume (shape {vol.shape}); "
            "convert one channel to gray first."
        )
    original = vol.data.compute()  # read once: fitted and measured against
    res = drain_with_tqdm(
        iter_compress(
            original,
            cfg,
            voxel_size=vol.meta.scale,
            unit=vol.meta.unit,
            workers=args.workers,
            scheduler=args.scheduler,
        ),
        desc="compress",
        disable=args.quiet or None,
    )
    with atomic_output(args.output, overwrite=args.overwrite) as tmp:
        tmp.write_bytes(res.data)
    report = {
        "input": str(args.input),
        "output": str(args.output),
        **fit_report(res, original),
        "history": res.history,
    }
    with atomic_output(yaml_path, overwrite=args.overwrite) as tmp:
        res.config.to_yaml(tmp)
    with atomic_output(json_path, overwrite=args.overwrite) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    print(
        f"wrote {args.output}: {len(res.mixture)} Gaussians, {len(res.data)} bytes, "
        f"ratio {res.ratio:.1f}, {res.bits_per_voxel:.3f} bits/voxel, "
        f"PSNR {report['psnr_db']:.2f} dB (foreground {report['psnr_foreground_db']:.2f}), "
        f"SSIM {report['ssim']:.4f}, fitted in {res.seconds:.0f} s"
    )
    print(f"wrote {yaml_path} and {json_path}")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from .core.gaussians import decompress_volume, parse_roi, read_hgm
    from .core.io.detect import detect_format, iter_write_volume
    from .core.progress import drain_with_tqdm

    fmt = detect_format(args.output, for_output=True)
    mix, header = read_hgm(args.input)
    roi = parse_roi(args.roi, header.shape) if args.roi else None
    vol = decompress_volume(mix, header, zoom=args.zoom, roi=roi)
    opts: dict = {"overwrite": args.overwrite}
    if fmt in ("ome-zarr", "ome-tiff", "npy"):
        opts["workers"] = args.workers
    out = drain_with_tqdm(
        iter_write_volume(vol, args.output, **opts), desc="decompress", disable=args.quiet or None
    )
    print(f"wrote {out} ({fmt}, shape {'x'.join(map(str, vol.shape))}, {header.dtype})")
    return 0


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in (
        "darwin",
        "win32",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from ._sample_data import sample_folder

    out_dir = Path(args.out)
    volume_path = _demo_build(sample_folder(), out_dir)
    if args.no_gui or not _has_display():
        if not args.no_gui:
            print(
                "histovol: no display found; writing the demo files instead (as with --no-gui).",
                file=sys.stderr,
            )
        png = _demo_png(volume_path, out_dir / "lung_lesion3_3d.png")
        print(f"wrote {png}")
        return 0
    return _demo_gui(volume_path, args.screenshot)


def _demo_build(folder: Path, out_dir: Path) -> Path:
    """Build the sample (align, 2 frames between sections) unless a finished build is there."""
    import warnings as _w

    from .core.errors import HistovolWarning
    from .core.io.ome_zarr import is_ome_zarr
    from .core.pipeline import iter_build_volume
    from .core.progress import drain_with_tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    volume_path = out_dir / "lung_lesion3.ome.zarr"
    if is_ome_zarr(volume_path):
        print(f"using the demo volume built before: {volume_path}")
        return volume_path
    with _w.catch_warnings():
        _w.simplefilter("ignore", HistovolWarning)
        res = drain_with_tqdm(
            iter_build_volume(folder, volume_path, frames_between=2, align="rigid", resume=True),
            desc="demo",
        )
    print(
        f"wrote {res.out}: {res.shape[0]} planes ({len(res.synthetic_z)} interpolated) from 5 sections "
        "(z 1, 3, 4, 5, 7; gaps 2 and 6 filled)"
    )
    return volume_path


def _demo_png(volume_path: Path, png: Path) -> Path:
    import imagecodecs
    import numpy as np

    from .core.io.ome_zarr import read_ome_zarr
    from .core.preview import to_uint8
    from .core.render3d import orthoviews

    vol = read_ome_zarr(volume_path)
    data = to_uint8(np.asarray(vol.data.compute()))
    z, y = data.shape[:2]
    view = orthoviews(data, z_scale=max(1.0, 0.3 * y / z))
    png.write_bytes(imagecodecs.png_encode(view))
    return png


def _demo_gui(volume_path: Path, screenshot: str | None) -> int:
    import napari

    from ._widgets.view3d_widget import View3DWidget

    viewer = napari.Viewer(title="napari-histovol demo: lung lesion 3, aligned and interpolated")
    layers = viewer.open(str(volume_path), plugin="napari-histovol")
    view = View3DWidget(viewer)
    viewer.window.add_dock_widget(view, name="3D view", area="right")
    view.layer.value = layers[0]
    view.make_rgb_renderable()
    view.z_exaggeration.value = 12.0
    view.axis.value = "y"
    view.position.value = 0.6
    viewer.window.resize(1500, 950)
    from qtpy.QtCore import QTimer

    def frame():  # once the window has its size: fit the clipped volume and tilt the camera
        viewer.reset_view()
        viewer.camera.angles = (-15, 25, 75)

    QTimer.singleShot(400, frame)
    if screenshot:

        def snap():
            viewer.screenshot(screenshot, canvas_only=False)
            viewer.close()

        QTimer.singleShot(2000, snap)
    napari.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

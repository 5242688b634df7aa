"""``histovol convert IN OUT``: folder <-> .ome.zarr <-> .ome.tif <-> .npy."""

from __future__ import annotations

import argparse

from ..core.errors import InputError
from ._options import (
    add_input,
    add_overwrite,
    add_quiet,
    add_scale,
    add_skip_bad,
    add_slice_format,
    add_workers,
    positive_int,
    progress,
    read_input,
    write_options,
)

NAME = "convert"


def register(sub) -> argparse.ArgumentParser:
    from ..core.io.ome_zarr import NGFF_VERSIONS

    p = sub.add_parser(
        NAME,
        help="folder <-> .ome.zarr <-> .ome.tif (pyramidal) <-> .npy",
        description="Convert between a folder of sections, OME-Zarr, pyramidal OME-TIFF and "
        ".npy. The output format follows OUT's suffix (.ome.zarr/.zarr, .ome.tif/.tif, .npy, "
        "else a folder).",
    )
    add_input(p)
    p.add_argument("output", metavar="OUT", help="OUT.ome.zarr, OUT.ome.tif, OUT.npy or a folder")
    add_scale(p)
    p.add_argument("--levels", type=positive_int, help="pyramid levels (default: down to 256 px)")
    p.add_argument("--ngff-version", choices=NGFF_VERSIONS, help="OME-Zarr version (default 0.5)")
    p.add_argument(
        "--chunk",
        type=positive_int,
        metavar="PX",
        help="OME-Zarr chunk / OME-TIFF tile size in y and x",
    )
    p.add_argument(
        "--compression",
        help="zstd (Zarr default), zlib (TIFF default), lz4, lzw, jpeg, none",
    )
    add_slice_format(p)
    add_workers(p)
    add_skip_bad(p)
    add_overwrite(p)
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.io.detect import detect_format, iter_write_volume, writer_accepts

    fmt = detect_format(args.output, for_output=True)
    given = {
        "--levels": ("n_levels", args.levels),
        "--ngff-version": ("ngff_version", args.ngff_version),
        "--chunk": ("xy_chunk" if fmt == "ome-zarr" else "tile", args.chunk),
        "--compression": ("compression", args.compression),
        "--slice-format": ("ext", args.slice_format),
    }
    for flag, (key, value) in given.items():
        if value is not None and not writer_accepts(fmt, key):
            raise InputError(f"{flag} does not apply when writing {fmt} output.")
    vol = read_input(args, single_image=True)
    opts = write_options(fmt, workers=args.workers, **{k: v for k, v in given.values()})
    out = progress(
        iter_write_volume(vol, args.output, overwrite=args.overwrite, **opts), args, NAME
    )
    planes = f"{vol.shape[0]} plane" + ("s" if vol.shape[0] != 1 else "")
    print(f"wrote {out} ({fmt}, {planes})")
    return 0

"""``histovol decompress IN.hgm OUT``: evaluate a Gaussian mixture on a voxel grid."""

from __future__ import annotations

import argparse

from ._options import add_overwrite, add_quiet, add_workers, positive_float, progress, write_options

NAME = "decompress"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help="evaluate an .hgm file: the whole volume, a region, or another resolution",
        description="Evaluate the Gaussians of IN.hgm on a voxel grid and write it as OUT "
        "(.ome.zarr, .ome.tif/.tif, .npy or a folder of slices). --roi takes voxel ranges of "
        "the original volume; --zoom samples a finer or coarser grid (the mixture is "
        "continuous).",
    )
    p.add_argument("input", metavar="IN.hgm")
    p.add_argument("output", metavar="OUT", help="OUT.ome.zarr, OUT.tif, OUT.npy or a folder")
    p.add_argument("--roi", metavar="z0:z1,y0:y1,x0:x1", help="region of the original volume")
    p.add_argument(
        "--zoom",
        type=positive_float,
        default=1.0,
        metavar="F",
        help="voxels per original voxel along each axis (2: twice as fine; 0.5: half)",
    )
    add_workers(p, "threads evaluating and writing blocks")
    add_overwrite(p)
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.gaussians import iter_decompress_file
    from ..core.io.detect import detect_format

    fmt = detect_format(args.output, for_output=True)
    out, size = progress(
        iter_decompress_file(
            args.input,
            args.output,
            zoom=args.zoom,
            roi=args.roi,
            overwrite=args.overwrite,
            **write_options(fmt, workers=args.workers),
        ),
        args,
        NAME,
    )
    print(f"wrote {out} ({fmt}, shape {'x'.join(map(str, size.shape))}, {size.dtype})")
    return 0

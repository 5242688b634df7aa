"""``histovol warp-points T.json SLICE POINTS.csv OUT.csv``: points into the aligned frame."""

from __future__ import annotations

import argparse

from ._options import add_overwrite

NAME = "warp-points"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help="map x,y points of one input slice into the aligned frame (or back)",
        description="Map x,y points (landmarks, annotations) given in the pixel coordinates of "
        "one input slice into the aligned frame, elastic part included; with --inverse, points "
        "of the aligned frame back into that slice's pixels. POINTS.csv needs x and y "
        "columns (any case); other columns are kept.",
    )
    p.add_argument("transforms", metavar="T.json")
    p.add_argument("slice", metavar="SLICE", help="the slice's file name, z number, or #index")
    p.add_argument("points", metavar="POINTS.csv")
    p.add_argument("output", metavar="OUT.csv")
    p.add_argument(
        "--inverse",
        action="store_true",
        help="POINTS.csv is in the aligned frame: map it back into the slice's pixels",
    )
    add_overwrite(p, "OUT.csv")
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.align.points import read_points_csv, write_points_csv
    from ..core.align.transforms import load_transforms
    from ..core.io.atomic import check_output

    check_output(args.output, overwrite=args.overwrite, kind="file")
    tf = load_transforms(args.transforms)
    i = tf.index_of(args.slice)
    table = read_points_csv(args.points)
    t = tf.transforms[i]
    mapping = t.aligned_to_source if args.inverse else t.source_to_aligned
    mapped = mapping(table.xy) if len(table.xy) else table.xy
    write_points_csv(args.output, table.with_xy(mapped), overwrite=args.overwrite)
    where = "from the aligned frame to" if args.inverse else "of"
    print(f"wrote {args.output} ({len(table.xy)} points {where} slice {tf.files[i] or i})")
    return 0

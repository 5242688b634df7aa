"""``histovol stitch IN OUT``: tiles -> a mosaic (or a folder of sections), with TILES.json."""

from __future__ import annotations

import argparse

from ._options import add_input, add_overwrite, add_quiet, add_scheduler, add_workers, progress

NAME = "stitch"


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction in [0, 1)")
    return v


def register(sub) -> argparse.ArgumentParser:
    from ..core.stitch import BLENDS, MODELS

    p = sub.add_parser(
        NAME,
        help="stitch overlapping tiles into one section (or a folder of sections), with edge QC",
        description="Stitch the tiles in IN into OUT (.ome.tif pyramidal, .ome.zarr, .tif, .png; "
        "a folder name when IN holds several sections). Pairs are registered, tested against "
        "chance and solved together; TILES.json records placements and every edge's QC.",
    )
    add_input(p, "folder of tiles (of one section, or of several: names carry s/sec/z/t NUMBER)")
    p.add_argument(
        "output", metavar="OUT", help="OUT.ome.tif, OUT.ome.zarr, OUT.tif, OUT.png or a folder"
    )
    p.add_argument("--grid", metavar="ROWSxCOLS", help="tiles in natural name order, row by row")
    p.add_argument(
        "--overlap",
        type=_fraction,
        default=0.1,
        metavar="FRACTION",
        help="nominal overlap of a --grid (default 0.1)",
    )
    p.add_argument("--positions", metavar="POS.csv", help="nominal top-left positions: file,x,y")
    p.add_argument(
        "--model",
        choices=MODELS,
        default="translation",
        help="tile transform (default translation)",
    )
    p.add_argument(
        "--blend", choices=BLENDS, default="linear", help="overlap blending (default linear)"
    )
    p.add_argument("--tiles-out", metavar="TILES.json", help="write placements and edge QC")
    add_workers(p, "threads registering pairs and rendering chunks")
    add_scheduler(p)
    add_overwrite(p, "OUT (and TILES.json)")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.stitch import iter_stitch

    result = progress(
        iter_stitch(
            args.input,
            args.output,
            grid=args.grid,
            overlap=args.overlap,
            positions=args.positions,
            model=args.model,
            blend=args.blend,
            tiles_out=args.tiles_out,
            overwrite=args.overwrite,
            scheduler=args.scheduler,
            **({"workers": args.workers} if args.workers else {}),
        ),
        args,
        NAME,
    )
    for z, placement in result.sections:
        acc = sum(e.status == "accepted" for e in placement.edges)
        where = f"section {z}: " if z is not None else ""
        print(
            f"{where}{len(placement.tiles)} tiles, {acc}/{len(placement.edges)} edges accepted, "
            f"mosaic {placement.mosaic_shape[0]} x {placement.mosaic_shape[1]} px"
            + (f"; flagged: {', '.join(placement.flagged)}" if placement.flagged else "")
        )
    print(f"wrote {result.out}" + (f", {result.tiles_out}" if result.tiles_out else ""))
    return 0

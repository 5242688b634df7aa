"""``histovol focus IN``: sharpness of sections and tiles, flags, best plane."""

from __future__ import annotations

import argparse

from ._options import (
    add_input,
    add_overwrite,
    add_quiet,
    add_skip_bad,
    positive_float,
    positive_int,
    progress,
    read_input,
)

NAME = "focus"


def register(sub) -> argparse.ArgumentParser:
    from ..core.focus import DEFAULT_METRIC, METRICS

    p = sub.add_parser(
        NAME,
        help="sharpness of sections and tiles: flags, focus maps, best plane",
        description="Score the sharpness of every section (and tile, with --tile) on its "
        "tissue; flag sections and tiles blurry relative to the stack (robust z-score); pick the "
        "best plane of a focus stack with a sub-step estimate.",
    )
    add_input(p, "folder of sections, focus stack or volume")
    p.add_argument(
        "--metric", choices=METRICS, default=DEFAULT_METRIC, help=f"default {DEFAULT_METRIC}"
    )
    p.add_argument("--tile", type=positive_int, metavar="PX", help="also score tiles of PX pixels")
    p.add_argument(
        "--threshold",
        type=positive_float,
        default=3.5,
        metavar="Z",
        help="flag when the robust z-score is below -Z (default 3.5)",
    )
    p.add_argument("--json", dest="json_out", metavar="OUT.json", help="write scores, flags, maps")
    add_skip_bad(p)
    add_overwrite(p, "OUT.json")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.focus import iter_focus_stack
    from ..core.io.atomic import check_output, write_json

    if args.json_out:
        check_output(args.json_out, overwrite=args.overwrite, kind="file")
    vol = read_input(args)
    rep = progress(
        iter_focus_stack(vol, metric=args.metric, tile=args.tile, threshold=args.threshold),
        args,
        NAME,
    )
    print(f"{'z':>6}  {'score':>12}  {'z-score':>8}  flag  file")
    for p in rep["planes"]:
        tiles = p.get("tiles", {}).get("flagged")
        robust = "-" if p["robust_z"] is None else f"{p['robust_z']:.2f}"  # "-": not judged
        name = p["file"] or ("(generated)" if p.get("synthetic") else "")
        print(
            f"{p['z']:>6}  {p['score']:>12.6g}  {robust:>8}  "
            f"{'BLUR' if p['out_of_focus'] else '    '}  {name}"
            + (f"  ({tiles} blurry tiles)" if tiles else "")
        )
    doubt = " (not to be trusted: see the warning)" if rep.get("model_estimates_flat") else ""
    print(
        f"best plane: z {rep['best_plane']} (sub-step {rep['best_plane_subframe']:.2f}){doubt}; "
        f"out of focus: {', '.join(map(str, rep['flagged_z'])) or 'none'}"
    )
    if args.json_out:
        write_json(args.json_out, rep, overwrite=args.overwrite)
        print(f"wrote {args.json_out}")
    return 0

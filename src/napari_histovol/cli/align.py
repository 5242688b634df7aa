"""``histovol align IN OUT``: align the sections, with transforms and QC files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import (
    add_global_align,
    add_input,
    add_overwrite,
    add_quiet,
    add_scale,
    add_skip_bad,
    add_workers,
    positive_int,
    progress,
    read_input,
    write_options,
)

NAME = "align"


def register(sub) -> argparse.ArgumentParser:
    from ..core.align import CHANNELS, DEFAULT_REFERENCE, ENGINES, METHODS, REFERENCES

    p = sub.add_parser(
        NAME,
        help="align sections: translation, rigid, affine or elastic, with QC",
        description="Align the sections of IN and write the aligned volume to OUT (format from "
        "its suffix, as in convert). Registration runs on downsized copies; the transforms are "
        "applied to the full-resolution sections.",
    )
    add_input(p)
    p.add_argument("output", metavar="OUT", help="OUT.ome.zarr, OUT.ome.tif, OUT.npy or a folder")
    p.add_argument(
        "--method", choices=METHODS, default="rigid", help="transform model (default rigid)"
    )
    p.add_argument(
        "--reference",
        choices=REFERENCES,
        default=DEFAULT_REFERENCE,
        help="global: each to K neighbours on each side, all solved at once (default); "
        "previous: each to its aligned neighbour outward from the middle (a chain); "
        "middle/first: all directly to that section",
    )
    add_global_align(p)
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="histovol",
        help="histovol: coarse rotation search + ECC (default); stackreg: pystackreg as the seed",
    )
    p.add_argument(
        "--reg-size",
        type=positive_int,
        default=512,
        metavar="PX",
        help="register on copies at most PX pixels a side (default 512)",
    )
    p.add_argument(
        "--channel",
        choices=CHANNELS,
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
        help="do not register: apply these transforms (another channel or a higher-resolution "
        "copy of the same sections)",
    )
    add_scale(p)
    add_workers(p, "threads registering and writing")
    add_skip_bad(p)
    add_overwrite(p, "OUT (and T.json / QC.json)")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    import sys

    from ..core.align import apply_transforms, iter_align, turn_note
    from ..core.align.transforms import fields_folder
    from ..core.errors import InputError
    from ..core.io.atomic import check_output, remove_path
    from ..core.io.detect import detect_format, iter_write_volume

    fmt = detect_format(args.output, for_output=True)
    sides = [s for s in (args.transforms, args.qc) if s]
    if args.apply and sides:
        raise InputError("--transforms and --qc describe a registration; --apply does none.")
    for path in [args.output, *sides]:  # all checked before any work
        check_output(path, overwrite=args.overwrite, kind=None if path == args.output else "file")
    vol = read_input(args)
    workers = args.workers
    if args.apply:
        aligned = apply_transforms(vol, args.apply)
        result = None
    else:
        result = progress(
            iter_align(
                vol,
                method=args.method,
                reference=args.reference,
                engine=args.engine,
                reg_size=args.reg_size,
                channel=args.channel,
                neighbours=args.neighbours,
                smooth=args.smooth,
                **({"workers": workers} if workers else {}),
            ),
            args,
            NAME,
        )
        aligned = result.volume
    written: list[Path] = []
    try:  # the side files first (small), then the volume; all of them or none
        if result is not None and args.transforms:
            written += [result.save_transforms(args.transforms, overwrite=args.overwrite)]
            written += [fields_folder(written[-1])]
        if result is not None and args.qc:
            written += [result.save_qc(args.qc, overwrite=args.overwrite)]
        out = progress(
            iter_write_volume(
                aligned,
                args.output,
                overwrite=args.overwrite,
                **write_options(fmt, workers=workers),
            ),
            args,
            NAME,
        )
    except BaseException:
        for path in written:
            remove_path(path)
        raise
    if result is not None:
        q = result.qc
        nan = float("nan")
        print(
            f"aligned {vol.shape[0]} sections ({args.method}, reference {args.reference}): mean "
            f"NCC of neighbours {_num(q['mean_ncc_before'], nan):.3f} -> "
            f"{_num(q['mean_ncc_after'], nan):.3f}"
            + (f"; flagged z: {', '.join(map(str, result.flagged_z))}" if result.flagged_z else "")
        )
        note = turn_note(q)
        if note:
            print(f"note: {note}.", file=sys.stderr)
    print(f"wrote {out}" + "".join(f", {s}" for s in sides))
    return 0


def _num(v, default):
    return default if v is None else v

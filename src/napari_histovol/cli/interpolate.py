"""``histovol interpolate IN OUT``: frames between sections, missing numbers, damaged sections."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._options import (
    add_input,
    add_overwrite,
    add_quiet,
    add_scale,
    add_skip_bad,
    add_slice_format,
    add_workers,
    model_checkpoint,
    non_negative_int,
    output_format,
    positive_float,
    positive_int,
    progress,
    read_input,
    write_options,
    z_list,
)

NAME = "interpolate"


def register(sub) -> argparse.ArgumentParser:
    from ..core.interpolate import METHODS

    p = sub.add_parser(
        NAME,
        help="generate sections between sections, fill missing numbers, replace damaged ones",
        description="Generate interpolated planes: N frames between neighbouring sections "
        "(--frames-between) or exactly the missing z numbers (--fill-gaps, the default), and/or "
        "regenerate damaged sections (--replace, --replace-flagged). Generated planes are "
        "flagged synthetic. A killed run resumes when the same command is run again.",
    )
    add_input(p)
    p.add_argument(
        "output", metavar="OUT", help="output folder, OUT.ome.zarr, OUT.ome.tif or OUT.npy"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--frames-between",
        type=non_negative_int,
        metavar="N",
        help="N evenly spaced frames between neighbours",
    )
    mode.add_argument(
        "--fill-gaps", action="store_true", help="generate exactly the missing z numbers (default)"
    )
    p.add_argument(
        "--replace", type=z_list, metavar="Z,Z", help="z numbers of damaged sections to regenerate"
    )
    p.add_argument(
        "--replace-flagged",
        metavar="QC.json",
        help="regenerate the sections a QC or focus report flags",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="flow",
        help="flow: motion-compensated from optical flow (default); linear: cross-fade; "
        "model: a FILM/InterpolAI TensorFlow SavedModel (--model); learned: a network "
        "trained on these sections' own x-y planes (--time-budget)",
    )
    p.add_argument(
        "--time-budget",
        type=positive_float,
        metavar="SECONDS",
        help="for --method learned: seconds to train and apply the model (default 150)",
    )
    p.add_argument("--model", metavar="DIR", help="SavedModel folder for --method model")
    p.add_argument(
        "--tile", type=positive_int, default=512, metavar="PX", help="model tile size (default 512)"
    )
    add_slice_format(p)
    add_scale(p)
    add_workers(p)
    add_skip_bad(p)
    add_overwrite(p, "OUT (a folder made with other parameters)")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.interpolate import iter_interpolate, iter_write_interpolated_folder
    from ..core.io.detect import iter_write_volume
    from ..core.qc import read_flagged_z

    fmt = output_format(args, check_folder=False)  # its folders resume
    n = args.frames_between or 0
    replace_z = sorted(
        set(args.replace or [])
        | set(read_flagged_z(args.replace_flagged) if args.replace_flagged else [])
    )
    vol = read_input(args)
    checkpoint = model_checkpoint(args.output, "learned")
    result = progress(
        iter_interpolate(
            vol,
            frames_between=n,
            replace_z=replace_z,
            method=args.method,
            model_dir=args.model,
            tile=args.tile,
            time_budget=args.time_budget,
            checkpoint=checkpoint if args.method == "learned" else None,
        ),
        args,
        NAME,
    )
    try:
        if result.plan.n_synthetic == 0:
            print(
                "histovol: nothing to generate: no gaps, no --frames-between, no --replace.",
                file=sys.stderr,
            )
        if fmt == "folder":
            params = {
                "input": str(Path(args.input).expanduser().resolve()),
                "files": list(vol.meta.files),
                "frames_between": n,
                "replace": replace_z,
                "method": args.method,
                "model": args.model,
                "tile": args.tile,
                "time_budget": args.time_budget,
            }
            writer = iter_write_interpolated_folder(
                result, args.output, ext=args.slice_format, overwrite=args.overwrite, params=params
            )
        else:
            writer = iter_write_volume(
                result.volume,
                args.output,
                overwrite=args.overwrite,
                **write_options(fmt, workers=args.workers),
            )
        out = progress(writer, args, NAME)
    finally:
        result.close()
    if args.method == "learned":
        from ..core.io.atomic import remove_path

        remove_path(checkpoint)
    meta = result.volume.meta
    print(
        f"wrote {out}: {result.volume.shape[0]} planes, {result.plan.n_synthetic} generated "
        f"({args.method}), z spacing {meta.scale[0]:g} {meta.unit}"
    )
    return 0

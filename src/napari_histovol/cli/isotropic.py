"""``histovol isotropic IN OUT --factor F``: learned axial reconstruction."""

from __future__ import annotations

import argparse
import hashlib
import json
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
)

NAME = "isotropic"


def register(sub) -> argparse.ArgumentParser:
    from ..core.isotropic import DEFAULT_TIME_BUDGET

    p = sub.add_parser(
        NAME,
        help="reconstruct planes along z with a model learned from the volume itself",
        description="Axial reconstruction: OUT has (n-1)*F+1 planes, plane k*F is input plane "
        "k, the others (and missing section numbers) are reconstructed by a small network "
        "trained on the volume's own x-y planes (a lateral axis standing in for z), within "
        "the time budget, with no pretrained weights. Reconstructed planes are flagged "
        "synthetic; the z spacing becomes spacing / F. Uses the GPU when torch sees one. A "
        "killed run resumes: the trained model is kept beside OUT until OUT is written.",
    )
    add_input(p)
    p.add_argument(
        "output", metavar="OUT", help="output folder, OUT.ome.zarr, OUT.ome.tif or OUT.npy"
    )
    p.add_argument(
        "--factor",
        type=positive_float,
        required=True,
        metavar="F",
        help="planes per section spacing (e.g. 4; may be fractional: spacing / target spacing)",
    )
    p.add_argument(
        "--time-budget",
        type=positive_float,
        default=DEFAULT_TIME_BUDGET,
        metavar="SECONDS",
        help=f"seconds to train and apply the model (default {DEFAULT_TIME_BUDGET:g})",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help="train exactly N steps instead of to the budget (reproducible with --seed)",
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, metavar="N", help="training seed (default 0)"
    )
    add_slice_format(p)
    add_scale(p)
    add_workers(p)
    add_skip_bad(p)
    add_overwrite(p, "OUT")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.interpolate import iter_write_interpolated_folder
    from ..core.interpolate.stack import InterpolationResult
    from ..core.io.atomic import remove_path
    from ..core.io.detect import iter_write_volume
    from ..core.isotropic import iter_isotropic

    fmt = output_format(args, check_folder=False)  # its folders resume
    vol = read_input(args)
    out_path = Path(args.output).expanduser()
    checkpoint = model_checkpoint(args.output, "isotropic")
    result = progress(
        iter_isotropic(
            vol,
            factor=args.factor,
            time_budget=args.time_budget,
            steps=args.steps,
            seed=args.seed,
            checkpoint=checkpoint,
        ),
        args,
        NAME,
    )
    params = {
        "input": str(Path(args.input).expanduser().resolve()),
        "files": list(vol.meta.files),
        "factor": args.factor,
        "steps": args.steps,
        "seed": args.seed,
        "time_budget": args.time_budget,
        "scale": list(vol.meta.scale),
    }
    if fmt == "folder":
        writer = iter_write_interpolated_folder(
            InterpolationResult(result.volume, None),
            out_path,
            ext=args.slice_format,
            overwrite=args.overwrite,
            params=params,
        )
    else:
        opts = write_options(fmt, workers=args.workers)
        if fmt == "ome-zarr":
            key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()
            opts["resume_key"] = key
        writer = iter_write_volume(result.volume, out_path, overwrite=args.overwrite, **opts)
    out = progress(writer, args, NAME)
    remove_path(checkpoint)
    meta, model = result.volume.meta, result.model
    print(
        f"wrote {out}: {result.volume.shape[0]} planes, {sum(meta.synthetic)} reconstructed, "
        f"z spacing {meta.scale[0]:g} {meta.unit}; {model.describe()}"
    )
    if result.budget_note:
        print(f"note: {result.budget_note}.", file=sys.stderr)
    return 0

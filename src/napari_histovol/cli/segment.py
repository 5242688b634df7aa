"""``histovol segment IN OUT_LABELS``: objects from clicks and scribbles, through the volume."""

from __future__ import annotations

import argparse

from ._options import (
    add_input,
    add_overwrite,
    add_quiet,
    add_scale,
    progress,
    read_input,
    write_options,
)

NAME = "segment"
LABEL_FORMATS = ("ome-zarr", "ome-tiff")


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help="3D objects from clicks (PROMPTS.csv) and scribbles, without model weights",
        description="Segment the objects named by clicks and scribbles: a pixel classifier "
        "trained on the fly on multi-scale texture and stain features, then either a seeded "
        "watershed in each clicked section and propagation through the neighbouring sections "
        "until each object ends (serial sections, or a voxel size not known), or one 3D "
        "seeded watershed (a known voxel size with sections at most 3 pixels apart). "
        "OUT_LABELS holds object k's voxels as k, at the input's scale.",
    )
    add_input(p, "volume or folder of sections")
    p.add_argument("output", metavar="OUT_LABELS", help="label volume: OUT.ome.zarr or OUT.tif")
    p.add_argument(
        "--prompts",
        metavar="PROMPTS.csv",
        help="clicks: columns z,y,x,object,positive (voxel coordinates; positive 1 or 0)",
    )
    p.add_argument(
        "--scribbles",
        metavar="SCRIBBLES",
        help="label volume of the input's shape (0 unlabelled); labels that PROMPTS.csv names "
        "are those objects, others are background",
    )
    p.add_argument(
        "--model",
        metavar="CHECKPOINT",
        help="a local nnInteractive model folder that segments instead of the weight-free method "
        "(optional; nothing is downloaded; its licence is printed)",
    )
    add_scale(p)
    add_overwrite(p, "OUT_LABELS")
    add_quiet(p)
    return p


def _cli_words(e: Exception) -> str:
    return str(e).replace("leave the model out", "leave out --model")


def run(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.io.atomic import check_output
    from ..core.io.detect import detect_format, iter_write_volume
    from ..core.segment import (
        check_model_backend,
        iter_segment_volume,
        load_pretrained,
        read_prompts_csv,
        scribbles_from_labels,
    )

    fmt = detect_format(args.output, for_output=True)
    if fmt not in LABEL_FORMATS:
        raise InputError(
            f"Labels are written to .ome.zarr or .tif, not '{args.output}'; name OUT_LABELS "
            "OUT.ome.zarr or OUT.tif."
        )
    check_output(args.output, overwrite=args.overwrite)
    if args.model:
        try:
            check_model_backend(args.model)
        except InputError as e:
            raise InputError(_cli_words(e)) from None
    if not args.prompts and not args.scribbles:
        raise InputError(
            "Nothing to segment: give clicks with --prompts PROMPTS.csv or --scribbles."
        )
    prompts = read_prompts_csv(args.prompts) if args.prompts else []
    vol = read_input(args)
    scribbles = None
    if args.scribbles:
        scribbles = scribbles_from_labels(
            read_input(args, args.scribbles).data, vol.shape, source=f"'{args.scribbles}'"
        )
    model = None
    if args.model:
        try:
            model = load_pretrained(args.model)
        except InputError as e:
            raise InputError(_cli_words(e)) from None
        print(
            f"model: nnInteractive from '{model.folder}' on {model.session.device}; "
            f"licence: {model.licence}"
        )
    result = progress(
        iter_segment_volume(vol, prompts, scribbles=scribbles, model=model), args, NAME
    )
    out = progress(
        iter_write_volume(
            result.labels, args.output, overwrite=args.overwrite, **write_options(fmt, n_levels=1)
        ),
        args,
        NAME,
    )
    unit = "µm³" if result.voxel_um3 is not None else "voxels"
    print(f"wrote {out}: {len(result.voxels)} object(s)")
    print(f"{'object':>6}  {'voxels':>10}  {'volume (' + unit + ')':>16}")
    for row in result.volumes():
        v = row["volume_um3"] if row["volume_um3"] is not None else row["voxels"]
        print(f"{row['object']:>6}  {row['voxels']:>10}  {v:>16.6g}")
    return 0

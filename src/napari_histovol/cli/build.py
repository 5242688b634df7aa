"""``histovol build IN OUT.ome.zarr``: the main job."""

from __future__ import annotations

import argparse

from ._options import (
    add_global_align,
    add_input,
    add_overwrite,
    add_quiet,
    add_scale,
    add_scheduler,
    add_skip_bad,
    add_workers,
    non_negative_int,
    on_corrupt,
    positive_float,
    positive_int,
    progress,
)

NAME = "build"


def register(sub) -> argparse.ArgumentParser:
    from ..core.align import DEFAULT_REFERENCE, REFERENCES
    from ..core.io.ome_zarr import DEFAULT_NGFF, NGFF_VERSIONS
    from ..core.pipeline import ALIGN_CHOICES, INTERPOLATION_CHOICES

    p = sub.add_parser(
        NAME,
        help="folder of sections -> aligned, interpolated, multiscale OME-Zarr volume",
        description="The main job: read a folder of sections (z numbers, gaps), put them on a "
        "common canvas (--size), align them (--align), fill the gaps or add N frames between "
        "sections, and write a multiscale OME-Zarr with physical scale and synthetic-plane "
        "flags, plus OUT.transforms.json and OUT.qc.json beside it. Streams with bounded "
        "memory; --resume finishes a killed run.",
    )
    add_input(p, "folder of sections (or a volume)")
    p.add_argument("output", metavar="OUT.ome.zarr")
    p.add_argument(
        "--frames-between",
        type=non_negative_int,
        metavar="N",
        help="N frames between sections (default: fill the gaps only)",
    )
    p.add_argument("--align", choices=ALIGN_CHOICES, default="rigid", help="default rigid")
    p.add_argument(
        "--reference",
        choices=REFERENCES,
        default=DEFAULT_REFERENCE,
        help=f"default {DEFAULT_REFERENCE}",
    )
    add_global_align(p)
    p.add_argument(
        "--reg-size",
        type=positive_int,
        default=512,
        metavar="PX",
        help="registration size (default 512)",
    )
    p.add_argument(
        "--size",
        type=positive_int,
        metavar="PX",
        help="downsize sections to at most PX pixels a side",
    )
    p.add_argument(
        "--interpolation",
        choices=INTERPOLATION_CHOICES,
        default="flow",
        help="how generated planes are made (default flow)",
    )
    p.add_argument(
        "--time-budget",
        type=positive_float,
        metavar="SECONDS",
        help="for --interpolation learned: seconds to train and apply the model (default 150)",
    )
    add_scale(p)
    p.add_argument(
        "--resume", action="store_true", help="reuse cached registrations and finish a killed run"
    )
    add_scheduler(p)
    p.add_argument(
        "--ngff-version", choices=NGFF_VERSIONS, default=DEFAULT_NGFF, help="OME-Zarr version"
    )
    add_workers(p)
    add_skip_bad(p)
    add_overwrite(p, "OUT and its side files")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.pipeline import iter_build_volume

    res = progress(
        iter_build_volume(
            args.input,
            args.output,
            frames_between=args.frames_between,
            align=args.align,
            reference=args.reference,
            neighbours=args.neighbours,
            smooth=args.smooth,
            reg_size=args.reg_size,
            size=args.size,
            pixel_size=args.pixel_size,
            section_spacing=args.section_spacing,
            interp_method=args.interpolation,
            time_budget=args.time_budget,
            resume=args.resume,
            scheduler=args.scheduler,
            overwrite=args.overwrite,
            on_corrupt=on_corrupt(args),
            **({"workers": args.workers} if args.workers else {}),
            ngff_version=args.ngff_version,
        ),
        args,
        NAME,
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

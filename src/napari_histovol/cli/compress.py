"""``histovol compress IN OUT.hgm``: fit a 3D Gaussian mixture and store it."""

from __future__ import annotations

import argparse
import sys

from ._options import (
    add_input,
    add_overwrite,
    add_quiet,
    add_scale,
    add_scheduler,
    add_skip_bad,
    add_workers,
    positive_float,
    positive_int,
    progress,
    read_input,
)

NAME = "compress"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help="fit a 3D Gaussian mixture to a volume and store it as .hgm",
        description="Fit anisotropic 3D Gaussians to a single-channel volume (block by block "
        "when it is big) and store them quantised and entropy coded in OUT.hgm. The settings "
        "used go to OUT.fit.yaml and the fit's figures (PSNR, SSIM, ratio, loss history) to "
        "OUT.fit.json.",
    )
    add_input(p, "volume: folder of sections, .ome.zarr, .tif or .npy")
    p.add_argument("output", metavar="OUT.hgm")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--ratio", type=positive_float, help="target compression ratio (raw bytes / file bytes)"
    )
    budget.add_argument("--gaussians", type=positive_int, metavar="N", help="number of Gaussians")
    p.add_argument(
        "--time-budget",
        type=positive_float,
        metavar="SECONDS",
        help="stop optimising after this long (the fit so far is kept)",
    )
    p.add_argument(
        "--config",
        metavar="FIT.yaml",
        help="fit settings (a saved OUT.fit.yaml works); options given here win",
    )
    p.add_argument("--iterations", type=positive_int, metavar="N", help="optimiser steps per block")
    p.add_argument(
        "--block-size", type=positive_int, metavar="PX", help="edge of the fitted blocks"
    )
    add_scheduler(p)
    add_workers(p, "blocks fitted at once")
    add_scale(p)
    add_skip_bad(p)
    add_overwrite(p, "OUT and its side files")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.gaussians import FitConfig, fit_side_files, iter_compress_file

    if args.ratio is None and args.gaussians is None and args.config is None:
        raise InputError("Give a target with --ratio R or --gaussians N (or a --config file).")
    cfg = FitConfig.from_yaml(
        args.config,
        ratio=args.ratio,
        gaussians=args.gaussians,
        time_budget=args.time_budget,
        iterations=args.iterations,
        block_size=args.block_size,
    )
    res, report = progress(
        iter_compress_file(
            read_input(args),
            args.output,
            cfg,
            overwrite=args.overwrite,
            workers=args.workers,
            scheduler=args.scheduler,
            source=str(args.input),
        ),
        args,
        NAME,
    )
    yaml_path, json_path = fit_side_files(args.output)
    print(
        f"wrote {args.output}: {len(res.mixture)} Gaussians, {len(res.data)} bytes, "
        f"ratio {res.ratio:.1f}, {res.bits_per_voxel:.3f} bits/voxel, "
        f"PSNR {report['psnr_db']:.2f} dB (foreground {report['psnr_foreground_db']:.2f}), "
        f"SSIM {report['ssim']:.4f}, fitted in {res.seconds:.0f} s"
    )
    print(f"wrote {yaml_path} and {json_path}")
    if res.budget_note:
        print(f"note: {res.budget_note}.", file=sys.stderr)
    return 0

"""``histovol restore IN OUT --qc QC.json``: repair flagged sections from their neighbours."""

from __future__ import annotations

import argparse

from ._options import (
    add_input,
    add_overwrite,
    add_quiet,
    add_skip_bad,
    add_slice_format,
    add_workers,
    output_format,
    progress,
    read_input,
    write_options,
)

NAME = "restore"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help="repair the regions and sections a QC report flags from their neighbours",
        description="Fill the damaged regions of flagged sections (folds, tears, debris, blur) "
        "from their neighbours by flow-guided inpainting, rescale contrast swings, shift "
        "misaligned sections back, and replace a section as a whole only when most of it is "
        "damaged or it is a copy. Replaced sections are flagged synthetic like interpolated "
        "planes; inpainted pixels are recorded per section under extra.restored (action, "
        "synthetic fraction and the run-length mask of the synthetic pixels).",
    )
    add_input(p, "folder of sections or volume (the one the QC was run on)")
    p.add_argument(
        "output", metavar="OUT", help="output folder, OUT.ome.zarr, OUT.ome.tif or OUT.npy"
    )
    p.add_argument("--qc", required=True, metavar="QC.json", help="the report of histovol qc")
    add_slice_format(p)
    add_workers(p)
    add_skip_bad(p)
    add_overwrite(p, "OUT")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.io.detect import iter_write_volume
    from ..core.qc import iter_restore, read_qc_report

    fmt = output_format(args)
    sections = read_qc_report(args.qc)
    vol = read_input(args)
    result = progress(iter_restore(vol, sections), args, NAME)
    opts = write_options(fmt, workers=args.workers, ext=args.slice_format)
    out = progress(
        iter_write_volume(result.volume, args.output, overwrite=args.overwrite, **opts), args, NAME
    )
    for r in result.repaired:
        print(f"section {r.z}: {r.action} ({', '.join(r.kinds)})")
    n_syn = sum(r.action == "replaced" for r in result.repaired)
    print(f"wrote {out}: {len(result.repaired)} sections repaired, {n_syn} replaced as a whole")
    return 0

"""``histovol qc IN``: per-section damage flags, scores and masks (QC.json)."""

from __future__ import annotations

import argparse
import sys

from ._options import add_input, add_overwrite, add_quiet, add_skip_bad, progress, read_input

NAME = "qc"


def register(sub) -> argparse.ArgumentParser:
    from ..core.qc import KINDS

    p = sub.add_parser(
        NAME,
        help="flag folded, torn, blurred, dirty, duplicated, missing and misaligned sections",
        description="Compare every section with its neighbours and flag "
        + ", ".join(KINDS)
        + "; each flag has a score (flagged at 1 and above) and local damage a mask. "
        "Run it on aligned sections.",
    )
    add_input(p, "folder of aligned sections or volume")
    p.add_argument("--json", dest="json_out", metavar="QC.json", help="write flags, scores, masks")
    p.add_argument(
        "--masks",
        metavar="DIR",
        help="write one label PNG per section with local damage (1 fold, 2 tear, 3 blur, 4 debris)",
    )
    add_skip_bad(p)
    add_overwrite(p, "QC.json and DIR")
    add_quiet(p)
    return p


def _write_masks(report, folder: str, overwrite: bool) -> int:
    from pathlib import Path

    import cv2

    from ..core.errors import OutputError
    from ..core.io.atomic import atomic_output

    n = 0
    with atomic_output(folder, overwrite=overwrite, is_dir=True) as tmp:
        for s in report.sections:
            if s.mask is None:
                continue
            stem = Path(s.file).stem if s.file else f"z{s.z:04d}"
            if not cv2.imwrite(str(Path(tmp) / f"{stem}_qc.png"), s.mask):
                raise OutputError(f"Cannot write the mask of section {s.z} into '{folder}'.")
            n += 1
    return n


def _largest_score(sec) -> str:
    """A section's largest score and its kind ('fold 2.41'; flagged at 1), so a near miss
    shows in the table as well as in QC.json; '-' for a missing or generated plane."""
    kind, score = sec.largest_score()
    if sec.synthetic or kind is None or "missing" in sec.flags:
        return "-"
    from ..core.qc import score_text

    return f"{kind} {score_text(score)}"


def run(args: argparse.Namespace) -> int:
    from ..core.io.atomic import check_output, write_json
    from ..core.qc import iter_section_qc, qc_document

    if args.json_out:
        check_output(args.json_out, overwrite=args.overwrite, kind="file")
    if args.masks:
        check_output(args.masks, overwrite=args.overwrite, kind="dir")
    vol = read_input(args)
    rep = progress(iter_section_qc(vol), args, NAME)
    print(f"{'z':>6}  {'flags':<28}  {'largest score':<18}  file")
    for s in rep.sections:
        flags = "(synthetic: not judged)" if s.synthetic else ",".join(s.flags) or "-"
        print(f"{s.z:>6}  {flags:<28}  {_largest_score(s):<18}  {s.file}")
    print(f"flagged: {', '.join(map(str, rep.flagged_z)) or 'none'}")
    if rep.alignment_note:
        print(f"note: {rep.alignment_note}.", file=sys.stderr)
    if args.masks:
        n = _write_masks(rep, args.masks, args.overwrite)
        print(f"wrote {n} mask{'' if n == 1 else 's'} into {args.masks}")
    if args.json_out:
        write_json(args.json_out, qc_document(rep, masks_dir=args.masks), overwrite=args.overwrite)
        print(f"wrote {args.json_out}")
    return 0

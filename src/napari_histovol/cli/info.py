"""``histovol info PATH``: what a folder or volume holds."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._options import add_overwrite, add_skip_bad, on_corrupt

NAME = "info"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help="what a folder or volume holds: count, shape, dtype, z numbers, gaps",
        description="Describe a folder of sections or a volume (.ome.zarr, .ome.tif, .npy), a "
        "Gaussian-mixture file (.hgm) as it decodes, or a single image (a .png or .jpg mosaic) "
        "as one plane.",
    )
    p.add_argument(
        "path", metavar="PATH", help="folder of section images, volume file, .hgm or single image"
    )
    p.add_argument(
        "--json",
        dest="json_out",
        metavar="OUT.json",
        nargs="?",
        const="-",
        help="write the description as JSON (to a file, or stdout when no file is given)",
    )
    add_skip_bad(p)
    add_overwrite(p, "OUT.json")
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.info import describe
    from ..core.io.atomic import check_output, write_json

    if args.json_out not in (None, "-"):
        check_output(args.json_out, overwrite=args.overwrite, kind="file")
    d = describe(args.path, on_corrupt=on_corrupt(args))
    if args.json_out is None:
        print(format_description(d))
    elif args.json_out == "-":
        print(json.dumps(d, indent=1, ensure_ascii=False))
    else:
        write_json(args.json_out, d, overwrite=args.overwrite)
        print(f"wrote {args.json_out}")
    return 0


def format_description(d: dict[str, Any]) -> str:
    """Human-readable lines for :func:`napari_histovol.core.info.describe`'s dict."""
    from ..core.io.naming import format_ranges

    gb = d["bytes"] / 1e9
    size = f"{gb:.2f} GB" if gb >= 0.1 else f"{d['bytes'] / 1e6:.1f} MB"
    lines = [
        f"{d['path']}  ({d['format']})",
        f"  planes     {d['planes']}" + ("" if d["planes"] > 1 else "  (a single section)"),
        f"  shape      {' x '.join(map(str, d['shape']))}  ({d['axes']}, {d['dtype']}"
        f"{', RGB' if d['rgb'] else ''}, {size})",
    ]
    if len(d["levels"]) > 1:
        lines.append(
            f"  levels     {len(d['levels'])}: "
            + ", ".join("x".join(map(str, lv[1:3])) for lv in d["levels"])
        )
    z, y, x = d["scale"]
    known = d["unit"] == "micrometer"
    px = f"{x:g} x {y:g} µm" if known and d["pixel_size_known"] else "unknown (--pixel-size UM)"
    sp = f"{z:g} µm" if known and d["section_spacing_known"] else "unknown (--section-spacing UM)"
    lines += [f"  pixel size {px}", f"  spacing    {sp}"]
    lines.append(f"  z numbers  {format_ranges(d['z_numbers'])}")
    gaps = d["gaps"]
    lines.append(
        f"  gaps       {format_ranges(gaps)}" + (f"  ({len(gaps)} missing)" if gaps else "")
    )
    if d["synthetic_z"]:
        lines.append(f"  synthetic  {format_ranges(d['synthetic_z'])}  (generated planes)")
    if d.get("gaussians") is not None:
        ratio = d["bytes"] / max(d["file_bytes"], 1)
        lines.append(
            f"  gaussians  {d['gaussians']} in {d['file_bytes']} bytes (ratio {ratio:.1f}; "
            "histovol decompress decodes it)"
        )
    if d.get("naming_pattern"):
        p = d["naming_pattern"]
        lines.append(f"  naming     {p['prefix']}{'#' * p['width']}{p['suffix']}{p['ext']}")
    return "\n".join(lines)

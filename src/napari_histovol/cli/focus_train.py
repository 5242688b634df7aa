"""``histovol focus-train SHARP OUT.pt``: train the defocus-distance regressor."""

from __future__ import annotations

import argparse

from ._options import add_overwrite, add_quiet, positive_float, positive_int, progress

NAME = "focus-train"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help="train the defocus-distance regressor on your own sharp images",
        description="Train the focus regressor (residual CNN, Adam, ReduceLROnPlateau, early "
        "stopping, validated on images held out from training) on sharp images defocused with "
        "a pillbox + diffraction PSF and noise; optionally add a real focus stack whose in-focus "
        "plane and step are known. Writes OUT.pt and OUT.json.",
    )
    p.add_argument("sharp", metavar="SHARP_FOLDER", help="folder (or volume) of in-focus images")
    p.add_argument("output", metavar="OUT.pt", help="where to write the model")
    p.add_argument("--steps", type=positive_int, default=1500, metavar="N", help="default 1500")
    p.add_argument(
        "--pixel-size", type=positive_float, default=0.5, metavar="UM", help="default 0.5"
    )
    p.add_argument(
        "--na", type=positive_float, default=0.5, help="numerical aperture of the objective"
    )
    p.add_argument(
        "--max-defocus", type=positive_float, default=8.0, metavar="UM", help="default 8"
    )
    p.add_argument("--stack", metavar="FOLDER", help="a real focus stack to add")
    p.add_argument("--stack-focus", type=int, metavar="Z", help="z number of its in-focus plane")
    p.add_argument("--stack-step", type=positive_float, metavar="UM", help="its z step")
    add_overwrite(p, "OUT.pt and OUT.json")
    add_quiet(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..core.focus import Optics, focus_model_files, iter_train_focus_model, save_focus_model
    from ..core.io.atomic import check_output
    from ..core.io.detect import read_volume

    for path in focus_model_files(args.output):
        check_output(path, overwrite=args.overwrite, kind="file")
    sharp = read_volume(args.sharp)
    stack = read_volume(args.stack) if args.stack else None
    optics = Optics(pixel_um=args.pixel_size, na=args.na, max_defocus_um=args.max_defocus)
    model, info = progress(
        iter_train_focus_model(
            sharp,
            optics=optics,
            steps=args.steps,
            stack=stack,
            stack_focus_z=args.stack_focus,
            stack_step_um=args.stack_step,
        ),
        args,
        NAME,
    )
    save_focus_model(model, args.output, optics=optics, info=info, overwrite=args.overwrite)
    print(f"wrote {args.output} (validation MAE {info['val_mae_um']:.3f} µm on held-out images)")
    return 0

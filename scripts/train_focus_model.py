"""Train the focus-distance regressor shipped in napari_histovol/models/ (rerunnable).

Training data: sharp patches of real images defocused synthetically (core/focus/defocus.py),
from four sources: the left two thirds of the skin H&E image (../shared/data/skin_he_2d), ISBI
2012 ssTEM sections 0-14 (EM), the five bundled ANHIR lung sections, and cells3d nuclei planes
25-35. The right third of the skin image and ISBI sections 15-29 are never read here: they are
held out for benchmarks/focus_bench.py.

Validation (early stopping, learning rate, the reported error) is held out inside each source
(core/focus/training.py, ``split_sources``): the last 20% of the images of a series, whole (ISBI
12-14, lung section 5, nuclei planes 34-35), and for the single skin image a strip along its
longer side, 16 px away from the training part. No validation patch comes from a training region.

    python scripts/train_focus_model.py [--steps 1500] [--out src/napari_histovol/models/focus_regressor.pt]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HISTOVOL_SHARED_DATA", REPO.parent / "shared" / "data"))


def training_sources() -> dict[str, list[np.ndarray]]:
    """Sharp gray images by source; none of the benchmark's held-out data."""
    import tifffile

    from napari_histovol._sample_data import sample_folder
    from napari_histovol.core.focus import focus_channel
    from napari_histovol.core.io import read_volume

    skin = focus_channel(tifffile.imread(SHARED / "skin_he_2d" / "skin.tif"))
    isbi = read_volume(SHARED / "isbi2012_sstem_train" / "train_image").data[:15].compute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lung = read_volume(sample_folder()).data.compute()
    nuclei = tifffile.imread(SHARED / "cells3d_nuclei_3d" / "nuclei.tif")
    return {
        "skin H&E (left 2/3)": [skin[:, : 2 * skin.shape[1] // 3]],
        "ISBI ssTEM 0-14": [focus_channel(p) for p in isbi],
        "ANHIR lung lesion 3": [focus_channel(p) for p in lung],
        "cells3d nuclei 25-35": [focus_channel(p) for p in nuclei[25:36]],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--val-batches", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=str(REPO / "src" / "napari_histovol" / "models" / "focus_regressor.pt")
    )
    args = ap.parse_args(argv)
    import torch

    from napari_histovol.core.focus import Optics, save_focus_model, split_sources
    from napari_histovol.core.focus.training import iter_train, train_info

    torch.set_num_threads(os.cpu_count() or 2)
    optics = Optics()
    sources = training_sources()
    split = split_sources(sources, val_fraction=0.2)
    for r in split.val_regions:
        print(f"held out: {r.as_dict()}", flush=True)
    t0 = time.time()
    gen = iter_train(
        split,
        optics=optics,
        steps=args.steps,
        batch=args.batch,
        val_batches=args.val_batches,
        seed=args.seed,
    )
    last = ""
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            model, history = stop.value
            break
        if p.message != last:
            print(f"step {p.done}/{p.total}: {p.message}", flush=True)
            last = p.message
    info = train_info(
        history,
        split,
        trained_on="; ".join(sources)
        + "; synthetic defocus 0-8 um (pillbox + diffraction PSF, Poisson/read noise)",
        held_out_for_benchmark="skin H&E right third, ISBI ssTEM 15-29",
        seed=args.seed,
        batch=args.batch,
        seconds=time.time() - t0,
    )
    path, side = save_focus_model(model, args.out, optics=optics, info=info, overwrite=True)
    print(f"wrote {path} and {side.name} (validation MAE {info['val_mae_um']:.3f} um)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

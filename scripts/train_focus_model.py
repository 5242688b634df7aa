"""Train the focus-distance regressor shipped in napari_histovol/models/ (rerunnable).

Training data: sharp patches of real images defocused synthetically (see core/focus_model.py):
the left two thirds of the skin H&E image (../shared/data/skin_he_2d), ISBI 2012 ssTEM sections
0-14 (EM), the five bundled ANHIR lung sections, and cells3d nuclei planes 25-35. The right third
of the skin image and ISBI sections 15-29 are held out for benchmarks/focus_bench.py.

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


def training_images() -> list[np.ndarray]:
    import tifffile

    from napari_histovol._sample_data import sample_folder
    from napari_histovol.core.focus import focus_channel
    from napari_histovol.core.io import read_volume

    skin = focus_channel(tifffile.imread(SHARED / "skin_he_2d" / "skin.tif"))
    imgs = [skin[:, : 2 * skin.shape[1] // 3]]
    isbi = read_volume(SHARED / "isbi2012_sstem_train" / "train_image").data.compute()
    imgs += [focus_channel(p) for p in isbi[:15]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lung = read_volume(sample_folder()).data.compute()
    imgs += [focus_channel(p) for p in lung]
    nuclei = tifffile.imread(SHARED / "cells3d_nuclei_3d" / "nuclei.tif")
    imgs += [focus_channel(p) for p in nuclei[25:36]]
    return imgs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "src" / "napari_histovol" / "models" / "focus_regressor.pt"))
    args = ap.parse_args(argv)
    import torch

    from napari_histovol.core.focus_model import FocusDataset, Optics, save_model, train

    torch.set_num_threads(os.cpu_count() or 2)
    optics = Optics()
    ds = FocusDataset(training_images(), optics, seed=args.seed)
    t0 = time.time()
    model, history = train(ds, steps=args.steps, batch=args.batch, seed=args.seed,
                           progress=lambda s, n, mae: print(f"step {s}/{n}: validation MAE {mae:.3f} um", flush=True))
    info = {"trained_on": "skin H&E (left 2/3), ISBI ssTEM 0-14, ANHIR lung lesion 3 (5 sections), cells3d nuclei "
                          "planes 25-35; synthetic defocus 0-8 um (pillbox + diffraction PSF, Poisson/read noise)",
            "steps": history[-1]["step"] if history else 0, "seconds": time.time() - t0,
            "val_mae_um": min(h["val_mae_um"] for h in history) if history else None, "history": history,
            "seed": args.seed}
    path = save_model(model, args.out, optics=optics, info=info)
    print(f"wrote {path} (validation MAE {info['val_mae_um']:.3f} um)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

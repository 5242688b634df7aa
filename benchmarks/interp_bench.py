"""Interpolation benchmark: drop every other section, regenerate it, compare with the truth.

ISBI ssTEM (full size and downsized 4x) and cells3d nuclei (16-bit and 8-bit): mean PSNR (data
range of the original volume), SSIM and seconds per generated frame for each method, in the
same run. Prints one JSON object.

    python benchmarks/interp_bench.py
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import cv2
import dask.array as da
import numpy as np
import tifffile
from skimage.metrics import peak_signal_noise_ratio as psnr
from skimage.metrics import structural_similarity as ssim

from napari_histovol.core.interpolate import interpolate
from napari_histovol.core.io import read_volume
from napari_histovol.core.io.meta import VolumeMeta
from napari_histovol.core.io.volume import Volume

SHARED = Path(
    os.environ.get("HISTOVOL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
METHODS = ("linear", "flow")


def score(stack: np.ndarray) -> dict:
    kept = stack[0::2]
    zs = list(range(0, len(stack), 2))
    data_range = float(stack.max()) - float(stack.min())
    vol = Volume(
        da.from_array(kept, chunks=(1,) + kept.shape[1:]),
        VolumeMeta(z_numbers=tuple(zs)).with_planes(len(kept)),
    )
    targets = list(range(1, zs[-1], 2))
    out = {}
    for method in METHODS:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = interpolate(vol, method=method)
            got = res.volume.data.compute(scheduler="threads")
        dt = time.perf_counter() - t0
        p = [
            psnr(stack[z].astype(float), got[z].astype(float), data_range=data_range)
            for z in targets
        ]
        s = [
            ssim(stack[z].astype(float), got[z].astype(float), data_range=data_range)
            for z in targets
        ]
        out[method] = {
            "psnr_db": float(np.mean(p)),
            "ssim": float(np.mean(s)),
            "seconds_per_frame": dt / len(targets),
        }
    for m in METHODS[1:]:
        out[m]["psnr_gain_over_linear_db"] = out[m]["psnr_db"] - out["linear"]["psnr_db"]
    return {
        "shape": list(stack.shape),
        "dtype": str(stack.dtype),
        "frames": len(targets),
        "results": out,
    }


def main() -> None:
    isbi = read_volume(SHARED / "isbi2012_sstem_train" / "train_image").data.compute()
    isbi4 = np.stack([cv2.resize(p, (128, 128), interpolation=cv2.INTER_AREA) for p in isbi])
    nuclei = tifffile.imread(SHARED / "cells3d_nuclei_3d" / "nuclei.tif")
    nuclei8 = np.clip(nuclei.astype(np.float64) / nuclei.max() * 255 + 0.5, 0, 255).astype(np.uint8)
    out = {
        "benchmark": "interp_bench",
        "machine": {"cpus": os.cpu_count()},
        "protocol": "keep sections 0, 2, 4, ...; regenerate 1, 3, 5, ... at t = 0.5; PSNR with the data range of the original",
        "isbi_full": score(isbi),
        "isbi_downsized_4x": score(isbi4),
        "cells3d_16bit": score(nuclei),
        "cells3d_8bit": score(nuclei8),
        "goals": {"psnr_gain_over_linear_db_at_least": 1.5, "seconds_per_512px_frame_below": 0.5},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Focus benchmark: best plane on the DFNN light-sheet defocus series (known focus), the learned
regressor's defocus error beside the best classical metric mapped to distance on held-out
synthetic defocus of real H&E and EM patches (mean, 95th percentile and worst error), and
throughput. Every registered metric, the learned one included. Prints one JSON object.

Held out from the shipped model's training (see scripts/train_focus_model.py): the right third
of the skin image and ISBI sections 15-29.

    python benchmarks/focus_bench.py
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_histovol.core.focus import (
    CLASSICAL_METRICS,
    METRICS,
    PATCH,
    Optics,
    best_plane,
    defocus,
    focus_channel,
    image_patches,
    predict_focus_distance,
    score,
)
from napari_histovol.core.io import read_volume

SHARED = Path(
    os.environ.get("HISTOVOL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def dfnn() -> dict:
    folder = SHARED / "dfnn_defocus" / "mitochondria"
    rows = list(csv.DictReader(open(SHARED / "dfnn_defocus" / "z_offsets.csv")))
    truth_index = 51
    vol = read_volume(folder)
    planes = [np.asarray(vol.data[i].compute()) for i in range(vol.shape[0])]
    zs = list(vol.meta.z_numbers)
    out = {"frames": len(planes), "in_focus_index": truth_index, "step_um": 0.05, "rows": len(rows)}
    res = {}
    for metric in METRICS:
        s = [score(p, metric) for p in planes]
        k, sub_z = best_plane(s, zs)
        res[metric] = {
            "best_plane": zs[k],
            "best_plane_subframe": float(sub_z),
            "error_frames": abs(zs[k] - truth_index),
            "subframe_error_frames": abs(sub_z - truth_index),
        }
    out["results"] = res
    worst = max(res, key=lambda m: res[m]["error_frames"])
    out["worst_case"] = {"metric": worst, "error_frames": res[worst]["error_frames"]}
    return out


def sharp_images() -> dict:
    """One sharp gray image (at most 512 px square, [0, 1]) from every shared set: dense tissue
    (H&E, lung IHC), EM (ISBI, vEMstitch), phase contrast (MIST), sparse fluorescence (cells3d
    nuclei, DFNN mitochondria at its in-focus frame)."""
    import imageio.v3 as iio

    def norm(a):
        a = focus_channel(np.asarray(a)).astype(np.float32)
        a = a[: min(512, a.shape[0]), : min(512, a.shape[1])]
        lo, hi = np.percentile(a, [0.5, 99.5])
        return np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)

    anhir = sorted((SHARED / "anhir_lung_lesion3_serial").rglob("*.jpg"))
    vem = sorted((SHARED / "vemstitch_em_tiles").rglob("*.png"))
    mist = sorted((SHARED / "mist_test_5x5_timelapse" / "tiles").glob("*.tif"))
    nuclei = tifffile.imread(SHARED / "cells3d_nuclei_3d" / "nuclei.tif")
    dfnn_files = sorted((SHARED / "dfnn_defocus" / "mitochondria").glob("*.tif"))
    out = {
        "skin H&E": tifffile.imread(SHARED / "skin_he_2d" / "skin.tif")[:1024:2, :1024:2],
        "ISBI EM": iio.imread(SHARED / "isbi2012_sstem_train" / "train_image" / "00.png"),
        "cells3d nuclei (sparse fluorescence)": nuclei[30],
        "DFNN mitochondria (filaments), frame 51": tifffile.imread(dfnn_files[51 - 32]),
    }
    if anhir:
        img = iio.imread(anhir[0])
        out["ANHIR lung"] = img[::4, ::4] if max(img.shape[:2]) > 2048 else img
    if vem:
        out["vEMstitch EM tile"] = iio.imread(vem[0])
    if mist:
        out["MIST phase contrast"] = tifffile.imread(mist[0])
    return {k: norm(v) for k, v in out.items()}


def synthetic_series(seeds=(0, 1, 2)) -> dict:
    """Best-plane error on defocus series made from every shared set with the physical PSF
    (0.5 um pixels, NA 0.5; -4..+4 um in 0.5 um steps, focus at frame 8; fresh camera noise on
    every frame), for every metric: the largest error over ``seeds`` (noise draws) per set, and
    the worst set per metric."""
    optics = Optics()
    zs = np.arange(-4.0, 4.01, 0.5)
    truth = int(np.argmin(np.abs(zs)))
    res: dict = {}
    for name, img in sharp_images().items():
        res[name] = {m: 0 for m in METRICS}
        for seed in seeds:
            rng = np.random.default_rng(seed)
            frames = [defocus(img, float(z), optics, rng) for z in zs]
            for metric in METRICS:
                k, _ = best_plane([score(f, metric) for f in frames])
                res[name][metric] = max(res[name][metric], abs(k - truth))
    worst = {m: max(res[n][m] for n in res) for m in METRICS}
    return {
        "frames": len(zs),
        "step_um": 0.5,
        "in_focus_frame": truth,
        "noise_draws": len(seeds),
        "error_frames": res,
        "worst_error_frames": worst,
    }


def synthetic_sets(rng):
    skin = focus_channel(tifffile.imread(SHARED / "skin_he_2d" / "skin.tif"))
    isbi = read_volume(SHARED / "isbi2012_sstem_train" / "train_image").data.compute()
    cal = [skin[:, : 2 * skin.shape[1] // 3]] + [focus_channel(p) for p in isbi[:15]]
    test = {
        "H&E (skin, right third)": [skin[:, 2 * skin.shape[1] // 3 :]],
        "EM (ISBI sections 15-29)": [focus_channel(p) for p in isbi[15:]],
    }
    optics = Optics()

    def make(images, n):
        pats = np.concatenate([image_patches(im, stride=48)[0] for im in images])
        pats = pats[pats.std(axis=(1, 2)) > 0.03]
        idx = rng.choice(len(pats), size=n, replace=len(pats) < n)
        ds = rng.uniform(0, optics.max_defocus_um, n)
        big = []
        for i, d in zip(idx, ds, strict=True):
            p = np.pad(pats[i], 8, mode="reflect")
            big.append(defocus(p, float(d), optics, rng)[8 : 8 + PATCH, 8 : 8 + PATCH])
        return np.stack(big), ds

    return make(cal, 600), {k: make(v, 400) for k, v in test.items()}


def calibrate(metric, x, d):
    """Monotone map score -> distance from calibration patches (binned medians, interpolated)."""
    s = np.array([score(p, metric, use_mask=False) for p in x])
    ls = np.log(np.maximum(s, 1e-12))
    order = np.argsort(ls)
    bins = np.array_split(order, 20)
    xs = np.array([ls[b].mean() for b in bins])
    ys = np.array([np.median(d[b]) for b in bins])
    ys = np.minimum.accumulate(ys)  # sharper score -> smaller distance
    return lambda p: np.interp(np.log(max(score(p, metric, use_mask=False), 1e-12)), xs, ys)


def regression() -> dict:
    rng = np.random.default_rng(7)
    (cx, cd), tests = synthetic_sets(rng)
    maps = {m: calibrate(m, cx, cd) for m in CLASSICAL_METRICS}
    out = {}
    for name, (x, d) in tests.items():
        err = np.abs(predict_focus_distance(x) - d)
        row = {"regressor_mae_um": float(err.mean())}
        cl_err = {
            m: np.array([abs(maps[m](p) - t) for p, t in zip(x, d, strict=True)])
            for m in CLASSICAL_METRICS
        }
        cl = {m: float(e.mean()) for m, e in cl_err.items()}
        best = min(cl, key=cl.get)
        row.update(
            {
                "classical_mae_um": cl,
                "best_classical": best,
                "best_classical_mae_um": cl[best],
                "ratio_regressor_to_best_classical": row["regressor_mae_um"] / cl[best],
                "worst_case_um": {
                    "regressor_p95": float(np.percentile(err, 95)),
                    "regressor_max": float(err.max()),
                    "best_classical_p95": float(np.percentile(cl_err[best], 95)),
                    "best_classical_max": float(cl_err[best].max()),
                },
            }
        )
        out[name] = row
    return {
        "defocus_range_um": [0, Optics().max_defocus_um],
        "patches_per_set": 400,
        "results": out,
    }


def throughput() -> dict:
    skin = tifffile.imread(SHARED / "skin_he_2d" / "skin.tif")
    img = np.tile(skin, (2, 2, 1))[:2048, :2048]
    mp = img.shape[0] * img.shape[1] / 1e6
    out = {}
    for metric in CLASSICAL_METRICS:
        score(img, metric)
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            score(img, metric)
        out[metric] = mp * reps / (time.perf_counter() - t0)
    patches, _ = image_patches(img)
    predict_focus_distance(patches[:64])
    t0 = time.perf_counter()
    predict_focus_distance(patches)
    out["model"] = len(patches) * PATCH * PATCH / 1e6 / (time.perf_counter() - t0)
    return {
        "image": "2048x2048 RGB (skin tiled), tissue mask included",
        "megapixels_per_second": out,
    }


def main() -> None:
    out = {
        "benchmark": "focus_bench",
        "machine": {"cpus": os.cpu_count()},
        "dfnn": dfnn(),
        "synthetic_series": synthetic_series(),
        "synthetic_defocus": regression(),
        "throughput": throughput(),
        "goals": {
            "dfnn_best_plane_within_frames": 1,
            "regressor_error_below_half_of_classical": True,
            "classical_mp_per_s_at_least": 100,
        },
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

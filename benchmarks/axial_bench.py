"""Axial reconstruction benchmark: keep every F-th plane of a nearly isotropic volume,
reconstruct the others, compare with what was removed.

Volumes: cells3d nuclei along z (confocal, 0.29 um planes, 0.26 um pixels); the ISBI ssTEM
stack seen along y (its x-y planes are isotropic: y becomes the axis to reconstruct, x stands
in for it); the DFNN light-sheet mitochondria stack seen along y; a synthetic isotropic volume
(smoothed-noise tubes and blobs with Poisson noise). For F = 2, 4, 8: PSNR and SSIM of the
removed planes (and SSIM of x-z views) for linear, cubic, smoothed cubic (each plane blurred
by a Gaussian, then cubic; the best sigma of 0.5, 1, 1.5 per volume and factor: an oracle
baseline), the flow method (frames between, DIS optical flow) and the learned method
(self-supervised, trained on the kept planes within --budget seconds); seconds and peak RSS.

A second part scores the methods as interpolation: every other section of the stacks along
their real z is dropped and regenerated (cross-fade, flow, learned).

    python benchmarks/axial_bench.py [--budget 150] [--factors 2,4,8] [--volumes a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity as ssim

from napari_histovol.core.interpolate import interpolate
from napari_histovol.core.io.meta import VolumeMeta
from napari_histovol.core.io.volume import Volume
from napari_histovol.core.isotropic import iter_isotropic
from napari_histovol.core.isotropic.geometry import linear_matrix, spline_matrix
from napari_histovol.core.progress import drain

SHARED = Path(
    os.environ.get("HISTOVOL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def synthetic_volume(n: int = 128, seed: int = 7) -> np.ndarray:
    """An isotropic volume: tubes (a thresholded band of smoothed noise) and blobs, blurred by
    an isotropic PSF, with Poisson noise."""
    rng = np.random.default_rng(seed)
    g = gaussian_filter(rng.standard_normal((n, n, n)), 4)
    tubes = (np.abs(g) < 0.02 * g.std() / 0.1).astype(np.float32)
    blobs = (gaussian_filter(rng.standard_normal((n, n, n)), 6) > 0.03).astype(np.float32)
    v = gaussian_filter(0.7 * tubes + 0.3 * blobs, 1.0) * 400 + 20
    return rng.poisson(v).astype(np.uint16)


def load(name: str):
    """(volume, (dz, dy, dx) in um) of a benchmark volume, axis 0 the one to reconstruct."""
    if name == "cells3d_z":
        v = tifffile.imread(SHARED / "cells3d_nuclei_3d" / "nuclei.tif")
        return v, (0.29, 0.26, 0.26)
    if name == "isbi_y":
        import imageio.v3 as iio

        files = sorted((SHARED / "isbi2012_sstem_train" / "train_image").glob("*.png"))
        v = np.stack([iio.imread(f) for f in files])  # (30, 512, 512), 50 nm x 4 nm x 4 nm
        return np.ascontiguousarray(v.transpose(1, 0, 2)), (0.004, 0.05, 0.004)
    if name == "dfnn_y":
        files = sorted((SHARED / "dfnn_defocus" / "mitochondria").glob("*.tif"))
        v = np.stack([tifffile.imread(f) for f in files])[:, :512]  # (34, 512, 512)
        return np.ascontiguousarray(v.transpose(1, 0, 2)), (0.1, 0.05, 0.1)
    if name == "synthetic":
        return synthetic_volume(), (0.1, 0.1, 0.1)
    raise SystemExit(f"unknown volume {name}")


class PeakRSS:
    """Peak resident memory above the start, sampled every 20 ms."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.mb = round((self.peak - self.base) / 2**20, 1)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def scores(truth: np.ndarray, got: np.ndarray, removed: np.ndarray, rng_: float) -> dict:
    t, g = truth.astype(np.float64), got.astype(np.float64)
    mse = float(np.mean((t[removed] - g[removed]) ** 2))
    planes = np.flatnonzero(removed)
    s_xy = np.mean(
        [ssim(t[k], g[k], data_range=rng_) for k in planes[:: max(1, len(planes) // 16)]]
    )
    ys = np.linspace(0, t.shape[1] - 1, 16).astype(int)
    s_xz = np.mean([ssim(t[:, y], g[:, y], data_range=rng_) for y in ys])
    return {
        "psnr_db": round(10 * np.log10(rng_**2 / max(mse, 1e-12)), 3),
        "ssim_xy": round(float(s_xy), 4),
        "ssim_xz": round(float(s_xz), 4),
    }


def meta_for(n: int, scale, z_numbers=None) -> VolumeMeta:
    return VolumeMeta(
        scale=tuple(scale),
        unit="micrometer",
        z_numbers=tuple(z_numbers if z_numbers is not None else range(n)),
        scale_known=True,
        spacing_known=True,
    ).with_planes(n)


def axial(name: str, factor: int, budget: float) -> dict:
    v, (dz, dy, dx) = load(name)
    n = (v.shape[0] - 1) // factor * factor + 1
    truth = v[:n]
    kept = truth[::factor]
    removed = np.ones(n, bool)
    removed[::factor] = False
    rng_ = float(truth.max()) - float(truth.min())
    pos, full = np.arange(len(kept)) * factor, np.arange(n)
    res: dict = {"volume": name, "shape": list(truth.shape), "factor": factor}

    def run(label, fn):
        t0 = time.perf_counter()
        with PeakRSS() as mem, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = fn()
        res[label] = {
            **scores(truth, got, removed, rng_),
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_mb": mem.mb,
        }
        return got

    kf = kept.astype(np.float32)
    run("linear", lambda: np.tensordot(linear_matrix(pos, full), kf, axes=(1, 0)))
    run("cubic", lambda: np.tensordot(spline_matrix(pos, full), kf, axes=(1, 0)))
    best = None
    for sigma in (0.5, 1.0, 1.5):
        sm = np.stack([gaussian_filter(p, sigma) for p in kf])
        got = np.tensordot(spline_matrix(pos, full), sm, axes=(1, 0))
        got[~removed] = truth[~removed]
        p = scores(truth, got, removed, rng_)["psnr_db"]
        if best is None or p > best[1]:
            best = (sigma, p)
    sig = best[0]
    run(
        "smoothed_cubic",
        lambda: np.tensordot(
            spline_matrix(pos, full), np.stack([gaussian_filter(p, sig) for p in kf]), axes=(1, 0)
        ),
    )
    res["smoothed_cubic"]["sigma_px"] = sig
    meta = meta_for(len(kept), (dz * factor, dy, dx))
    vol = Volume(da.from_array(kept, chunks=(1,) + kept.shape[1:]), meta)
    run(
        "flow",
        lambda: interpolate(vol, frames_between=factor - 1, method="flow").volume.data.compute(),
    )
    info = {}

    def learned():
        r = drain(iter_isotropic(vol, factor=factor, time_budget=budget))
        info.update(steps=r.model.steps, train_seconds=round(r.model.train_seconds, 1))
        return r.volume.data.compute()

    run("learned", learned)
    res["learned"].update(info)
    base = max(res[k]["psnr_db"] for k in ("linear", "cubic", "smoothed_cubic", "flow"))
    res["learned_minus_best_baseline_db"] = round(res["learned"]["psnr_db"] - base, 3)
    return res


def interpolation(name: str, budget: float) -> dict:
    """Every other section of a stack along its real z dropped and regenerated."""
    if name == "isbi_z":
        v, scale = load("isbi_y")
        v, scale = np.ascontiguousarray(v.transpose(1, 0, 2)), (0.05, 0.004, 0.004)
    elif name == "cells3d_z":
        v, scale = load("cells3d_z")
    elif name == "dfnn_z":
        v, scale = load("dfnn_y")
        v, scale = np.ascontiguousarray(v.transpose(1, 0, 2)), (0.05, 0.1, 0.1)
    else:
        v, scale = load(name)
    n = (v.shape[0] - 1) // 2 * 2 + 1
    truth = v[:n]
    zs = list(range(0, n, 2))
    kept = truth[::2]
    removed = np.ones(n, bool)
    removed[::2] = False
    rng_ = float(truth.max()) - float(truth.min())
    vol = Volume(da.from_array(kept, chunks=(1,) + kept.shape[1:]), meta_for(len(kept), scale, zs))
    out = {"stack": name, "shape": list(truth.shape)}
    for method in ("linear", "flow", "learned"):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = interpolate(vol, method=method, time_budget=budget).volume.data.compute()
        out[method] = {
            **scores(truth, got, removed, rng_),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    out["learned_minus_crossfade_db"] = round(
        out["learned"]["psnr_db"] - out["linear"]["psnr_db"], 3
    )
    out["flow_minus_crossfade_db"] = round(out["flow"]["psnr_db"] - out["linear"]["psnr_db"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=150.0)
    ap.add_argument("--factors", default="2,4,8")
    ap.add_argument("--volumes", default="cells3d_z,isbi_y,dfnn_y,synthetic")
    ap.add_argument("--stacks", default="cells3d_z,isbi_z,dfnn_z,synthetic")
    ap.add_argument("--skip-interpolation", action="store_true")
    args = ap.parse_args()
    import torch

    report = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "budget_s": args.budget,
        "axial": [],
        "interpolation": [],
    }
    for name in args.volumes.split(","):
        for f in (int(x) for x in args.factors.split(",")):
            r = axial(name, f, args.budget)
            report["axial"].append(r)
            print(json.dumps(r), flush=True)
    if not args.skip_interpolation:
        for name in args.stacks.split(","):
            r = interpolation(name, args.budget)
            report["interpolation"].append(r)
            print(json.dumps(r), flush=True)
    ax = report["axial"]
    for f in sorted({r["factor"] for r in ax}):
        gains = [r["learned_minus_best_baseline_db"] for r in ax if r["factor"] == f]
        report[f"worst_gain_over_best_baseline_F{f}_db"] = min(gains)
    if report["interpolation"]:
        report["worst_learned_minus_crossfade_db"] = min(
            r["learned_minus_crossfade_db"] for r in report["interpolation"]
        )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

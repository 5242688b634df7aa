"""Prompt-based 3D segmentation: the micro-sam click protocol on real data, with peers.

For every ground-truth object: a first positive click at the point farthest inside it, then up
to 7 corrective clicks, each at the point farthest inside the largest error region (positive
where the object was missed, negative where it leaked). Dice after each click, mean over
objects; seconds per click. Peers from the same clicks in the same run: seeded watershed on the
gradient and random walker on the raw image (background seeds on the border of a window around
the clicks).

Datasets: ``nuclei`` cells3d confocal nuclei (../shared/data; 60 x 256 x 256, 20 labelled
nuclei); ``em`` ISBI 2012 ssTEM (../shared/data; 30 sections; 3D neurites = per-section cell
profiles of the membrane labels linked by overlap); ``stardist`` stardist's synthetic nuclei
(.benchdata, see fetch_benchdata.py); ``synthetic`` and ``synthetic_small`` touching nuclei
drawn here; ``cells``, ``cells_aniso`` and ``cells_thick`` membrane-bounded cells drawn here
(:func:`synthetic_cells`). Prints one JSON object.

    .venv/bin/python benchmarks/segment_bench.py [--objects 8] [--clicks 8] [--datasets nuclei,em]
        [--no-peers] [--peers seeded_watershed,random_walker]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: evaluation data that is not in ../shared/data (see each folder's PROVENANCE.md)
BENCHDATA = Path(__file__).resolve().parents[1] / ".benchdata"


# ----------------------------------------------------------------------------- datasets


def load_nuclei():
    import tifffile

    img = tifffile.imread(DATA / "cells3d_nuclei_3d" / "nuclei.tif")
    lab = tifffile.imread(DATA / "cells3d_nuclei_3d" / "nuclei_label.tif").astype(np.int32)
    return img, lab, (0.29, 0.26, 0.26)


def load_stardist():
    """Synthetic 3D nuclei shipped in the stardist 0.9.2 wheel (BSD-3; see .benchdata's
    PROVENANCE.md): dense, blurred, low contrast; not looked at while choosing the method."""
    import tifffile

    d = BENCHDATA / "stardist_nuclei_3d"
    if not (d / "img3d.tif").exists():
        raise FileNotFoundError(f"{d} is absent: run benchmarks/fetch_benchdata.py to fetch it")
    img = tifffile.imread(d / "img3d.tif")
    lab = tifffile.imread(d / "mask3d.tif").astype(np.int32)
    return img, lab, (1.0, 1.0, 1.0)


def synthetic_nuclei(
    seed: int = 0,
    shape=(40, 160, 160),
    aniso: float = 2.0,
    n_try: int = 400,
    radius=(7.0, 13.0),
    photons: float = 60.0,
):
    """Packed, touching ellipsoidal nuclei of random size (largest semi-axis drawn from
    ``radius``, pixels), shape, orientation and brightness, with chromatin texture, an uneven
    background, blur and shot noise (``photons`` at unit brightness). z is sampled ``aniso``
    times coarser than y and x. Returns (image uint16, labels, sampling in um)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    zz, yy, xx = np.meshgrid(np.arange(nz) * aniso, np.arange(ny), np.arange(nx), indexing="ij")
    lab = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf, np.float32)
    placed: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(n_try):
        r = rng.uniform(*radius) * np.array([rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.25), 1.0])
        c = np.array([rng.uniform(0, nz * aniso), rng.uniform(0, ny), rng.uniform(0, nx)])
        # touching allowed: centres as close as 0.8 of the sum of the mean radii
        if any(np.linalg.norm(c - c2) < 0.8 * (r.mean() + r2.mean()) for c2, r2 in placed):
            continue
        placed.append((c, r))
        a = rng.uniform(0, np.pi)
        dy, dx = yy - c[1], xx - c[2]
        u, v = np.cos(a) * dy + np.sin(a) * dx, -np.sin(a) * dy + np.cos(a) * dx
        d = np.sqrt(((zz - c[0]) / r[0]) ** 2 + (u / r[1]) ** 2 + (v / r[2]) ** 2)
        sel = (d < 1) & (d < best)
        lab[sel] = len(placed)
        best[sel] = d[sel]
    img = 0.08 + 1.5 * ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 12)
    tex = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)
    tex /= tex.std()
    bright = rng.uniform(0.35, 1.0, len(placed) + 1)
    fg = lab > 0
    img[fg] = bright[lab[fg]] * (1 + 0.25 * tex[fg])
    img = np.clip(ndi.gaussian_filter(img, (1.5 / aniso, 1.2, 1.2)), 0, None)
    img = rng.poisson(img * photons).astype(np.float32) + rng.normal(0, 2.0, shape)
    img = np.clip(img * 40 + 100, 0, 65535).astype(np.uint16)
    return img, lab, (0.25 * aniso, 0.25, 0.25)


def load_synthetic():
    return synthetic_nuclei(seed=0)


def load_synthetic_small():
    """Small, dim nuclei sampled isotropically (another seed): held out, measured once per
    method change and never looked at while choosing one."""
    return synthetic_nuclei(
        seed=1, shape=(48, 112, 112), aniso=1.0, n_try=600, radius=(4.5, 8.0), photons=20.0
    )


def synthetic_cells(**kwargs):
    """Membrane-bounded cells (:func:`napari_histovol.core.segment.simulate.membrane_cells`,
    the generator the tests use): (image uint16, labels, sampling in um)."""
    from napari_histovol.core.segment.simulate import membrane_cells

    return membrane_cells(**kwargs)


def load_cells():
    """Membrane-bounded cells (seed 7). Seeds 0-4 were used while choosing the dark-region
    radius and outline; this one was held out until its first run, where one cell failed, and
    was then looked at."""
    return synthetic_cells(seed=7)


def load_cells_aniso():
    """Membrane-bounded cells with z twice as coarse (seed 8; its summary seen, its objects
    never looked at)."""
    return synthetic_cells(seed=8, shape=(32, 128, 128), aniso=2.0)


def load_cells_thick():
    """Held out: smaller cells (60 in the volume), thicker walls (2.5 px), more blur (1.5 px)
    and fewer photons (20); run once, on the final method."""
    return synthetic_cells(seed=11, n=60, photons=20.0, wall=2.5, blur=1.5)


def em_objects(interior: np.ndarray, *, min_overlap: float = 0.5) -> np.ndarray:
    """3D neurites from per-section membrane labels: 2D cell profiles linked to the profile of
    the next section that they overlap most (mutual best, overlap >= ``min_overlap`` of the
    smaller)."""
    nz = interior.shape[0]
    lab2 = np.zeros(interior.shape, np.int32)
    off = 0
    for z in range(nz):
        lz, n = ndi.label(interior[z])
        lab2[z] = np.where(lz > 0, lz + off, 0)
        off += n
    parent = np.arange(off + 1)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for z in range(nz - 1):
        a, b = lab2[z].ravel(), lab2[z + 1].ravel()
        sel = (a > 0) & (b > 0)
        pairs, cnt = np.unique(np.stack([a[sel], b[sel]]), axis=1, return_counts=True)
        area = np.bincount(lab2[z : z + 2].ravel(), minlength=off + 1)
        best_a, best_b = {}, {}
        for (i, j), c in zip(pairs.T, cnt, strict=True):
            if c > best_a.get(i, (0, 0))[0]:
                best_a[i] = (c, j)
            if c > best_b.get(j, (0, 0))[0]:
                best_b[j] = (c, i)
        for i, (c, j) in best_a.items():
            if best_b[j][1] == i and c >= min_overlap * min(area[i], area[j]):
                parent[find(i)] = find(j)
    roots = np.array([find(i) for i in range(off + 1)])
    roots[0] = 0
    return roots[lab2]


def load_em(crop=(slice(None), slice(0, 256), slice(0, 256))):
    from PIL import Image

    d = DATA / "isbi2012_sstem_train"
    img = np.stack([np.asarray(Image.open(p)) for p in sorted((d / "train_image").glob("*.png"))])
    lab = np.stack([np.asarray(Image.open(p)) for p in sorted((d / "train_label").glob("*.png"))])
    img, lab = img[crop], lab[crop]
    return img, em_objects(lab > 127), (0.05, 0.004, 0.004)


def pick_objects(lab: np.ndarray, n: int, *, min_sections: int, min_voxels: int, seed: int = 0):
    """``n`` objects (fixed seed) that do not touch the in-plane border and span enough sections."""
    border = np.unique(
        np.concatenate(
            [lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]
        )
    )
    ids = []
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None or k in border:
            continue
        if sl[0].stop - sl[0].start < min_sections:
            continue
        if (lab[sl] == k).sum() < min_voxels:
            continue
        ids.append(k)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ids, min(n, len(ids)), replace=False).tolist())


# ------------------------------------------------------------------------------ protocol


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def farthest_inside(mask: np.ndarray, sampling) -> tuple[int, int, int]:
    d = ndi.distance_transform_edt(np.pad(mask, 1), sampling=sampling)[1:-1, 1:-1, 1:-1]
    return tuple(int(v) for v in np.unravel_index(np.argmax(d), d.shape))


def next_click(gt: np.ndarray, pred: np.ndarray, sampling):
    err = gt ^ pred
    lab, n = ndi.label(err)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    comp = lab == (np.argmax(sizes) + 1)
    z, y, x = farthest_inside(comp, sampling)
    return (z, y, x, bool(gt[z, y, x]))


def run_protocol(img, gt_lab, ids, method, *, n_clicks, sampling):
    """Dice after each click for every object; seconds per click."""
    curves, secs = [], []
    for k in ids:
        gt = gt_lab == k
        clicks = [(*farthest_inside(gt, sampling), True)]
        curve = []
        for i in range(n_clicks):
            t = time.perf_counter()
            pred = method(k, clicks)
            secs.append(time.perf_counter() - t)
            curve.append(dice(gt, pred))
            if i + 1 < n_clicks:
                c = next_click(gt, pred, sampling)
                if c is None:
                    curve += [curve[-1]] * (n_clicks - 1 - i)
                    break
                clicks.append(c)
        curves.append(curve)
    return np.array(curves), secs


# -------------------------------------------------------------------------------- methods


def ours(img, *, margin, sampling=None):
    from napari_histovol.core.progress import drain
    from napari_histovol.core.segment import Prompt, SegmentSession

    session = SegmentSession(img, rgb=False, margin=margin, sampling=sampling)
    section_secs = []

    def method(k, clicks):
        session.prompts = [Prompt(z, y, x, 1, pos) for z, y, x, pos in clicks]
        session.masks.clear()
        t = time.perf_counter()
        z = clicks[-1][0]
        session.segment_section(1, z)
        section_secs.append(time.perf_counter() - t)
        drain(session.iter_segment_object(1))
        out = np.zeros(img.shape, bool)
        for zz in session.masks.get(1, {}):
            out[zz] = session.object_mask(1, zz)
        return out

    return method, section_secs


def _window(shape, clicks, margin, zmargin):
    a = np.array([c[:3] for c in clicks])
    lo = np.maximum(0, a.min(0) - (zmargin, margin, margin))
    hi = np.minimum(shape, a.max(0) + (zmargin, margin, margin) + 1)
    return tuple(slice(int(lo[i]), int(hi[i])) for i in range(3))


SEED_RADIUS = 2


def _markers(shape, clicks, win):
    m = np.zeros(tuple(s.stop - s.start for s in win), np.int32)
    m[0], m[-1], m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1] = 2, 2, 2, 2, 2, 2
    if m.shape[0] < 3:
        m[0], m[-1] = 0, 0
    # a click seeds a small disk (radius SEED_RADIUS px in its section), not one voxel: one
    # voxel against a whole-border background seed gives the random walker nothing to hold
    r = SEED_RADIUS
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= r * r
    for z, y, x, pos in clicks:
        zz, cy, cx = z - win[0].start, y - win[1].start, x - win[2].start
        for dy, dx in zip(yy[disk], xx[disk], strict=True):
            if 0 <= cy + dy < m.shape[1] and 0 <= cx + dx < m.shape[2]:
                m[zz, cy + dy, cx + dx] = 1 if pos else 2
    return m


def _norm(img):
    lo, hi = np.percentile(img, (1, 99.5))
    return np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def peer_watershed(img, *, margin, zmargin, sampling):
    from skimage.segmentation import watershed

    norm = _norm(img)
    rel = np.asarray(sampling) / min(sampling)

    def method(k, clicks):
        win = _window(img.shape, clicks, margin, zmargin)
        sub = ndi.gaussian_filter(norm[win], 1.0 / rel)
        grad = ndi.gaussian_gradient_magnitude(sub, 1.0)
        lab = watershed(grad, _markers(img.shape, clicks, win))
        out = np.zeros(img.shape, bool)
        out[win] = lab == 1
        return out

    return method


def peer_random_walker(img, *, margin, zmargin, sampling):
    from skimage.segmentation import random_walker

    norm = _norm(img)

    def method(k, clicks):
        win = _window(img.shape, clicks, margin, zmargin)
        lab = random_walker(
            norm[win], _markers(img.shape, clicks, win), beta=130, mode="cg_j", tol=1e-3
        )
        out = np.zeros(img.shape, bool)
        out[win] = lab == 1
        return out

    return method


# ---------------------------------------------------------------------------------- main

DATASETS = {
    "nuclei": dict(load=load_nuclei, min_sections=8, min_voxels=2000, margin=64, zmargin=24),
    "em": dict(load=load_em, min_sections=6, min_voxels=1500, margin=64, zmargin=30),
    "stardist": dict(load=load_stardist, min_sections=4, min_voxels=300, margin=64, zmargin=24),
    "synthetic": dict(load=load_synthetic, min_sections=4, min_voxels=500, margin=64, zmargin=24),
    "synthetic_small": dict(
        load=load_synthetic_small, min_sections=4, min_voxels=200, margin=64, zmargin=24
    ),
    "cells": dict(load=load_cells, min_sections=4, min_voxels=300, margin=64, zmargin=24),
    "cells_aniso": dict(
        load=load_cells_aniso, min_sections=4, min_voxels=300, margin=64, zmargin=12
    ),
    "cells_thick": dict(
        load=load_cells_thick, min_sections=4, min_voxels=300, margin=64, zmargin=24
    ),
}


def summarise(curves, secs, n5=5):
    mean = curves.mean(axis=0)
    return {
        "dice_per_click": [round(float(v), 4) for v in mean],
        "dice_after_1": round(float(mean[0]), 4),
        "dice_after_5": round(float(mean[min(n5, len(mean)) - 1]), 4),
        "worst_object_after_5": round(float(curves[:, min(n5, curves.shape[1]) - 1].min()), 4),
        "seconds_per_click_mean": round(float(np.mean(secs)), 3),
        "seconds_per_click_max": round(float(np.max(secs)), 3),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--clicks", type=int, default=8)
    ap.add_argument("--datasets", default="nuclei,em")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--peers", default="seeded_watershed,random_walker")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(json.dumps({"skipped": f"{DATA} is absent"}))
        return 0
    report = {
        "protocol": "micro-sam: 1 click at the farthest-inside point, then corrective "
        "clicks at the largest error region's farthest-inside point",
        "datasets": {},
    }
    for name in args.datasets.split(","):
        cfg = DATASETS[name]
        try:
            img, lab, sampling = cfg["load"]()
        except FileNotFoundError as exc:
            report["datasets"][name] = {"skipped": str(exc)}
            continue
        ids = pick_objects(
            lab, args.objects, min_sections=cfg["min_sections"], min_voxels=cfg["min_voxels"]
        )
        entry = {"shape": list(img.shape), "objects": ids}
        method, section_secs = ours(img, margin=cfg["margin"], sampling=sampling)
        curves, secs = run_protocol(img, lab, ids, method, n_clicks=args.clicks, sampling=sampling)
        entry["histovol"] = summarise(curves, secs)
        entry["histovol"]["per_object_after_5"] = [round(float(v), 3) for v in curves[:, 4]]
        entry["histovol"]["current_section_seconds_max"] = round(float(max(section_secs)), 3)
        # one batch call: first clicks of all objects together (what `histovol segment` runs)
        from napari_histovol.core.io.meta import VolumeMeta
        from napari_histovol.core.segment import Prompt, segment_volume
        from napari_histovol.core.segment.volume import as_volume

        prompts = [Prompt(*farthest_inside(lab == k, sampling), k, True) for k in ids]
        t = time.perf_counter()
        meta = VolumeMeta(scale=tuple(sampling), scale_known=True, spacing_known=True)
        res = segment_volume(as_volume(img, meta), prompts, margin=cfg["margin"])
        np.asarray(res.labels.data)
        entry["histovol"]["batch_call_seconds"] = round(time.perf_counter() - t, 2)
        peers = {"seeded_watershed": peer_watershed, "random_walker": peer_random_walker}
        chosen = [] if args.no_peers else [p for p in args.peers.split(",") if p]
        if chosen:
            for peer in chosen:
                make = peers[peer]
                m = make(img, margin=cfg["margin"], zmargin=cfg["zmargin"], sampling=sampling)
                c, s = run_protocol(img, lab, ids, m, n_clicks=args.clicks, sampling=sampling)
                entry[peer] = summarise(c, s)
            for peer in chosen:
                entry[f"ratio_dice_after_5_vs_{peer}"] = round(
                    entry["histovol"]["dice_after_5"] / max(entry[peer]["dice_after_5"], 1e-6), 3
                )
        report["datasets"][name] = entry
        print(name, json.dumps(entry["histovol"]), file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

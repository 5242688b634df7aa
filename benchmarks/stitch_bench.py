"""Stitching benchmark: placement error against a truth we made, speed and peak memory, with
the peers measured in the same run.

* Simulated grids cut from real images (the skin H&E, a vEMstitch EM tile) with known jitter,
  rotations, a smooth elastic distortion and noise: RMS placement error (px) over a 9 x 9 grid
  of points in every tile (the whole tile, not only the overlaps), after the best rigid
  alignment of the estimate onto the truth; mean and worst over seeds.
* NIST MIST 5x5 (t01): distance of every tile to MIST's own reference positions (integer, not
  ground truth), after removing the common offset.
* Peak memory of a file-level ``stitch`` (tiles on disk -> pyramidal .ome.tif) in a child
  process, at N and 4N tiles of 1024 x 1024.

Peers: m2stitch (a Python MIST), ASHLAR through its in-memory reader (``reg.Metadata`` /
``reg.Reader`` over numpy arrays: no Bio-Formats reader and no Java file reading; the Java VM
ASHLAR starts at import is not used), and a plain baseline written here (phase correlation of
each nominal overlap, sub-pixel by upsampling, then a maximum spanning tree over the overlap
NCC). A peer that cannot be imported is reported as such in the JSON.

Prints one JSON object. Needs ../shared/data (skin_he_2d, vemstitch_em_tiles,
mist_test_5x5_timelapse).

    python benchmarks/stitch_bench.py [--quick] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from napari_histovol.core.stitch import ArrayTiles, place_tiles
from napari_histovol.core.stitch.pairwise import nominal_pairs
from napari_histovol.core.stitch.simulate import placement_error, simulate_grid

SHARED = Path(
    os.environ.get("HISTOVOL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

#: (source image, case, simulate_grid options, histovol model)
CASES = [
    ("skin", "translation", dict(jitter=6, noise=4), "translation"),
    ("skin", "rigid", dict(jitter=6, noise=4, rotation_deg=1.0), "rigid"),
    ("skin", "elastic", dict(jitter=6, noise=4, rotation_deg=0.5, elastic_px=3.0), "elastic"),
    ("em", "translation", dict(jitter=8, noise=4), "translation"),
    ("em", "rigid", dict(jitter=8, noise=4, rotation_deg=1.0), "rigid"),
    ("em", "elastic", dict(jitter=8, noise=4, rotation_deg=0.5, elastic_px=3.0), "elastic"),
]
GRIDS = {
    "skin": dict(grid=(3, 4), tile=(200, 240), overlap=0.15),
    "em": dict(grid=(3, 4), tile=(320, 384), overlap=0.15),
}


# ------------------------------------------------------------------------------- sources


def load_sources() -> dict[str, np.ndarray]:
    import imageio.v3 as iio
    import tifffile

    skin = tifffile.imread(SHARED / "skin_he_2d" / "skin.tif")[160:]  # top band: blank slide
    em = iio.imread(SHARED / "vemstitch_em_tiles" / "sample_1" / "1_2_2.png")
    return {"skin": skin.mean(axis=2).astype(np.uint8), "em": np.asarray(em, np.uint8)}


# ---------------------------------------------------------------------------------- peers


def peer_status() -> dict[str, str]:
    """'ok' or why a peer cannot run."""
    out = {}
    for name, mod in (("m2stitch", "m2stitch"), ("ashlar", "ashlar.reg")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                __import__(mod)
            out[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
            out[name] = f"not importable: {type(exc).__name__}: {exc}"
    out["baseline"] = "ok"
    return out


def grid_indices(nominal: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every tile from its nominal place (positions within a quarter
    of a tile side of each other share a row or column, so a tilted stage still makes a grid).
    """

    def ranks(v: np.ndarray, side: float) -> np.ndarray:
        order = np.argsort(v)
        out = np.zeros(len(v), int)
        k = 0
        for a, b in zip(order[:-1], order[1:], strict=True):
            k += int(v[b] - v[a] > 0.25 * side)
            out[b] = k
        return out

    h, w = shape[:2]
    return ranks(nominal[:, 1], h), ranks(nominal[:, 0], w)


def run_m2stitch(tiles, nominal, search) -> np.ndarray:
    """Top-left (x, y) of every tile by m2stitch (MIST's method, integer translations).

    Each tile goes in minus its mean: m2stitch's NCC divides by the norms of the raw pixels
    (not of the centred ones), so raw uint8/uint16 tiles never pass its NCC threshold ("there
    is no good top pair") and it fails outright.
    """
    import m2stitch

    h, w = tiles[0].shape
    rows, cols = grid_indices(nominal, (h, w))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid, _ = m2stitch.stitch_images(
            np.stack([t.astype(np.float32) - t.mean() for t in tiles]),
            position_indices=np.stack([rows, cols], 1),
            position_initial_guess=nominal[:, ::-1],
            overlap_diff_threshold=100.0 * search / max(h, w),
            row_col_transpose=False,
        )
    return np.stack([grid["x_pos"].to_numpy(), grid["y_pos"].to_numpy()], 1).astype(float)


def run_ashlar(tiles, nominal, search) -> np.ndarray:
    """Top-left (x, y) of every tile by ASHLAR's EdgeAligner over an in-memory reader."""
    from ashlar import reg

    class Meta(reg.Metadata):
        def __init__(self):
            self._tile = np.array(tiles[0].shape[:2])

        _num_images = property(lambda self: len(tiles))
        num_channels = property(lambda self: 1)
        pixel_size = property(lambda self: 1.0)
        pixel_dtype = property(lambda self: tiles[0].dtype)

        def tile_position(self, i):
            return np.asarray(nominal[i][::-1], float)  # (y, x), px (pixel size 1)

        def tile_size(self, i):
            return self._tile

    class Reader(reg.Reader):
        metadata = Meta()

        def read(self, series, c):
            return tiles[series]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aligner = reg.EdgeAligner(
            Reader(), channel=0, max_shift=search, do_make_thumbnail=False, verbose=False
        )
        aligner.run()
    return np.asarray(aligner.positions, float)[:, ::-1]


def _ncc(u, v) -> float:
    u = u.astype(np.float64).ravel() - u.mean()
    v = v.astype(np.float64).ravel() - v.mean()
    d = np.sqrt((u * u).sum() * (v * v).sum())
    return float((u * v).sum() / d) if d > 0 else 0.0


def run_baseline(tiles, nominal, search) -> np.ndarray:
    """Plain phase correlation of each nominal overlap (sub-pixel by 10x upsampling) and a
    maximum spanning tree over the overlap NCC: the classical stitcher without a global solve,
    chance test or refinement."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree
    from skimage.registration import phase_cross_correlation

    n = len(tiles)
    shapes = [t.shape[:2] for t in tiles]
    pairs = nominal_pairs(shapes, nominal)
    shifts, weights = {}, {}
    for i, j in pairs:
        a, b = tiles[i].astype(np.float32), tiles[j].astype(np.float32)
        dx, dy = np.round(nominal[j] - nominal[i]).astype(int)
        (ha, wa), (hb, wb) = shapes[i], shapes[j]
        x0, y0 = max(0, dx), max(0, dy)
        x1, y1 = min(wa, dx + wb), min(ha, dy + hb)
        ca, cb = a[y0:y1, x0:x1], b[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
        e, _, _ = phase_cross_correlation(ca, cb, upsample_factor=10, normalization=None)
        ey, ex = float(e[0]), float(e[1])
        if abs(ex) > search or abs(ey) > search:
            continue
        # NCC of the overlap at the integer shift (the tree's weight)
        ix, iy = int(round(ex)), int(round(ey))
        sx0, sy0 = max(x0, dx + ix), max(y0, dy + iy)
        sx1, sy1 = min(x1, dx + ix + wb), min(y1, dy + iy + hb)
        if sx1 - sx0 < 8 or sy1 - sy0 < 8:
            continue
        w = _ncc(
            a[sy0:sy1, sx0:sx1], b[sy0 - dy - iy : sy1 - dy - iy, sx0 - dx - ix : sx1 - dx - ix]
        )
        shifts[(i, j)] = np.array([dx + ex, dy + ey])
        weights[(i, j)] = w
    pos = np.array(nominal, float).copy()
    if not shifts:
        return pos
    keys = list(shifts)
    ii = np.array([k[0] for k in keys])
    jj = np.array([k[1] for k in keys])
    cost = np.array([2.0 - weights[k] for k in keys])  # max NCC tree = min (2 - NCC) tree
    tree = minimum_spanning_tree(coo_matrix((cost, (ii, jj)), shape=(n, n))).tocoo()
    adj: dict[int, list[tuple[int, np.ndarray]]] = {k: [] for k in range(n)}
    for a_, b_ in zip(tree.row, tree.col, strict=True):
        d = shifts[(a_, b_)] if (a_, b_) in shifts else -shifts[(b_, a_)]
        adj[a_].append((b_, d))
        adj[b_].append((a_, -d))
    placed = np.zeros(n, bool)
    for root in range(n):  # walk the tree from each root: child = parent + measured offset
        if placed[root]:
            continue
        placed[root] = True
        stack = [root]
        while stack:
            k = stack.pop()
            for m, d in adj[k]:
                if not placed[m]:
                    pos[m] = pos[k] + d
                    placed[m] = True
                    stack.append(m)
    return pos


def run_histovol(tiles, nominal, search, model):
    pl = place_tiles(ArrayTiles(tiles), nominal, model=model, search=search)
    return pl


# ------------------------------------------------------------------------------- metrics


def rms_error(sim, estimate) -> tuple[float, float]:
    shapes = [t.shape[:2] for t in sim.tiles]
    err = placement_error(sim.truth, estimate, shapes)
    return float(np.sqrt((err**2).mean())), float(err.max())


def seam_error(sim, estimate, step: float = 4.0) -> float:
    """RMS distance (px) in the mosaic between the two tiles' pictures of the same source point,
    over every overlap: the misregistration a seam shows (what blending smears into ghosts),
    as opposed to where the whole tile sits."""
    from napari_histovol.core.stitch.pairwise import apply

    shapes = [t.shape[:2] for t in sim.tiles]
    d2 = []
    for i, j in nominal_pairs(shapes, sim.nominal):
        h, w = shapes[i]
        gx, gy = np.meshgrid(np.arange(0, w, step), np.arange(0, h, step))
        p = np.stack([gx.ravel(), gy.ravel()], 1).astype(float)
        s = sim.truth(i, p)
        inv = np.linalg.inv(sim.matrices[j])
        q = apply(inv, s)
        for _ in range(5):  # invert tile j's field by fixed-point steps
            q = apply(inv, s - (sim.truth(j, q) - apply(sim.matrices[j], q)))
        hj, wj = shapes[j]
        ok = (q[:, 0] >= 0) & (q[:, 1] >= 0) & (q[:, 0] <= wj - 1) & (q[:, 1] <= hj - 1)
        if ok.any():
            d = estimate(i, p[ok]) - estimate(j, q[ok])
            d2.append((d**2).sum(1))
    return float(np.sqrt(np.concatenate(d2).mean())) if d2 else float("nan")


def translations(pos: np.ndarray):
    return lambda k, p: p + pos[k]


def simulated_cases(sources, seeds, status) -> list[dict]:
    rows = []
    for src_name, case, opts, model in CASES:
        per = {}
        for seed in seeds:
            sim = simulate_grid(sources[src_name], seed=seed, **GRIDS[src_name], **opts)
            h, w = sim.tiles[0].shape[:2]
            search = 0.1 * max(h, w)
            n = len(sim.tiles)
            methods = [("histovol", None)]
            if model == "elastic":
                methods.append(("histovol_rigid", None))
            methods += [("m2stitch", run_m2stitch), ("ashlar", run_ashlar)]
            methods += [("baseline", run_baseline)]
            for name, fn in methods:
                rec = per.setdefault(name, {"rms": [], "max": [], "seam": [], "s_per_tile": []})
                if name in ("m2stitch", "ashlar") and status[name] != "ok":
                    rec["skipped"] = status[name]
                    continue
                t0 = time.perf_counter()
                try:
                    if name.startswith("histovol"):
                        m = "rigid" if name == "histovol_rigid" else model
                        pl = run_histovol(sim.tiles, sim.nominal, search, m)
                        est = lambda k, p, pl=pl: pl.tiles[k].to_mosaic(p)  # noqa: E731
                        rec.setdefault("flagged", []).append(len(pl.flagged))
                    else:
                        pos = fn(sim.tiles, sim.nominal, search)
                        est = translations(pos)
                except Exception as exc:  # noqa: BLE001 - a peer failing is a result
                    rec.setdefault("failed", []).append(f"seed {seed}: {type(exc).__name__}: {exc}")
                    continue
                dt = time.perf_counter() - t0
                rms, mx = rms_error(sim, est)
                rec["rms"].append(rms)
                rec["max"].append(mx)
                rec["seam"].append(seam_error(sim, est))
                rec["s_per_tile"].append(dt / n)
        row = {
            "source": src_name,
            "case": case,
            "grid": list(GRIDS[src_name]["grid"]),
            "tile": list(GRIDS[src_name]["tile"]),
            "overlap": GRIDS[src_name]["overlap"],
            **{k: v for k, v in opts.items()},
            "histovol_model": model,
            "seeds": list(seeds),
            "methods": {},
        }
        for name, rec in per.items():
            out = {}
            if rec["rms"]:
                out["rms_px_mean"] = round(float(np.mean(rec["rms"])), 3)
                out["rms_px_worst"] = round(float(np.max(rec["rms"])), 3)
                out["max_px_worst"] = round(float(np.max(rec["max"])), 3)
                out["seam_rms_px_mean"] = round(float(np.mean(rec["seam"])), 3)
                out["s_per_tile"] = round(float(np.mean(rec["s_per_tile"])), 4)
            for k in ("skipped", "failed", "flagged"):
                if k in rec:
                    out[k] = rec[k]
            row["methods"][name] = out
        goal = 1.5 if case == "elastic" else 0.5
        hv = row["methods"]["histovol"].get("rms_px_worst", float("inf"))
        peers = [
            v["rms_px_worst"]
            for k, v in row["methods"].items()
            if not k.startswith("histovol") and "rms_px_worst" in v
        ]
        row["goal_rms_px"] = goal
        row["goal_met"] = bool(hv <= goal)
        row["better_than_every_peer"] = bool(peers) and all(hv < p for p in peers)
        row["ratio_best_peer_to_histovol"] = round(min(peers) / hv, 2) if peers and hv else None
        rows.append(row)
        print(f"# {src_name} {case}: " + json.dumps(row["methods"]), file=sys.stderr)
    return rows


# ----------------------------------------------------------------------------------- MIST


def mist_case(status) -> dict:
    from napari_histovol.core.stitch import FileTiles, find_tile_sections

    folder = SHARED / "mist_test_5x5_timelapse"
    sec = find_tile_sections(folder / "tiles")[0]
    src = FileTiles(sec.paths)
    tiles = [src.pixels(k) for k in range(len(src))]
    ref = {}
    text = (folder / "mist_reference_output" / "global-positions-1.txt").read_text()
    for m in re.finditer(r"file: (\S+); corr: \S+; position: \((\d+), (\d+)\)", text):
        ref[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    mist = np.array([ref[n] for n in src.names], float)
    # column-major numbering (p = col * 5 + row + 1); overlaps as MIST estimated them
    from napari_histovol.core.stitch.infer import infer_layout

    h, w = tiles[0].shape
    k = np.arange(len(tiles))
    grid_nominal = np.stack([(k // 5) * w * (1 - 0.06), (k % 5) * h * (1 - 0.07)], 1)
    inferred, info = infer_layout(src)
    search = 0.1 * max(h, w)
    out = {"tiles": len(tiles), "tile": [h, w], "reference": "MIST global-positions-1.txt"}
    nominals = {
        "nominal_inferred": (inferred, f"histovol's layout from the overlaps: {info}"),
        "nominal_grid": (grid_nominal, "5x5 grid, overlap 6 % x / 7 % y, no stage tilt"),
    }
    for key, (nominal, what) in nominals.items():
        out[key] = {"nominal": what, **mist_methods(src, tiles, nominal, search, mist, status)}
    return out


def mist_methods(src, tiles, nominal, search, mist, status) -> dict:
    out = {}
    for name, fn in (
        ("histovol", None),
        ("m2stitch", run_m2stitch),
        ("ashlar", run_ashlar),
        ("baseline", run_baseline),
    ):
        if name in ("m2stitch", "ashlar") and status[name] != "ok":
            out[name] = {"skipped": status[name]}
            continue
        t0 = time.perf_counter()
        flagged = []
        try:
            if name == "histovol":
                pl = place_tiles(src, nominal, search=search)
                est = np.array([t.matrix[:2, 2] for t in pl.tiles])
                flagged = pl.flagged
            else:
                est = fn(tiles, nominal, search)
        except Exception as exc:  # noqa: BLE001
            out[name] = {"failed": f"{type(exc).__name__}: {exc}"}
            continue
        dt = time.perf_counter() - t0
        d = (est - est.mean(0)) - (mist - mist.mean(0))
        dist = np.linalg.norm(d, axis=1)
        rec = {
            "median_px": round(float(np.median(dist)), 2),
            "rms_px": round(float(np.sqrt((dist**2).mean())), 2),
            "max_px": round(float(dist.max()), 2),
            "s_per_tile": round(dt / len(tiles), 4),
        }
        if name == "histovol":
            ok = np.array([n not in flagged for n in src.names])
            d2 = (est[ok] - est[ok].mean(0)) - (mist[ok] - mist[ok].mean(0))
            dist2 = np.linalg.norm(d2, axis=1)
            rec["flagged"] = flagged
            rec["unflagged_median_px"] = round(float(np.median(dist2)), 2)
            rec["unflagged_max_px"] = round(float(dist2.max()), 2)
            rec["edges_rejected"] = sum(e.status != "accepted" for e in pl.edges)
            rec["edges"] = len(pl.edges)
        out[name] = rec
    return out


# --------------------------------------------------------------------------------- memory

CHILD = r"""
import json, resource, sys, threading, time
from napari_histovol.core.stitch import stitch

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

def hwm_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")

try:  # reset the kernel's peak-RSS mark: importing the stack peaks far above its working set
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
before = rss_mb()
peak = [before]
running = [True]
def watch():
    while running[0]:
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.01)
w = threading.Thread(target=watch, daemon=True)
w.start()
t0 = time.perf_counter()
r = stitch(sys.argv[1], sys.argv[2], grid=sys.argv[3], overlap=0.1, workers=2)
dt = time.perf_counter() - t0
running[0] = False
w.join()
pl = r.sections[0][1]
print(json.dumps({
    "rss_before_mb": round(before, 1),
    "peak_rss_during_stitch_mb": round(peak[0], 1),
    "peak_growth_mb": round(peak[0] - before, 1),
    "peak_rss_kernel_mb": round(hwm_mb(), 1) if reset else None,
    "process_max_rss_mb_incl_imports": round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "seconds": round(dt, 1),
    "mosaic_shape": list(pl.mosaic_shape),
    "flagged": len(pl.flagged),
    "edges_accepted": sum(e.status == "accepted" for e in pl.edges),
    "edges": len(pl.edges),
}))
"""


def memory_case(sources, grids=((3, 3), (6, 6)), tile=1024) -> dict:
    """Peak memory and speed of a file-level stitch at each grid of ``tile`` px tiles."""
    import imageio.v3 as iio

    em = SHARED / "vemstitch_em_tiles" / "sample_1"
    # a large EM field: the nine vEMstitch tiles side by side (seams do not matter here)
    big = np.block([[iio.imread(em / f"1_{r}_{c}.png") for c in (1, 2, 3)] for r in (1, 2, 3)])
    out = {
        "tile": [tile, tile],
        "format": ".ome.tif (pyramidal)",
        "rss": "a child process per grid; peak_rss_kernel_mb: the kernel's peak-RSS mark (VmHWM)"
        " reset after the imports, so it covers the stitch alone; peak_rss_during_stitch_mb:"
        " VmRSS sampled every 10 ms (can miss spikes while a C call holds the GIL)",
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for g in grids:
            sim = simulate_grid(big, grid=g, tile=(tile, tile), overlap=0.1, jitter=8, seed=1)
            folder = tmp / f"g{g[0]}x{g[1]}"
            folder.mkdir()
            for k, t in enumerate(sim.tiles):
                iio.imwrite(folder / f"tile_{k:03d}.png", t)
            del sim
            res = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(folder),
                    str(tmp / f"m{g[0]}.ome.tif"),
                    f"{g[0]}x{g[1]}",
                ],
                capture_output=True,
                text=True,
            )
            if res.returncode:
                out["runs"][f"{g[0]}x{g[1]}"] = {"failed": res.stderr.strip().splitlines()[-1:]}
                continue
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            n = g[0] * g[1]
            rec["tiles"] = n
            rec["s_per_tile"] = round(rec["seconds"] / n, 3)
            h, w = rec["mosaic_shape"]
            rec["mosaic_mb"] = round(h * w / 2**20, 1)
            out["runs"][f"{g[0]}x{g[1]}"] = rec
    runs = [r for r in out["runs"].values() if "peak_rss_during_stitch_mb" in r]
    key = "peak_rss_kernel_mb" if runs and runs[0].get("peak_rss_kernel_mb") else None
    key = key or "peak_rss_during_stitch_mb"
    if len(runs) >= 2:
        out["peak_measure"] = key
        p0, p1 = runs[0][key], runs[1][key]
        out["tiles_ratio"] = runs[1]["tiles"] / runs[0]["tiles"]
        out["peak_ratio"] = round(p1 / p0, 3)
        out["peak_difference_mb"] = round(p1 - p0, 1)
        out["mosaic_difference_mb"] = round(runs[1]["mosaic_mb"] - runs[0]["mosaic_mb"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed per case")
    ap.add_argument("--no-memory", action="store_true", help="skip the child-process runs")
    ap.add_argument(
        "--only", choices=("simulated", "mist", "memory"), help="run one part of the benchmark"
    )
    ap.add_argument(
        "--memory-grids", default="3x3,6x6", help="grids of 1024 px tiles for the memory runs"
    )
    args = ap.parse_args()
    seeds = (0,) if args.quick else (0, 1)
    status = peer_status()
    sources = load_sources()
    out: dict = {"peers": status, "cpu_count": os.cpu_count()}
    t0 = time.perf_counter()
    run = {args.only} if args.only else {"simulated", "mist", "memory"}
    if args.no_memory:
        run.discard("memory")
    sim = simulated_cases(sources, seeds, status) if "simulated" in run else []
    if sim:
        out["simulated"] = sim
    if "mist" in run:
        try:
            out["mist_5x5_t01"] = mist_case(status)
        except Exception:  # noqa: BLE001
            out["mist_5x5_t01"] = {"failed": traceback.format_exc().strip().splitlines()[-1]}
    if "memory" in run:
        grids = [tuple(int(v) for v in g.split("x")) for g in args.memory_grids.split(",")]
        out["memory"] = memory_case(sources, grids=grids)
    if sim:
        out["summary"] = {
            "goals_met": all(r["goal_met"] for r in sim),
            "better_than_every_peer": all(r["better_than_every_peer"] for r in sim),
            "worst_rms_px": {
                f"{r['source']}/{r['case']}": r["methods"]["histovol"].get("rms_px_worst")
                for r in sim
            },
        }
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Write a lazily generated uint8 volume (default 2 GiB) to OME-Zarr and pyramidal OME-TIFF,
beside ``numpy.save`` of the same data, each in its own process; print one JSON object.

Figures: seconds, MB/s (volume bytes / wall time), peak resident memory (ru_maxrss) of each
writer's process, output size on disk. numpy.save needs the whole array in memory, so its
process first materialises the volume (timed separately), then saves it.

    python benchmarks/io_bench.py [--gib 2] [--out DIR] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 4096


def lazy_volume(gib: float):
    """(Z, 4096, 4096) uint8 dask array, one chunk per plane, made on demand: a smooth
    'tissue' texture shifted per plane plus noise (compressible like real sections, not trivially)."""
    import dask.array as da

    z = max(1, int(round(gib * 2**30 / SIDE**2)))
    rng = np.random.default_rng(0)
    small = rng.random((SIDE // 16, SIDE // 16)).astype(np.float32)
    from scipy import ndimage as ndi

    small = ndi.gaussian_filter(small, 2)
    small = (small - small.min()) / np.ptp(small)
    base = (np.kron(small, np.ones((16, 16), np.float32)) * 200 + 30).astype(np.uint8)
    noise = rng.integers(0, 8, size=(SIDE, SIDE + 64), dtype=np.uint8)

    def plane(block_info=None):
        # cheap to make, so that the writers, not the generator, are measured
        k = block_info[None]["chunk-location"][0]
        p = np.roll(base, 3 * k, axis=0)
        off = (7 * k) % 64
        p += noise[:, off : off + SIDE]
        return p[None]

    return da.map_blocks(
        plane,
        dtype=np.uint8,
        chunks=((1,) * z, (SIDE,), (SIDE,)),
        meta=np.empty((0, 0, 0), np.uint8),
    )


def _child(kind: str, out: str, gib: float, workers: int) -> dict:
    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.io.volume import Volume

    vol_lazy = lazy_volume(gib)
    nbytes = int(vol_lazy.nbytes)
    res: dict = {"bytes": nbytes}
    if kind == "numpy.save":
        t0 = time.perf_counter()
        arr = vol_lazy.compute(scheduler="threads")
        res["generate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        np.save(out, arr)
        res["seconds"] = time.perf_counter() - t0
    else:
        from napari_histovol.core.io.detect import write_volume

        vol = Volume(
            vol_lazy,
            VolumeMeta(scale=(4.0, 0.5, 0.5), unit="micrometer", scale_known=True).with_planes(
                vol_lazy.shape[0]
            ),
        )
        t0 = time.perf_counter()
        opts = {"compression": "lz4"} if kind == "ome-zarr-lz4" else {}
        write_volume(vol, out, workers=workers, **opts)
        res["seconds"] = time.perf_counter() - t0
        res["includes_generation"] = True
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.gib, args.workers)))
        return
    scratch = Path(args.out or tempfile.mkdtemp(prefix="histovol-io-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    results = {}
    kinds = (
        ("numpy.save", "v.npy"),
        ("ome-zarr", "v.ome.zarr"),
        ("ome-zarr-lz4", "v.lz4.ome.zarr"),
        ("ome-tiff", "v.ome.tif"),
    )
    for kind, name in kinds:
        out = scratch / name
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        p = subprocess.run(
            [
                sys.executable,
                __file__,
                "--gib",
                str(args.gib),
                "--workers",
                str(args.workers),
                "--child",
                kind,
                str(out),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["mb_per_s"] = r["bytes"] / 1e6 / r["seconds"]
        r["disk_mb"] = _du(out) / 1e6
        results[kind] = r
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    npy = results["numpy.save"]["mb_per_s"]
    r = results["numpy.save"]
    r["end_to_end_mb_per_s"] = r["bytes"] / 1e6 / (r["seconds"] + r["generate_s"])
    summary = {
        "benchmark": "io_bench",
        "volume": {
            "shape": [int(round(args.gib * 2**30 / SIDE**2)), SIDE, SIDE],
            "dtype": "uint8",
            "gib": args.gib,
        },
        "machine": {"cpus": os.cpu_count()},
        "workers": args.workers,
        "results": results,
        "ratio_ome_zarr_to_numpy_save_throughput": results["ome-zarr"]["mb_per_s"] / npy,
        "ratio_ome_zarr_lz4_to_numpy_save_throughput": results["ome-zarr-lz4"]["mb_per_s"] / npy,
        "ratio_ome_tiff_to_numpy_save_throughput": results["ome-tiff"]["mb_per_s"] / npy,
        "ratio_ome_zarr_to_numpy_end_to_end": results["ome-zarr"]["mb_per_s"]
        / r["end_to_end_mb_per_s"],
        "goals": {"peak_rss_mb_below": 1024, "ome_zarr_throughput_ratio_at_least": 0.5},
        "settings": {
            "ome-zarr": "NGFF 0.5, Blosc zstd level 1, 1024x1024x1 chunks, full pyramid",
            "ome-zarr-lz4": "as ome-zarr with Blosc lz4",
            "ome-tiff": "BigTIFF, 512 px tiles, deflate level 1, SubIFD pyramid",
        },
        "notes": "OME-Zarr/OME-TIFF times include generating the lazy volume and building the pyramid; "
        "numpy.save's time is the save alone, after materialising the array in memory.",
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

"""Build benchmark: N synthetic RGB sections (default 200 of 2048 x 2048, with known jitter)
-> volume; histovol build beside a plain re-implementation of the seed's sequential loop
(pystackreg per section to the middle one, linear interpolation, memmap stacking), each in its
own process, in the same run. Prints one JSON object: wall time per section, CPU use (busy
cores), peak resident memory, output size.

    python benchmarks/build_bench.py [--sections 200] [--size 2048] [--frames-between 3] [--out DIR]
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

import cv2
import numpy as np

SHARED = Path(
    os.environ.get("HISTOVOL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def make_sections(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """H&E-like sections: the skin H&E texture drifting slowly through z, each seen through a
    random rigid jitter (+-10 px, +-3 deg), as JPEG (the usual scanner export)."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    skin = tifffile.imread(SHARED / "skin_he_2d" / "skin.tif")
    base = cv2.resize(skin, (size + 64, size + 64), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    jitter = []
    for z in range(n):
        dy, dx = int(16 * np.sin(z / 25)), int(16 * np.cos(z / 31))
        img = base[32 + dy : 32 + dy + size, 32 + dx : 32 + dx + size]
        m = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), rng.uniform(-3, 3), 1.0)
        m[:, 2] += rng.uniform(-10, 10, 2)
        img = cv2.warpAffine(img, m, (size, size), borderValue=(245, 245, 245))
        cv2.imwrite(
            str(folder / f"section_{z:04d}.jpg"),
            cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 90],
        )
        jitter.append(m.tolist())
    (folder.parent / "jitter.json").write_text(json.dumps(jitter))


def seed_loop(folder: Path, out: Path, frames_between: int) -> None:
    """The seed pipeline, plainly: read every section, register each to the middle section
    with pystackreg RIGID_BODY at full resolution, warp every channel, cross-fade the frames
    between neighbours, stack into a memory-mapped .npy."""
    from pystackreg import StackReg

    files = sorted(folder.glob("*.jpg"))
    first = cv2.imread(str(files[0]))
    h, w = first.shape[:2]
    ref_img = cv2.cvtColor(cv2.imread(str(files[len(files) // 2])), cv2.COLOR_BGR2GRAY).astype(
        np.float64
    )
    n_out = (len(files) - 1) * (frames_between + 1) + 1
    stack = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(n_out, h, w, 3))
    prev = None
    sr = StackReg(StackReg.RIGID_BODY)
    for i, f in enumerate(files):
        img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        tmat = sr.register(ref_img, cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64))
        aligned = np.stack(
            [np.clip(sr.transform(img[..., c].astype(np.float64), tmat), 0, 255) for c in range(3)],
            axis=-1,
        ).astype(np.uint8)
        k = i * (frames_between + 1)
        stack[k] = aligned
        if prev is not None:
            for j in range(1, frames_between + 1):
                t = j / (frames_between + 1)
                stack[k - frames_between - 1 + j] = ((1 - t) * prev + t * aligned).astype(np.uint8)
        prev = aligned.astype(np.float32)
    stack.flush()


def child(kind: str, folder: str, out: str, frames_between: int) -> dict:
    t0 = time.perf_counter()
    c0 = os.times()
    if kind == "seed":
        seed_loop(Path(folder), Path(out), frames_between)
    else:
        from napari_histovol.core.pipeline import build_volume

        interp = "linear" if kind == "histovol-linear" else "flow"
        build_volume(
            folder,
            out,
            frames_between=frames_between,
            align="rigid",
            interp_method=interp,
            workers=2,
        )
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "busy_cores": cpu / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def du(p: Path) -> int:
    return (
        p.stat().st_size
        if p.is_file()
        else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", type=int, default=200)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--frames-between", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "IN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.child[2], args.frames_between)))
        return
    scratch = Path(args.out or tempfile.mkdtemp(prefix="histovol-build-bench-"))
    folder = scratch / "sections"
    t0 = time.perf_counter()
    if not folder.is_dir() or len(list(folder.glob("*.jpg"))) != args.sections:
        shutil.rmtree(folder, ignore_errors=True)
        make_sections(folder, args.sections, args.size)
    make_s = time.perf_counter() - t0
    results = {}
    for kind, name in (
        ("histovol", "v.ome.zarr"),
        ("histovol-linear", "vl.ome.zarr"),
        ("seed", "seed.npy"),
    ):
        out = scratch / name
        for p in (out, scratch / f".{name}.work", scratch / f".{name}.partial"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        p = subprocess.run(
            [
                sys.executable,
                __file__,
                "--frames-between",
                str(args.frames_between),
                "--child",
                kind,
                str(folder),
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        if p.returncode:
            raise SystemExit(p.stderr[-3000:])
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["seconds_per_section"] = r["seconds"] / args.sections
        r["output_mb_on_disk"] = du(out) / 1e6
        results[kind] = r
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
    n_out = (args.sections - 1) * (args.frames_between + 1) + 1
    summary = {
        "benchmark": "build_bench",
        "machine": {"cpus": os.cpu_count()},
        "input": {
            "sections": args.sections,
            "size": args.size,
            "rgb": True,
            "format": "JPEG q90",
            "jitter": "+-10 px, +-3 deg",
            "input_mb_raw": args.sections * args.size**2 * 3 / 1e6,
            "making_seconds": make_s,
        },
        "output": {
            "planes": n_out,
            "frames_between": args.frames_between,
            "raw_mb": n_out * args.size**2 * 3 / 1e6,
        },
        "results": results,
        "speedup_histovol_vs_seed": results["seed"]["seconds"] / results["histovol"]["seconds"],
        "speedup_histovol_linear_vs_seed": results["seed"]["seconds"]
        / results["histovol-linear"]["seconds"],
        "goals": {"peak_rss_mb_below": 2048, "speedup_at_least": 2},
        "notes": "histovol: build with rigid alignment (registered at 512 px), flow (or linear) interpolation, "
        "multiscale OME-Zarr; seed: pystackreg RIGID_BODY at full resolution to the middle section, "
        "linear interpolation, memmap .npy (no pyramid, no compression).",
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

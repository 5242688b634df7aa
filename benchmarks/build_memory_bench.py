"""Peak memory of ``histovol build`` against the number of sections (issue 11: memory must not
grow with the stack). Builds N synthetic RGB sections of SIZE px (the skin H&E texture drifting
through z, each under a random rigid jitter; see build_bench.make_sections) for each N given,
each build in its own process, and prints one JSON object: peak RSS per N, its growth per
section between the smallest and the largest N, and the same figures for the peer measured in
the same run (pystackreg registering every section to the middle one, the seed's method, with
its images held in memory as the seed did).

    python benchmarks/build_memory_bench.py [--sections 20 200] [--size 512] [--align rigid]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_bench import make_sections  # noqa: E402

CHILD_BUILD = """
import resource, sys, time, warnings
warnings.simplefilter("ignore")
from napari_histovol.core.pipeline import build_volume
t = time.perf_counter()
build_volume(sys.argv[1], sys.argv[2], align=sys.argv[3], frames_between=1, workers=2)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

CHILD_PEER = """
import resource, sys, time
import cv2, numpy as np
from pathlib import Path
from pystackreg import StackReg
t = time.perf_counter()
files = sorted(Path(sys.argv[1]).glob("*.jpg"))
imgs = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2GRAY).astype(np.float64) for f in files]
sr = StackReg(StackReg.RIGID_BODY)
mats = [sr.register(imgs[len(imgs) // 2], im) for im in imgs]
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; its own peak RSS (MB) and wall time (s)."""
    p = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    seconds, peak_kb = p.stdout.split()[-2:]
    return {"peak_rss_mb": round(int(peak_kb) / 1024, 1), "seconds": round(float(seconds), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", type=int, nargs="+", default=[20, 200])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--align", default="rigid")
    args = ap.parse_args()
    counts = sorted(args.sections)
    out: dict = {"size_px": args.size, "align": args.align, "histovol": {}, "pystackreg_peer": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in counts:
            make_sections(tmp / f"s{n}" / "sections", n, args.size, seed=n)
        for n in counts:
            t0 = time.perf_counter()
            out["histovol"][n] = run_child(
                CHILD_BUILD,
                str(tmp / f"s{n}" / "sections"),
                str(tmp / f"b{n}.ome.zarr"),
                args.align,
            )
            out["histovol"][n]["wall_s"] = round(time.perf_counter() - t0, 1)
        for n in counts:
            out["pystackreg_peer"][n] = run_child(CHILD_PEER, str(tmp / f"s{n}" / "sections"))
    lo, hi = counts[0], counts[-1]
    for key in ("histovol", "pystackreg_peer"):
        d = out[key]
        d["growth_mb_per_section"] = round(
            (d[hi]["peak_rss_mb"] - d[lo]["peak_rss_mb"]) / max(1, hi - lo), 3
        )
    out["growth_ratio_histovol_to_peer"] = round(
        out["histovol"]["growth_mb_per_section"]
        / max(out["pystackreg_peer"]["growth_mb_per_section"], 1e-9),
        3,
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

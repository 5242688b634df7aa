"""A full disk under every command that writes: one line that says so, exit status 2, and
nothing left on the full disk (its space given back).

The full disk is a small tmpfs filled to the last byte; mounting needs root (as on CI), so
these tests skip with the reason elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import uuid
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

from napari_histovol.cli import main

from .conftest import tissue, write_image


@contextmanager
def _small_disk(tmp_path, name: str):
    """A mounted 256 kB tmpfs under ``tmp_path`` (the test skips where none can be mounted)."""
    mnt = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs to fill up here ({p.stderr.strip() or 'not root'})"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def full_disk(tmp_path):
    """A mounted tmpfs with no free byte left (a filler file takes it all)."""
    with _small_disk(tmp_path, "full") as mnt:
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        yield mnt


@pytest.fixture
def inputs(tmp_path):
    """Noisy RGB sections (incompressible, so no output fits in a few bytes), a volume, a
    transforms file and points."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "sections"
    folder.mkdir()
    for z in (1, 2, 4):
        img = tissue((96, 96), seed=z, rgb=True)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        write_image(folder / f"s_{z}.png", img)
    yy, xx = np.mgrid[:16, :32]
    blob = np.stack(
        [
            (150 * np.exp(-((yy - 8) ** 2 + (xx - 9 - z) ** 2) / 12)).astype(np.uint8)
            for z in range(4)
        ]
    )
    np.save(tmp_path / "blob.npy", blob)
    assert (
        main(
            [
                "align",
                str(folder),
                str(tmp_path / "aligned.npy"),
                "--transforms",
                str(tmp_path / "T.json"),
                "--quiet",
            ]
        )
        == 0
    )
    (tmp_path / "p.csv").write_text("x,y\n" + "\n".join(f"{i},{i}" for i in range(2000)) + "\n")
    assert (
        main(
            [
                "compress",
                str(tmp_path / "blob.npy"),
                str(tmp_path / "blob.hgm"),
                "--gaussians",
                "5",
                "--iterations",
                "10",
                "--quiet",
            ]
        )
        == 0
    )
    return tmp_path


COMMANDS = {
    "convert-ome-zarr": ["convert", "{i}/sections", "{f}/v.ome.zarr"],
    "convert-ome-tiff": ["convert", "{i}/sections", "{f}/v.ome.tif"],
    "convert-npy": ["convert", "{i}/sections", "{f}/v.npy"],
    "convert-folder": ["convert", "{i}/sections", "{f}/slices"],
    "align-volume": ["align", "{i}/sections", "{f}/a.ome.zarr"],
    "align-transforms": ["align", "{i}/sections", "{i}/a2.npy", "--transforms", "{f}/T.json"],
    "warp-points": [
        "warp-points",
        "{i}/T.json",
        "s_2.png",
        "{i}/p.csv",
        "{f}/w.csv",
        "--overwrite",
    ],
    "interpolate-folder": ["interpolate", "{i}/sections", "{f}/filled"],
    "interpolate-zarr": ["interpolate", "{i}/sections", "{f}/filled.ome.zarr"],
    "build": ["build", "{i}/sections", "{f}/b.ome.zarr"],
    "info-json": ["info", "{i}/sections", "--json", "{f}/info.json"],
    "focus-json": ["focus", "{i}/sections", "--json", "{f}/focus.json"],
    "compress": ["compress", "{i}/blob.npy", "{f}/c.hgm", "--gaussians", "5", "--iterations", "10"],
    "decompress": ["decompress", "{i}/blob.hgm", "{f}/d.npy"],
    "focus-train": ["focus-train", "{i}/sections", "{f}/m.pt", "--steps", "5"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_full_disk_one_line_nothing_left(full_disk, inputs, capsys, name):
    args = [a.format(i=inputs, f=full_disk) for a in COMMANDS[name]]
    if name not in ("warp-points", "info-json"):  # the commands with a progress bar
        args.append("--quiet")
    before = set(os.listdir(inputs))
    saved = warnings.showwarning
    try:
        code = main(args)
    finally:
        warnings.showwarning = saved
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("histovol: error:")]
    # decompress knows its output size and says so before it starts; the others meet ENOSPC
    said = "free on the disk" if name == "decompress" else "disk is full"
    assert code == 2 and len(lines) == 1 and said in lines[0], err
    assert "Traceback" not in err
    assert sorted(os.listdir(full_disk)) == ["filler"], os.listdir(full_disk)
    assert set(os.listdir(inputs)) == before  # a volume whose side file failed is removed too


def test_a_build_on_a_nearly_full_disk_says_the_disk_is_full(tmp_path, capsys):
    """A helper's build on a 1 MB disk said only "90000 requested and 81888 written": numpy
    reports a write the disk cut short without an errno."""
    with _small_disk(tmp_path, "small") as mnt:
        folder = tmp_path / "sections"
        folder.mkdir()
        rng = np.random.default_rng(1)
        for z in (1, 2, 3):  # 600 x 600 gray: 360 kB per section, more than the disk
            img = rng.integers(0, 255, (600, 600), dtype=np.uint8)
            write_image(folder / f"s_{z}.png", img)
        saved = warnings.showwarning
        try:
            code = main(["build", str(folder), str(mnt / "b.ome.zarr"), "--quiet"])
        finally:
            warnings.showwarning = saved
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("histovol: error:")]
        assert code == 2 and len(lines) == 1, err
        assert f"the disk is full while writing '{mnt / 'b.ome.zarr'}'" in lines[0], err
        assert os.listdir(mnt) == [], os.listdir(mnt)

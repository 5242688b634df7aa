"""The main job end to end: known misalignment and removed sections, kill and resume, a cluster."""

import json
import signal
import subprocess
import sys
import time
import warnings

import cv2
import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi

from napari_histovol.core.io import read_volume
from napari_histovol.core.pipeline import build_volume


def true_volume(n=12, size=160, seed=0):
    """A smooth 3D 'tissue' whose sections change gradually (16 bit, dark background)."""
    rng = np.random.default_rng(seed)
    v = ndi.gaussian_filter(rng.random((n, size, size)), (1.5, 5, 5))
    v = (v - v.min()) / np.ptp(v)
    yy, xx = np.mgrid[:size, :size]
    # an irregular outline, as tissue has (a disc would make every rotation look alike)
    disc = (
        ((yy - 0.45 * size) / (0.38 * size)) ** 2 + ((xx - 0.52 * size) / (0.3 * size)) ** 2 < 1
    ) | (((yy - 0.7 * size) / (0.12 * size)) ** 2 + ((xx - 0.3 * size) / (0.2 * size)) ** 2 < 1)
    return (v * disc * 60000).astype(np.uint16)


def write_sections(folder, vol, keep, jitter_deg=4.0, jitter_px=5.0, seed=1, ext=".tif"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mid = keep[len(keep) // 2]
    for z in keep:
        img = vol[z]
        if z != mid:  # the middle section defines the frame
            h, w = img.shape
            m = cv2.getRotationMatrix2D(
                ((w - 1) / 2, (h - 1) / 2), rng.uniform(-jitter_deg, jitter_deg), 1.0
            )
            m[:, 2] += rng.uniform(-jitter_px, jitter_px, 2)
            img = cv2.warpAffine(img, m, (w, h))
        tifffile.imwrite(
            folder / f"sec_{z:03d}{ext}",
            img,
            resolution=(1e4 / 0.5, 1e4 / 0.5),
            resolutionunit="CENTIMETER",
        )


def corr(a, b):
    a, b = a.astype(float).ravel(), b.astype(float).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_build_recovers_a_volume_with_known_misalignment_and_removed_sections(tmp_path):
    truth = true_volume()
    keep = [z for z in range(12) if z not in (4, 8, 9)]
    write_sections(tmp_path / "in", truth, keep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build_volume(
            tmp_path / "in", tmp_path / "v.ome.zarr", align="rigid", section_spacing=3.0
        )
    vol = read_volume(res.out)
    assert vol.shape == truth.shape
    assert vol.meta.synthetic_z == (4, 8, 9) and vol.meta.gaps == ()
    assert vol.meta.scale == pytest.approx((3.0, 0.5, 0.5))
    got = vol.data.compute()
    inner = (slice(None), slice(30, 130), slice(30, 130))
    unaligned = read_volume(tmp_path / "in").data.compute()
    for z in keep:
        i = keep.index(z)
        assert corr(got[z][inner[1:]], truth[z][inner[1:]]) > 0.95
        if z != keep[len(keep) // 2]:
            assert corr(got[z][inner[1:]], truth[z][inner[1:]]) > corr(
                unaligned[i][inner[1:]], truth[z][inner[1:]]
            )
    for z in (4, 8, 9):  # regenerated sections resemble the removed ones
        assert corr(got[z][inner[1:]], truth[z][inner[1:]]) > 0.9
    assert res.transforms.is_file() and res.qc.is_file()
    t = json.loads(res.transforms.read_text())
    assert [s["z"] for s in t["slices"]] == keep


def test_build_sample_with_frames_between(tmp_path):
    from napari_histovol._sample_data import sample_folder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build_volume(
            sample_folder(),
            tmp_path / "lung.ome.zarr",
            frames_between=1,
            size=300,
            pixel_size=1.0,
            section_spacing=4.0,
        )
    vol = read_volume(res.out)
    # z 1,3,4,5,7 on a grid of half steps: 13 planes, 8 generated
    assert vol.shape[0] == 13 and len(vol.meta.synthetic_z) == 8
    assert vol.meta.scale[0] == pytest.approx(2.0) and vol.meta.rgb
    assert len(vol.levels) >= 2


def _zarr_arrays(path):
    g = zarr.open_group(str(path), mode="r")
    return {k: np.asarray(g[k][...]) for k in sorted(g.array_keys())}, dict(g.attrs)


def test_killed_build_resumes_to_identical_output_without_redoing_work(tmp_path):
    truth = true_volume(n=40, size=384, seed=3)
    keep = [z for z in range(40) if z % 7 != 3]
    write_sections(tmp_path / "in", truth, keep, ext=".png" if False else ".tif")
    cmd = [sys.executable, "-m", "napari_histovol.cli", "build", str(tmp_path / "in")]
    opts = ["--frames-between", "1", "--quiet", "--workers", "1"]
    ref = tmp_path / "ref.ome.zarr"
    assert subprocess.run(cmd + [str(ref)] + opts, capture_output=True).returncode == 0
    out = tmp_path / "v.ome.zarr"
    partial = tmp_path / ".v.ome.zarr.partial"
    log = partial / ".histovol-blocks.txt"
    proc = subprocess.Popen(
        cmd + [str(out)] + opts, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().split()) >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial.is_dir()
    logged = log.read_text().split()
    assert 5 <= len(logged) < 79  # killed mid-way (79 planes in all)
    cache = list((tmp_path / ".v.ome.zarr.work").glob("align-*.json"))
    cache_mtimes = {p: p.stat().st_mtime_ns for p in cache}
    z_done = {z for b in logged for z in range(*map(int, b.split(":")[0].split("-")))}
    chunk_mtimes = {
        p: p.stat().st_mtime_ns
        for z in z_done
        for p in (partial / "0" / "c" / str(z)).rglob("*")
        if p.is_file()
    }
    assert chunk_mtimes
    p = subprocess.run(cmd + [str(out), "--resume"] + opts, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert all(
        pth.stat().st_mtime_ns == t for pth, t in cache_mtimes.items()
    )  # registration reused
    moved = {pth.relative_to(partial) for pth in chunk_mtimes}
    assert all(
        (out / rel).stat().st_mtime_ns == chunk_mtimes[partial / rel] for rel in moved
    )  # not rewritten
    a, attrs_a = _zarr_arrays(out)
    b, attrs_b = _zarr_arrays(ref)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert attrs_a == attrs_b
    assert not (out / ".histovol-blocks.txt").exists()


def test_local_cluster_gives_the_same_volume(tmp_path):
    distributed = pytest.importorskip("distributed")
    truth = true_volume(n=8, size=128, seed=5)
    write_sections(tmp_path / "in", truth, [0, 1, 2, 4, 5, 7])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = build_volume(tmp_path / "in", tmp_path / "local.ome.zarr", frames_between=1)
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            remote = build_volume(
                tmp_path / "in", tmp_path / "remote.ome.zarr", frames_between=1, scheduler=client
            )
    a, attrs_a = _zarr_arrays(local.out)
    b, attrs_b = _zarr_arrays(remote.out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert attrs_a["histovol"]["synthetic"] == attrs_b["histovol"]["synthetic"]


def test_a_second_build_of_the_same_output_is_refused_while_the_first_aligns(
    tmp_path, monkeypatch, capsys
):
    """Two `histovol build ... lk.ome.zarr` runs 5 s apart: the lock was taken only when
    writing began, so the second deleted the first's registration cache while it aligned
    and the first failed on a missing file (a helper's journey). The build now holds the
    output's lock from its start; an interrupted build says whether anything was kept."""
    from napari_histovol.core import pipeline
    from napari_histovol.core.io.atomic import lock_name

    from .conftest import histovol

    truth = true_volume()
    write_sections(tmp_path / "in", truth, list(range(5)))
    out = tmp_path / "v.ome.zarr"
    real_align = pipeline.iter_align
    seen = []
    # the second run, started while the first aligns: another thread of this process stands
    # in for another terminal (the thread that holds a lock may take it again, no other)
    import threading

    def second(*args, **kwargs):
        box = []
        t = threading.Thread(target=lambda: box.append(histovol("build", tmp_path / "in", out)))
        t.start()
        t.join()
        seen.append(box[0])
        return (yield from real_align(*args, **kwargs))

    monkeypatch.setattr(pipeline, "iter_align", second)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert histovol("build", tmp_path / "in", out, "--quiet") == 0
    err = capsys.readouterr().err
    assert seen == [2] and "Another histovol run (this process) is writing" in err
    assert read_volume(out).shape[0] == 5 and not lock_name(out).exists()

    # interrupted while aligning: nothing is kept, and it says so
    def interrupted(*args, **kwargs):
        yield from ()
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "iter_align", interrupted)
    assert histovol("build", tmp_path / "in", tmp_path / "w.ome.zarr", "--quiet") == 130
    err = capsys.readouterr().err
    assert "'w.ome.zarr' was not written and nothing was kept" in err
    assert not list(tmp_path.glob(".w.ome.zarr*"))

    # interrupted while writing: the blocks written so far are kept, and it says where
    monkeypatch.setattr(pipeline, "iter_align", real_align)

    def write_then_interrupted(volume, out, **kwargs):
        from napari_histovol.core.io.atomic import temp_name

        temp_name(out).mkdir()
        (temp_name(out) / "0").write_text("a block")
        yield from ()
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "iter_write_ome_zarr", write_then_interrupted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert histovol("build", tmp_path / "in", tmp_path / "w.ome.zarr", "--quiet") == 130
    err = capsys.readouterr().err
    assert "What was done is kept beside it ('.w.ome.zarr.partial')" in err

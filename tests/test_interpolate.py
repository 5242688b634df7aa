"""Interpolation against sections we removed ourselves, the SavedModel path, tiling, resume."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import cv2
import dask.array as da
import numpy as np
import pytest
import tifffile
from skimage.metrics import peak_signal_noise_ratio as psnr
from skimage.metrics import structural_similarity as ssim

from napari_histovol.core.errors import InputError
from napari_histovol.core.interpolate import interpolate, interpolate_pair, make_plan
from napari_histovol.core.io import read_volume
from napari_histovol.core.io.meta import VolumeMeta
from napari_histovol.core.io.volume import Volume

from .conftest import tissue, write_image


def vol_of(stack, zs=None):
    zs = list(zs if zs is not None else range(len(stack)))
    meta = VolumeMeta(rgb=stack.ndim == 4, z_numbers=tuple(zs)).with_planes(len(stack))
    return Volume(da.from_array(stack, chunks=(1,) + stack.shape[1:]), meta)


def drop_every_other_score(stack):
    """Keep even planes, regenerate the odd ones with each method; mean PSNR and SSIM."""
    kept = stack[0::2]
    zs = list(range(0, len(stack), 2))
    rng = float(stack.max()) - float(stack.min())
    out = {}
    for method in ("linear", "flow"):
        res = interpolate(vol_of(kept, zs), method=method)
        got = res.volume.data.compute()
        assert res.volume.meta.z_numbers == tuple(range(zs[-1] + 1))
        p, s = [], []
        for z in range(1, zs[-1], 2):
            gt, pred = stack[z].astype(float), got[z].astype(float)
            p.append(psnr(gt, pred, data_range=rng))
            s.append(ssim(gt, pred, data_range=rng))
        out[method] = (np.mean(p), np.mean(s))
    return out


def test_flow_beats_linear_on_isbi_em(shared_data):
    stack = read_volume(shared_data / "isbi2012_sstem_train" / "train_image").data.compute()[:13]
    small = np.stack([cv2.resize(p, (128, 128), interpolation=cv2.INTER_AREA) for p in stack])
    r = drop_every_other_score(small)
    assert r["flow"][0] > r["linear"][0] and r["flow"][1] > r["linear"][1], r


def test_flow_beats_linear_on_cells3d(shared_data):
    stack = tifffile.imread(shared_data / "cells3d_nuclei_3d" / "nuclei.tif")[10:50]
    r = drop_every_other_score(stack)
    assert r["flow"][0] > r["linear"][0] and r["flow"][1] > r["linear"][1], r


def test_flow_follows_known_motion():
    """A section moved by a known shift: the middle frame is the section moved half way."""
    base = tissue((96, 96), 3, background="black", dtype=np.uint16)
    shift = lambda img, d: np.roll(img, d, axis=1)  # noqa: E731
    a, mid, b = shift(base, -4), base, shift(base, 4)
    got = interpolate_pair(a, b, [0.5], method="flow")[0].astype(float)
    lin = interpolate_pair(a, b, [0.5], method="linear")[0].astype(float)
    inner = (slice(10, -10), slice(10, -10))
    err_flow = np.abs(got - mid)[inner].mean()
    err_lin = np.abs(lin - mid)[inner].mean()
    assert err_flow < 0.5 * err_lin


def test_fill_gaps_fills_exactly_the_missing_numbers(make_sections, tmp_path):
    folder, truth = make_sections(zs=(3, 4, 7, 8, 10), ext=".png")
    res = interpolate(read_volume(folder))
    m = res.volume.meta
    assert m.z_numbers == tuple(range(3, 11))
    assert m.synthetic_z == (5, 6, 9)
    plan = res.plan
    assert [(f.z, round(f.t, 4)) for f in plan.frames if f.synthetic] == [
        (5, 0.3333),
        (6, 0.6667),
        (9, 0.5),
    ]
    np.testing.assert_array_equal(res.volume.data[0].compute(), truth["sec_003.png"])


def test_frames_between_renumbers_and_scales_z():
    stack = np.stack([tissue((32, 32), i) for i in range(3)])
    vol = vol_of(stack, [1, 2, 3])
    vol = Volume(vol.data, vol.meta.with_scale(pixel_size=0.5, section_spacing=4.0))
    res = interpolate(vol, frames_between=3, method="linear")
    m = res.volume.meta
    assert m.z_numbers == tuple(range(1, 10)) and res.volume.shape[0] == 9
    assert m.synthetic == (False, True, True, True, False, True, True, True, False)
    assert m.scale[0] == pytest.approx(1.0)
    got = res.volume.data.compute().astype(float)
    np.testing.assert_allclose(got[2], 0.5 * stack[0] + 0.5 * stack[1], atol=0.51)


def test_replace_regenerates_a_damaged_section():
    stack = np.stack([tissue((40, 40), 1, dtype=np.uint16)] * 5)
    stack[2] = 0  # a torn section
    res = interpolate(vol_of(stack), replace_z=[2])
    got = res.volume.data.compute()
    assert res.volume.meta.synthetic_z == (2,)
    assert np.abs(got[2].astype(int) - stack[1].astype(int)).max() <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("rgb", [False, True])
def test_dtype_and_channels_are_kept(dtype, rgb):
    stack = np.stack([tissue((40, 48), i, rgb=rgb, dtype=dtype) for i in range(3)])
    res = interpolate(vol_of(stack, [0, 2, 4]))
    out = res.volume.data.compute()
    assert out.dtype == dtype and out.shape == (5,) + stack.shape[1:]


def test_bad_requests():
    stack = np.stack([tissue((16, 16), i) for i in range(3)])
    with pytest.raises(InputError, match="at least two"):
        interpolate(vol_of(stack[:1]))
    with pytest.raises(InputError, match="no such section"):
        interpolate(vol_of(stack), replace_z=[9])
    with pytest.raises(InputError, match="first and the last"):
        interpolate(vol_of(stack), replace_z=[0])
    with pytest.raises(InputError, match="needs a model folder"):
        interpolate(vol_of(stack), method="model")
    with pytest.raises(InputError, match="not a TensorFlow SavedModel"):
        interpolate(vol_of(stack), method="model", model_dir="/nonexistent")
    assert make_plan([0, 1, 2]).n_synthetic == 0


# --------------------------------------------------------------------- SavedModel path

BUILD_MODEL = textwrap.dedent(
    """
    import sys, tensorflow as tf
    class Film(tf.Module):
        '''FILM/InterpolAI signature; blends and blurs 3x3 so that tiling would show seams.'''
        @tf.function(input_signature=[{
            "time": tf.TensorSpec([None, 1], tf.float32),
            "x0": tf.TensorSpec([None, None, None, 3], tf.float32),
            "x1": tf.TensorSpec([None, None, None, 3], tf.float32)}])
        def __call__(self, inputs):
            t = inputs["time"][:, :, None, None]
            x = (1.0 - t) * inputs["x0"] + t * inputs["x1"]
            k = tf.ones([3, 3, 3, 1]) / 9.0
            return {"image": tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME")}
    tf.saved_model.save(Film(), sys.argv[1])
    """
)


@pytest.fixture(scope="module")
def film_model(tmp_path_factory):
    import importlib.util

    if (
        importlib.util.find_spec("tensorflow") is None
    ):  # never import it here: napari runs in this process
        pytest.skip("tensorflow-cpu is not installed")
    d = tmp_path_factory.mktemp("film") / "model"
    # built in a child process: TensorFlow must never run next to napari's OpenGL canvas
    p = subprocess.run(
        [sys.executable, "-c", BUILD_MODEL, str(d)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return d


def test_savedmodel_runs_in_a_child_process_and_tiles_without_seams(film_model):
    from napari_histovol.core.interpolate.model import ModelRunner, run_tiled

    a = tissue((300, 260), 1, rgb=True)
    b = tissue((300, 260), 2, rgb=True)
    with ModelRunner(film_model) as runner:
        whole = run_tiled(runner, a, b, 0.25, tile=1024)
        tiled = run_tiled(runner, a, b, 0.25, tile=96, overlap=24)
    expect = cv2.blur(
        (0.75 * a.astype(np.float32) + 0.25 * b.astype(np.float32)),
        (3, 3),
        borderType=cv2.BORDER_REFLECT_101,
    )
    inner = (slice(1, -1), slice(1, -1))
    assert np.abs(whole - expect)[inner].max() < 0.5
    assert np.abs(tiled - whole).max() < 0.6  # 8-bit scale: no seam at tile borders


def test_model_method_end_to_end_gray_16_bit(film_model):
    stack = np.stack([tissue((70, 90), i, dtype=np.uint16) for i in range(3)])
    res = interpolate(vol_of(stack, [0, 2, 4]), method="model", model_dir=film_model, tile=64)
    try:
        out = res.volume.data.compute()
    finally:
        res.close()
    assert out.dtype == np.uint16 and out.shape == (5, 70, 90)
    expect = cv2.blur(
        0.5 * stack[0].astype(np.float32) + 0.5 * stack[1].astype(np.float32),
        (3, 3),
        borderType=cv2.BORDER_REFLECT_101,
    )
    assert np.abs(out[1].astype(float) - expect)[2:-2, 2:-2].max() < 40  # 16-bit levels


# --------------------------------------------------------------------- resume


def test_killed_run_resumes_to_the_same_output(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for z in range(0, 12, 2):
        write_image(src / f"s_{z:03d}.png", tissue((384, 384), z, dtype=np.uint16))
    cmd = [sys.executable, "-m", "napari_histovol.cli", "interpolate", str(src)]
    ref = tmp_path / "ref"
    assert (
        subprocess.run(
            cmd + [str(ref), "--frames-between", "4", "--quiet"], capture_output=True
        ).returncode
        == 0
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        cmd + [str(out), "--frames-between", "4", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = tmp_path / ".out.partial"  # the folder is written under a hidden name
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [p for p in partial.glob("*.png")] if partial.exists() else []
        if len(done) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # a killed run never leaves a half folder under the final name
    written = sorted(p.name for p in partial.glob("*.png"))
    assert 5 <= len(written) < 51, written  # killed mid-way
    mtimes = {p.name: p.stat().st_mtime_ns for p in partial.glob("*.png")}
    p = subprocess.run(
        cmd + [str(out), "--frames-between", "4", "--quiet"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    names = sorted(p.name for p in ref.glob("*.png"))
    assert names == sorted(p.name for p in out.glob("*.png")) and len(names) == 51
    for n in names:
        np.testing.assert_array_equal(read_png(out / n), read_png(ref / n))
    assert all((out / n).stat().st_mtime_ns == t for n, t in mtimes.items())  # not redone
    assert (out / "synthetic.txt").read_text() == (ref / "synthetic.txt").read_text()
    assert not list(out.glob(".partial-*")) and not partial.exists()


def read_png(path):
    import imagecodecs

    return imagecodecs.png_decode(path.read_bytes())


def test_cli_interpolate_fill_gaps_folder(make_sections, tmp_path):
    from napari_histovol.cli import main

    folder, _ = make_sections(zs=(1, 2, 5), ext=".tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(["interpolate", str(folder), str(tmp_path / "o"), "--fill-gaps", "--quiet"]) == 0
        )
    names = sorted(p.name for p in (tmp_path / "o").glob("*.tif"))
    assert names == ["sec_001.tif", "sec_002.tif", "sec_003.tif", "sec_004.tif", "sec_005.tif"]
    assert (tmp_path / "o" / "synthetic.txt").read_text().split() == ["sec_003.tif", "sec_004.tif"]
    back = read_volume(tmp_path / "o")
    assert back.meta.synthetic_z == (3, 4) and back.meta.gaps == ()


def test_live_model_method_shares_one_runner_and_matches_the_pair_run(film_model):
    from napari_histovol.core.interpolate import PairCache, live_interpolate
    from napari_histovol.core.interpolate.model import ModelRunner

    stack = np.stack([tissue((70, 90), i, rgb=True) for i in range(3)])
    cache = PairCache()
    with ModelRunner(film_model) as runner:
        for n in (1, 3):  # a new frame count reuses the runner and the cached sections
            res = live_interpolate(
                vol_of(stack), frames_between=n, method="model", runner=runner, cache=cache, tile=64
            )
            assert res.runner is None  # the caller's runner: not closed with the result
            got = np.asarray(res.volume.data[1])
            want = interpolate_pair(
                stack[0], stack[1], [1 / (n + 1)], method="model", runner=runner, tile=64
            )[0]
            np.testing.assert_array_equal(got, want)
    assert cache.computed == 1 and cache.planes == 2

"""Every subcommand the README shows, run as a user runs it, into every output format it
accepts; every format histovol writes fed back into info, convert and build.

Ground truth: sections written by the test (known pixels, z numbers 1, 2, 3, 5, a gap at 4),
a known pixel size and spacing, and a rigid misalignment applied to one section.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_histovol.core.io import read_volume

from .conftest import histovol, tissue, write_image

FORMATS = {"ome-zarr": "v.ome.zarr", "ome-tiff": "v.ome.tif", "npy": "v.npy", "folder": "v_slices"}
ZS = (1, 2, 3, 5)


@pytest.fixture
def sections(tmp_path):
    """Four RGB brightfield sections, z 1, 2, 3, 5, 0.5 µm pixels given on the command line;
    section 3 is shifted by (6, -4) px against the others."""
    folder = tmp_path / "sections"
    folder.mkdir()
    base = tissue((96, 112), seed=3, rgb=True)
    truth = {}
    for z in ZS:
        img = base.copy()
        if z == 3:
            img = np.full_like(base, 255)
            img[4:, :-6] = base[:-4, 6:]
        name = f"sec_{z:03d}.png"
        write_image(folder / name, img)
        truth[z] = img
    return folder, truth


def _check_volume(path, planes, *, synthetic=0, scale=None):
    vol = read_volume(path)
    assert vol.shape[0] == planes, (path, vol.shape)
    assert len(vol.meta.synthetic_z) == synthetic
    if scale is not None:
        assert vol.meta.scale == pytest.approx(scale), (path, vol.meta.scale)
        assert vol.meta.unit == "micrometer"
    return vol


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_into_every_format_and_back_through_info_convert_build(
    sections, tmp_path, fmt, capsys
):
    folder, truth = sections
    out = tmp_path / FORMATS[fmt]
    args = ["convert", folder, out, "--pixel-size", 0.5, "--section-spacing", 4, "--quiet"]
    assert histovol(*args) == 0
    vol = _check_volume(out, 4, scale=(4, 0.5, 0.5))
    np.testing.assert_array_equal(vol.data[1].compute(), truth[2])
    assert vol.meta.z_numbers == ZS and vol.meta.gaps == (4,)
    # the written format feeds info, convert and build
    assert histovol("info", out) == 0
    assert "gaps       4" in capsys.readouterr().out
    assert histovol("info", out, "--json", tmp_path / "info.json") == 0
    assert json.loads((tmp_path / "info.json").read_text())["z_numbers"] == list(ZS)
    assert histovol("convert", out, tmp_path / "again.ome.zarr", "--quiet") == 0
    np.testing.assert_array_equal(
        read_volume(tmp_path / "again.ome.zarr").data.compute(), vol.data.compute()
    )
    built = tmp_path / "built.ome.zarr"
    assert histovol("build", out, built, "--align", "translation", "--quiet") == 0
    b = _check_volume(built, 5, synthetic=1, scale=(4, 0.5, 0.5))
    assert b.meta.z_numbers == (1, 2, 3, 4, 5)
    assert (tmp_path / "built.transforms.json").is_file() and (tmp_path / "built.qc.json").is_file()


@pytest.mark.parametrize("fmt", [*FORMATS, "tif"])
@pytest.mark.parametrize("given", ["pixel", "spacing"])
def test_only_the_scale_given_is_known_in_every_format(sections, tmp_path, fmt, given):
    """OME-TIFF wrote the placeholder 1.0 µm of an unknown section spacing (or pixel size) as
    a physical size and read it back as measured: the isotropic reconstruction then took 125
    rows for one section step (a helper's chain)."""
    folder, _ = sections
    out = tmp_path / FORMATS.get(fmt, "v.tif")
    opt = ["--pixel-size", 0.5] if given == "pixel" else ["--section-spacing", 4]
    assert histovol("convert", folder, out, *opt, "--quiet") == 0
    for path in (out, tmp_path / "again.ome.zarr"):
        meta = read_volume(path).meta
        assert (meta.scale_known, meta.spacing_known) == (given == "pixel", given == "spacing")
        assert meta.unit == "micrometer"
        assert meta.scale[1 if given == "pixel" else 0] == pytest.approx(
            0.5 if given == "pixel" else 4
        )
        if path == out:  # and again through another format
            assert histovol("convert", out, tmp_path / "again.ome.zarr", "--quiet") == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_align_into_every_format_with_transforms_qc_and_warp_points(sections, tmp_path, fmt):
    folder, truth = sections
    out, t, qc = tmp_path / FORMATS[fmt], tmp_path / "T.json", tmp_path / "QC.json"
    code = histovol(
        "align",
        folder,
        out,
        "--method",
        "translation",
        "--reference",
        "first",
        "--transforms",
        t,
        "--qc",
        qc,
        "--quiet",
    )
    assert code == 0
    vol = _check_volume(out, 4)
    # the shifted section 3 is put back: it matches section 2 where both have tissue
    a, b = (vol.data[i].compute().astype(float) for i in (1, 2))
    assert np.abs(a[10:-10, 10:-10] - b[10:-10, 10:-10]).mean() < 3
    doc = json.loads(t.read_text())
    m = np.array(doc["slices"][2]["matrix"])  # aligned pixel -> source pixel of sec_003
    assert m[:2, 2] == pytest.approx([-6, 4], abs=0.5)
    assert json.loads(qc.read_text())["sections"][2]["z"] == 3
    # a landmark of sec_003 lands where the same tissue is in the aligned frame
    pts = tmp_path / "p.csv"
    pts.write_text("name,x,y\nA,40,30\n")
    assert histovol("warp-points", t, "sec_003.png", pts, tmp_path / "w.csv") == 0
    row = (tmp_path / "w.csv").read_text().splitlines()[1].split(",")
    assert row[0] == "A" and float(row[1]) == pytest.approx(46, abs=0.5)
    assert float(row[2]) == pytest.approx(26, abs=0.5)
    # --apply re-applies the transforms
    assert histovol("align", folder, tmp_path / "applied.npy", "--apply", t, "--quiet") == 0
    np.testing.assert_array_equal(
        read_volume(tmp_path / "applied.npy").data.compute(), vol.data.compute()
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_interpolate_into_every_format(sections, tmp_path, fmt):
    folder, truth = sections
    out = tmp_path / FORMATS[fmt]
    assert histovol("interpolate", folder, out, "--fill-gaps", "--method", "linear", "--quiet") == 0
    vol = _check_volume(out, 5, synthetic=1)
    assert vol.meta.z_numbers == (1, 2, 3, 4, 5) and vol.meta.synthetic_z == (4,)
    expect = (truth[3].astype(float) + truth[5]) / 2  # the gap is the cross-fade of 3 and 5
    assert np.abs(vol.data[3].compute().astype(float) - expect).max() <= 1
    out2 = tmp_path / ("n" + FORMATS[fmt])
    assert (
        histovol("interpolate", folder, out2, "--frames-between", 1, "--replace", "2", "--quiet")
        == 0
    )
    vol2 = _check_volume(out2, 9, synthetic=6)
    assert vol2.meta.z_numbers == tuple(range(1, 10))


def test_interpolated_folder_keeps_names_and_is_only_whole(sections, tmp_path):
    folder, _ = sections
    out = tmp_path / "filled"
    assert histovol("interpolate", folder, out, "--quiet") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "histovol.json",
        "sec_001.png",
        "sec_002.png",
        "sec_003.png",
        "sec_004.png",
        "sec_005.png",
        "synthetic.txt",
    ]
    assert (out / "synthetic.txt").read_text().split() == ["sec_004.png"]
    assert not list(tmp_path.glob(".*partial*"))
    assert histovol("interpolate", folder, out, "--quiet") == 2  # exists: needs --overwrite
    assert histovol("interpolate", folder, out, "--quiet", "--overwrite") == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_compress_then_decompress_into_every_format(tmp_path, fmt):
    yy, xx = np.mgrid[:24, :24]
    vol = np.stack(
        [
            (200 * np.exp(-((yy - 12) ** 2 + (xx - 10 - z) ** 2) / 18)).astype(np.uint8)
            for z in range(6)
        ]
    )
    np.save(tmp_path / "blob.npy", vol)
    hgm = tmp_path / "blob.hgm"
    code = histovol(
        "compress", tmp_path / "blob.npy", hgm, "--gaussians", 8, "--iterations", 40, "--quiet"
    )
    assert code == 0
    assert (tmp_path / "blob.fit.yaml").is_file() and (tmp_path / "blob.fit.json").is_file()
    out = tmp_path / FORMATS[fmt]
    assert histovol("decompress", hgm, out, "--quiet") == 0
    back = read_volume(out).data.compute()
    assert back.shape == vol.shape
    assert np.abs(back.astype(float) - vol).mean() < 10  # a blob is a few Gaussians
    assert (
        histovol(
            "decompress",
            hgm,
            tmp_path / ("z" + FORMATS[fmt]),
            "--zoom",
            2,
            "--roi",
            "0:3,0:12,0:12",
            "--quiet",
        )
        == 0
    )
    assert read_volume(tmp_path / ("z" + FORMATS[fmt])).shape == (6, 24, 24)


@pytest.mark.parametrize("fmt", ["folder", "ome-zarr", "ome-tiff", "npy"])
def test_focus_on_every_format_finds_the_sharp_plane(tmp_path, fmt):
    import cv2

    sharp = tissue((96, 96), seed=5)
    rng = np.random.default_rng(0)
    sharp = np.clip(sharp.astype(float) + rng.normal(0, 25, sharp.shape), 0, 255).astype(np.uint8)
    folder = tmp_path / "stack"
    folder.mkdir()
    for z, sigma in enumerate([3.0, 1.5, 0.0, 1.5, 3.0], start=10):
        img = cv2.GaussianBlur(sharp, (0, 0), sigma) if sigma else sharp
        write_image(folder / f"f_{z}.png", img)
    src = folder
    if fmt != "folder":
        src = tmp_path / FORMATS[fmt]
        assert histovol("convert", folder, src, "--quiet") == 0
    report = tmp_path / "focus.json"
    assert histovol("focus", src, "--json", report, "--tile", 32, "--quiet") == 0
    rep = json.loads(report.read_text())
    assert rep["best_plane"] == 12
    assert histovol("focus", src, "--json", report, "--quiet") == 2  # exists
    assert (
        histovol("focus", src, "--json", report, "--quiet", "--overwrite", "--metric", "model") == 0
    )


def test_focus_train_writes_the_model_and_its_json(tmp_path):
    folder = tmp_path / "sharp"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"s_{i}.png", tissue((128, 128), seed=i))
    out = tmp_path / "m.pt"
    assert histovol("focus-train", folder, out, "--steps", 30, "--quiet") == 0
    assert out.is_file() and (tmp_path / "m.json").is_file()
    assert histovol("focus-train", folder, out, "--steps", 30, "--quiet") == 2


@pytest.mark.parametrize("command", ["info", "focus", "qc"])
def test_a_report_never_replaces_the_metadata_its_input_is_read_with(
    sections, tmp_path, command, capsys
):
    """`info sections/ --json sections/histovol.json --overwrite` erased the folder's scale and
    generated planes; the same with a .npy's .npy.json, and a report inside an OME-Zarr store
    (a helper's chain). A report beside the sections is still written."""
    folder, _ = sections
    vol = tmp_path / "v_slices"
    npy = tmp_path / "v.npy"
    zarr_out = tmp_path / "v.ome.zarr"
    for out in (vol, npy, zarr_out):
        assert histovol("convert", folder, out, "--pixel-size", 0.5, "--section-spacing", 4) == 0
    for src, report in (
        (vol, vol / "histovol.json"),
        (vol, vol / "synthetic.txt"),
        (npy, tmp_path / "v.npy.json"),
        (zarr_out, zarr_out / "r.json"),
    ):
        before = report.read_bytes() if report.is_file() else None
        capsys.readouterr()
        assert histovol(command, src, "--json", report, "--overwrite") == 2
        assert "input" in capsys.readouterr().err
        assert (report.read_bytes() if report.is_file() else None) == before
        assert read_volume(src).meta.scale == pytest.approx((4, 0.5, 0.5))
    assert histovol(command, vol, "--json", vol / "report.json") == 0

"""Folder -> OME-Zarr / pyramidal OME-TIFF / .npy / folder -> read back: pixels and metadata."""

from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_histovol.core.errors import InputError, OutputError
from napari_histovol.core.io import read_volume, write_volume
from napari_histovol.core.io.ome_zarr import iter_write_ome_zarr
from napari_histovol.core.io.pyramid import halve, level_shapes
from napari_histovol.core.io.volume import Volume


@pytest.fixture
def flagged_volume(make_sections):
    """RGB sections z = 1, 2, 3, 5 (gap at 4), plane z=2 flagged synthetic, scale known."""
    folder, _ = make_sections(zs=(1, 2, 3, 5), shape=(70, 90), rgb=True)
    vol = read_volume(folder, pixel_size=0.5, section_spacing=4.0)
    meta = replace(vol.meta, synthetic=(False, True, False, False))
    return Volume(vol.data, meta)


def _assert_same(back: Volume, ref: Volume):
    np.testing.assert_array_equal(back.data.compute(), ref.data.compute())
    assert back.meta.scale == pytest.approx(ref.meta.scale)
    assert back.meta.axes == ref.meta.axes
    assert back.meta.gaps == ref.meta.gaps == (4,)
    assert back.meta.z_numbers == ref.meta.z_numbers
    assert back.meta.synthetic == ref.meta.synthetic
    assert back.meta.synthetic_z == (2,)
    assert back.meta.unit == "micrometer"


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip(flagged_volume, tmp_path, version):
    out = tmp_path / "v.ome.zarr"
    write_volume(flagged_volume, out, ngff_version=version, n_levels=3)
    back = read_volume(out)
    _assert_same(back, flagged_volume)
    assert [lv.shape for lv in back.levels] == level_shapes(flagged_volume.shape, 3)
    ref = flagged_volume.data.compute()
    np.testing.assert_array_equal(back.levels[1].compute(), halve(ref))
    np.testing.assert_array_equal(back.levels[2].compute(), halve(halve(ref)))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_validates_and_opens_in_ome_zarr_py(flagged_volume, tmp_path, version):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models import open_ome_zarr

    out = tmp_path / "v.ome.zarr"
    write_volume(flagged_volume, out, ngff_version=version, n_levels=2)
    model = open_ome_zarr(str(out), version=version)  # pydantic validation of the NGFF metadata
    assert type(model).__name__ == "Image"
    nodes = list(Reader(parse_url(str(out)))())
    node = nodes[0]
    assert len(node.data) == 2
    assert node.data[0].shape == (3, 4, 70, 90)  # c, z, y, x
    np.testing.assert_array_equal(
        np.moveaxis(np.asarray(node.data[0]), 0, -1), flagged_volume.data.compute()
    )
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == pytest.approx([1.0, 4.0, 0.5, 0.5])


def test_pyramidal_ome_tiff_round_trip_and_every_level_readable(flagged_volume, tmp_path):
    out = tmp_path / "v.ome.tif"
    write_volume(flagged_volume, out, n_levels=3, tile=32)
    back = read_volume(out)
    _assert_same(back, flagged_volume)
    ref = flagged_volume.data.compute()
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.is_bigtiff
        series = tif.series[0]
        assert len(series.levels) == 3
        assert len(tif.pages[0].subifds) == 2  # SubIFD pyramid
        assert tif.pages[0].is_tiled and tif.pages[0].compression == 8  # deflate
        expect = ref
        for k, level in enumerate(series.levels):
            if k:
                expect = halve(expect)
            np.testing.assert_array_equal(level.asarray(), expect)
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata


def test_gray_uint16_ome_tiff_and_zarr(make_sections, tmp_path):
    folder, _ = make_sections(zs=(3, 4), dtype=np.uint16, shape=(33, 47))
    vol = read_volume(folder)
    for name in ("g.ome.tif", "g.ome.zarr", "g.npy"):
        write_volume(vol, tmp_path / name)
        back = read_volume(tmp_path / name)
        assert back.dtype == np.uint16 and back.meta.axes == "zyx"
        np.testing.assert_array_equal(back.data.compute(), vol.data.compute())
        assert back.meta.z_numbers == (3, 4)


def test_npy_round_trip_is_memory_mapped(flagged_volume, tmp_path):
    out = tmp_path / "v.npy"
    write_volume(flagged_volume, out)
    assert (tmp_path / "v.npy.json").is_file()
    back = read_volume(out)
    _assert_same(back, flagged_volume)
    assert isinstance(np.load(out, mmap_mode="r"), np.memmap)


def test_slice_folder_round_trip_keeps_names_and_lists_synthetic(flagged_volume, tmp_path):
    out = tmp_path / "out_sections"
    write_volume(flagged_volume, out)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "histovol.json",
        "sec_001.png",
        "sec_002.png",
        "sec_003.png",
        "sec_005.png",
        "synthetic.txt",
    ]
    assert (out / "synthetic.txt").read_text().split() == ["sec_002.png"]
    _assert_same(read_volume(out), flagged_volume)


def test_blockwise_writing_equals_whole_volume(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 60000, (5, 301, 257), dtype=np.uint16)
    lazy = da.from_array(arr, chunks=(2, 301, 257))
    vol = Volume(lazy, read_volume_meta_like(arr))
    out = tmp_path / "b.ome.zarr"
    # a tiny memory budget forces tiling in y and x as well as z
    write_volume(vol, out, n_levels=3, xy_chunk=32, block_bytes=64 * 64 * 2)
    back = read_volume(out)
    np.testing.assert_array_equal(back.levels[0].compute(), arr)
    np.testing.assert_array_equal(back.levels[2].compute(), halve(halve(arr)))


def read_volume_meta_like(arr):
    from napari_histovol.core.io.meta import VolumeMeta

    return VolumeMeta().with_planes(arr.shape[0])


def test_halve_matches_local_mean():
    from skimage.transform import downscale_local_mean

    a = np.random.default_rng(0).random((2, 8, 10)).astype(np.float32)
    np.testing.assert_allclose(halve(a), downscale_local_mean(a, (1, 2, 2)), rtol=1e-6)


# ---------------------------------------------------------------- output safety


def test_existing_output_is_not_overwritten(flagged_volume, tmp_path):
    out = tmp_path / "v.ome.zarr"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(OutputError, match="exists already"):
        write_volume(flagged_volume, out)
    assert (out / "mine.txt").read_text() == "user data"
    # a folder napari-histovol did not write is never replaced, even with overwrite
    with pytest.raises(OutputError, match="did not write"):
        write_volume(flagged_volume, out, overwrite=True)
    assert (out / "mine.txt").read_text() == "user data"
    # its own output is replaced
    (out / "mine.txt").unlink()
    write_volume(flagged_volume, out, overwrite=True)
    write_volume(flagged_volume, out, overwrite=True)
    assert read_volume(out).shape == flagged_volume.shape
    # and a folder is never replaced by a file
    (tmp_path / "v.npy").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_volume(flagged_volume, tmp_path / "v.npy", overwrite=True)


@pytest.mark.parametrize("name", ["v.ome.zarr", "v.ome.tif", "v.npy", "folder"])
def test_unwritable_output_path(flagged_volume, tmp_path, name):
    blocker = tmp_path / "a_file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Cannot create the folder"):
        write_volume(flagged_volume, blocker / name)


@pytest.mark.parametrize("name", ["v.ome.zarr", "v.ome.tif", "v.npy", "sections"])
def test_failure_midway_leaves_no_partial_output(flagged_volume, tmp_path, name):
    calls = {"n": 0}

    def flaky(block):
        calls["n"] += 1
        if calls["n"] > 2:
            raise InputError("'sec_003.png' could not be decoded")
        return block

    bad = Volume(
        flagged_volume.data.map_blocks(flaky, dtype=flagged_volume.dtype), flagged_volume.meta
    )
    out_dir = tmp_path / "out"
    with pytest.raises(InputError):
        write_volume(
            bad,
            out_dir / name,
            **({"n_levels": 2} if "." in name and not name.endswith("npy") else {}),
        )
    assert list(out_dir.iterdir()) == []


def test_cancelled_write_leaves_nothing(flagged_volume, tmp_path):
    out_dir = tmp_path / "out"
    gen = iter_write_ome_zarr(flagged_volume, out_dir / "v.ome.zarr", workers=1)
    next(gen)
    next(gen)
    gen.close()  # what a napari worker does on cancel
    assert list(out_dir.iterdir()) == []


def test_unknown_output_suffix(flagged_volume, tmp_path):
    with pytest.raises(InputError, match="Cannot write a volume"):
        write_volume(flagged_volume, tmp_path / "v.png")


def test_jpeg_folder_refuses_16_bit(make_sections, tmp_path):
    folder, _ = make_sections(zs=(1, 2), dtype=np.uint16)
    with pytest.raises(InputError, match="8-bit"):
        write_volume(read_volume(folder), tmp_path / "o", ext=".jpg")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 8, 10), (1, 7, 9), (2, 6, 5, 3)])
def test_halve_is_the_rounded_2x2_mean_for_every_type(dtype, shape):
    rng = np.random.default_rng(3)
    a = (rng.random(shape) * 1000).astype(dtype)
    y, x = shape[1], shape[2]
    p = np.pad(a, [(0, 0), (0, y % 2), (0, x % 2)] + [(0, 0)] * (a.ndim - 3), mode="edge").astype(
        np.float64
    )
    ref = (p[:, 0::2, 0::2] + p[:, 0::2, 1::2] + p[:, 1::2, 0::2] + p[:, 1::2, 1::2]) / 4
    got = halve(a)
    assert got.dtype == dtype and got.shape == ref.shape
    if np.dtype(dtype).kind in "ui":
        assert np.abs(got.astype(float) - np.floor(ref + 0.5)).max() <= (
            0 if dtype in (np.uint8, np.uint16) else 1
        )
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_a_16_bit_volume_opens_with_a_range_that_shows_its_voxels(shared_data):
    """napari measured cells3d's middle plane alone: the range saturated 10.9 % of the nuclei
    volume's voxels and the chromatin showed as flat white (a helper's journey)."""
    from napari_histovol._layers import volume_to_layer_data
    from napari_histovol.core.io import read_volume

    vol = read_volume(shared_data / "cells3d_nuclei_3d" / "nuclei.tif")
    _, kwargs, _ = volume_to_layer_data(vol, name="nuclei")[0]
    lo, hi = kwargs["contrast_limits"]
    a = np.asarray(vol.data)
    assert (a > hi).mean() < 0.005 and (a < lo).mean() < 0.005
    assert hi - lo > 0.5 * (np.percentile(a, 99) - np.percentile(a, 1))

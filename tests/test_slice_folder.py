import warnings

import numpy as np
import pytest
import tifffile

from napari_histovol.core.errors import HistovolWarning, InputError
from napari_histovol.core.io import imagefile
from napari_histovol.core.io.slices import read_slice_folder

from .conftest import tissue, write_image


@pytest.mark.parametrize(
    "ext,rgb,dtype",
    [
        (".png", False, np.uint8),
        (".png", True, np.uint8),
        (".png", False, np.uint16),
        (".png", True, np.uint16),
        (".tif", False, np.uint16),
        (".tif", True, np.uint8),
        (".bmp", True, np.uint8),
        (".tiff", False, np.float32),
    ],
)
def test_reads_exact_pixels_in_z_order(make_sections, ext, rgb, dtype):
    folder, truth = make_sections(zs=(1, 2, 10), ext=ext, rgb=rgb, dtype=dtype, width=1)
    vol = read_slice_folder(folder)
    assert vol.meta.z_numbers == (1, 2, 10)
    assert vol.meta.gaps == tuple(range(3, 10))
    assert vol.dtype == dtype
    assert vol.meta.rgb == rgb
    data = vol.data.compute()
    for i, name in enumerate(["sec_1" + ext, "sec_2" + ext, "sec_10" + ext]):
        np.testing.assert_array_equal(data[i], truth[name])


def test_jpeg_is_read_close_to_the_original(make_sections):
    folder, truth = make_sections(zs=(4, 5), ext=".jpg", rgb=True)
    data = read_slice_folder(folder).data.compute()
    err = np.abs(data[0].astype(int) - truth["sec_004.jpg"].astype(int)).mean()
    assert err < 3


def test_rgba_alpha_is_dropped(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    rgb = tissue((20, 30), 0, rgb=True)
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 77, np.uint8)], axis=-1)
    write_image(d / "a_1.png", rgba)
    write_image(d / "a_2.tif", rgba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HistovolWarning)
        vol = read_slice_folder(d)
    assert vol.shape == (2, 20, 30, 3)
    np.testing.assert_array_equal(vol.data.compute()[0], rgb)
    np.testing.assert_array_equal(vol.data.compute()[1], rgb)


def test_opening_is_lazy(make_sections, monkeypatch):
    folder, _ = make_sections(zs=range(1, 21))
    calls = []
    real = imagefile.decode
    monkeypatch.setattr(
        "napari_histovol.core.io.slices.decode", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    vol = read_slice_folder(folder)
    assert calls == []
    vol.data[3].compute()
    assert len(calls) == 1


def test_different_sizes_go_on_a_centred_canvas_with_background(make_sections):
    folder, truth = make_sections(
        zs=(1, 2), shapes=[(40, 60), (30, 50)], rgb=True, background="white"
    )
    with pytest.warns(HistovolWarning, match="different sizes"):
        vol = read_slice_folder(folder)
    assert vol.shape == (2, 40, 60, 3)
    small = vol.data[1].compute()
    np.testing.assert_array_equal(small[5:35, 5:55], truth["sec_002.png"])
    assert (small[:5] == 255).all() and (small[:, :5] == 255).all()  # white slide background


def test_dark_background_pads_with_black(make_sections):
    folder, _ = make_sections(zs=(1, 2), shapes=[(40, 40), (20, 20)], background="black")
    with pytest.warns(HistovolWarning):
        vol = read_slice_folder(folder)
    assert (vol.data[1].compute()[:10] == 0).all()


def test_single_slice_warns(make_sections):
    folder, _ = make_sections(zs=(7,))
    with pytest.warns(HistovolWarning, match="single section"):
        vol = read_slice_folder(folder)
    assert vol.shape[0] == 1 and vol.meta.gaps == ()


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="is empty"):
        read_slice_folder(tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no section images"):
        read_slice_folder(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_slice_folder(tmp_path / "nope")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_truncated_image_among_good_ones_is_named(make_sections, ext):
    folder, _ = make_sections(zs=(1, 2, 3), ext=ext, shape=(64, 64))
    bad = folder / f"sec_002{ext}"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(InputError, match="sec_002"):
        read_slice_folder(folder)


def test_garbage_file_is_named_and_can_be_skipped(make_sections):
    folder, truth = make_sections(zs=(1, 2, 3))
    (folder / "sec_002.png").write_bytes(b"this is not a png at all")
    with pytest.raises(InputError, match="sec_002.png") as err:
        read_slice_folder(folder)
    assert err.value.option == "on_corrupt"  # the front ends name their control for it
    assert "--" not in str(err.value)  # core speaks no command-line vocabulary
    with pytest.warns(HistovolWarning, match="Skipped an unreadable section"):
        vol = read_slice_folder(folder, on_corrupt="skip")
    assert vol.meta.z_numbers == (1, 3) and vol.meta.gaps == (2,)
    np.testing.assert_array_equal(vol.data[1].compute(), truth["sec_003.png"])


def test_names_without_numbers_warn_and_use_name_order(make_sections):
    folder, truth = make_sections(["beta.png", "alpha.png"])
    with pytest.warns(HistovolWarning, match="no.*number|has a number"):
        vol = read_slice_folder(folder)
    np.testing.assert_array_equal(vol.data[0].compute(), truth["alpha.png"])


def test_mixed_bit_depths_are_refused(tmp_path):
    write_image(tmp_path / "a_1.png", tissue((16, 16), 0))
    write_image(tmp_path / "a_2.png", tissue((16, 16), 1, dtype=np.uint16))
    with pytest.raises(InputError, match="mixes pixel types"):
        read_slice_folder(tmp_path)


def test_gray_among_rgb_becomes_rgb(tmp_path):
    write_image(tmp_path / "a_1.png", tissue((16, 16), 0, rgb=True))
    gray = tissue((16, 16), 1)
    write_image(tmp_path / "a_2.png", gray)
    with pytest.warns(HistovolWarning, match="gray among RGB"):
        vol = read_slice_folder(tmp_path)
    plane = vol.data[1].compute()
    assert plane.shape == (16, 16, 3)
    np.testing.assert_array_equal(plane[..., 1], gray)


def test_nan_in_float_section_is_zeroed_with_warning(tmp_path):
    img = tissue((16, 16), 0, dtype=np.float32)
    img[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "s_1.tif", img)
    tifffile.imwrite(tmp_path / "s_2.tif", img)
    vol = read_slice_folder(tmp_path)
    with pytest.warns(HistovolWarning, match="NaN"):
        plane = vol.data[0].compute()
    assert plane[3, 4] == 0 and np.isfinite(plane).all()


def test_stack_tiff_in_a_slice_folder_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "s_1.tif", np.zeros((5, 16, 16), np.uint8))
    with pytest.raises(InputError, match="stack"):
        read_slice_folder(tmp_path)


def test_pixel_size_from_tiff_resolution_tags(tmp_path):
    for z in (1, 2):
        tifffile.imwrite(
            tmp_path / f"s_{z}.tif",
            tissue((16, 16), z),
            resolution=(1e4 / 0.25, 1e4 / 0.25),
            resolutionunit="CENTIMETER",
        )
    vol = read_slice_folder(tmp_path, section_spacing=5)
    assert vol.meta.scale == pytest.approx((5, 0.25, 0.25))
    assert vol.meta.scale_known and vol.meta.spacing_known and vol.meta.unit == "micrometer"


def test_72_dpi_default_is_not_a_pixel_size(tmp_path):
    for z in (1, 2):
        tifffile.imwrite(
            tmp_path / f"s_{z}.tif", tissue((16, 16), z), resolution=(72, 72), resolutionunit="INCH"
        )
    vol = read_slice_folder(tmp_path)
    assert not vol.meta.scale_known and vol.meta.scale == (1.0, 1.0, 1.0)


def test_non_positive_scale_is_refused(make_sections):
    folder, _ = make_sections()
    with pytest.raises(InputError, match="positive"):
        read_slice_folder(folder, pixel_size=0)


def test_real_em_stack_from_shared_data(shared_data):
    folder = shared_data / "isbi2012_sstem_train" / "train_image"
    vol = read_slice_folder(folder)
    assert vol.shape == (30, 512, 512) and vol.dtype == np.uint8
    assert vol.meta.z_numbers == tuple(range(30)) and vol.meta.gaps == ()
    assert vol.meta.pattern.width == 2
    import imagecodecs

    first = imagecodecs.png_decode((folder / vol.meta.files[7]).read_bytes())
    np.testing.assert_array_equal(vol.data[7].compute(), first)


def test_real_confocal_tiff_stack_opens_as_volume(shared_data):
    from napari_histovol.core.io import read_volume

    vol = read_volume(shared_data / "cells3d_nuclei_3d" / "nuclei.tif")
    assert vol.shape == (60, 256, 256) and vol.dtype == np.uint16
    np.testing.assert_array_equal(
        vol.data[30].compute(),
        tifffile.imread(shared_data / "cells3d_nuclei_3d" / "nuclei.tif")[30],
    )


# ------------------------------------------------------------------------------------------
# section numbers are the numbers that vary across the folder (issue 11)

ANHIR_DIR = "anhir_lung_lesion3_serial/images_scale-5pc"


def _copy_anhir(shared_data, dst, *, he_number: int | None):
    import shutil

    dst.mkdir()
    for p in sorted((shared_data / ANHIR_DIR).glob("*.jpg")):
        name = p.name
        if "-He-" in name and he_number is not None:
            name = name.replace("-He-", f"-He-{he_number}-")
        shutil.copy(p, dst / name)
    return dst


def test_real_anhir_names_read_as_sections_1_3_4_5_7(shared_data, tmp_path):
    folder = _copy_anhir(shared_data, tmp_path / "anhir", he_number=1)
    with pytest.warns(HistovolWarning, match="different sizes"):
        vol = read_slice_folder(folder)
    assert vol.meta.z_numbers == (1, 3, 4, 5, 7)
    assert vol.meta.gaps == (2, 6)
    stains = [f.split("-")[4] for f in vol.meta.files]
    assert stains == ["He", "CD31", "proSPC", "Cc10", "Ki67"]
    assert vol.meta.pattern.prefix == "29-041-Izd2-w35-" and vol.meta.pattern.suffix == "-les3"


def test_real_anhir_he_without_number_is_one_sentence_naming_it(shared_data, tmp_path):
    folder = _copy_anhir(shared_data, tmp_path / "anhir", he_number=None)
    with pytest.raises(InputError) as e:
        read_slice_folder(folder)
    msg = str(e.value)
    assert "'29-041-Izd2-w35-He-les3.jpg' has no section number" in msg
    assert "add its section number to its name" in msg and "two series" not in msg


def test_written_anhir_like_folder_keeps_names_and_pattern(make_sections, tmp_path):
    from napari_histovol.core.io.slices import write_slice_folder
    from napari_histovol.core.io.volume import Volume

    names = ["lx-CD31-3-les3.png", "lx-Ki67-7-les3.png", "lx-He-1-les3.png"]
    folder, truth = make_sections(names)
    vol = read_slice_folder(folder)
    assert vol.meta.z_numbers == (1, 3, 7)
    # add a generated plane for z 2: it takes the pattern, measured planes keep their names
    from dataclasses import replace

    import dask.array as da

    data = da.concatenate([vol.data[:1], vol.data[:1], vol.data[1:]])
    meta = replace(
        vol.meta,
        z_numbers=(1, 2, 3, 7),
        synthetic=(False, True, False, False),
        files=(vol.meta.files[0], "", *vol.meta.files[1:]),
    )
    out = write_slice_folder(Volume(data, meta), tmp_path / "out")
    assert sorted(p.name for p in out.glob("*.png")) == sorted([*names, "lx-2-les3.png"])
    back = read_slice_folder(out)
    assert back.meta.z_numbers == (1, 2, 3, 7) and back.meta.synthetic_z == (2,)
    np.testing.assert_array_equal(np.asarray(back.data[3]), truth["lx-Ki67-7-les3.png"])


def test_renumbered_plane_does_not_keep_a_name_that_says_another_number(make_sections, tmp_path):
    from dataclasses import replace

    from napari_histovol.core.io.slices import write_slice_folder
    from napari_histovol.core.io.volume import Volume

    folder, _ = make_sections(["lx-CD31-3-les3.png", "lx-Ki67-7-les3.png"])
    vol = read_slice_folder(folder)
    moved = Volume(vol.data, replace(vol.meta, z_numbers=(3, 8)))
    out = write_slice_folder(moved, tmp_path / "out")
    assert sorted(p.name for p in out.glob("*.png")) == ["lx-8-les3.png", "lx-CD31-3-les3.png"]


def test_runaway_numbering_is_refused_before_any_file_is_probed(make_sections, monkeypatch):
    from napari_histovol.core.io import slices

    calls = []
    monkeypatch.setattr(slices, "probe", lambda p: calls.append(p))
    folder, _ = make_sections(zs=(1, 2, 1_000_000), width=1)
    with pytest.raises(InputError, match="999997 numbers missing.*rename the files"):
        read_slice_folder(folder)
    assert calls == []


def test_23_digit_number_in_a_name_is_refused_without_allocating(make_sections):
    folder, _ = make_sections(["s_1.png", "s_2.png", "s_" + "1" * 23 + ".png"])
    with pytest.raises(InputError, match="too large to be one"):
        read_slice_folder(folder)

"""Real napari viewers on a (virtual) display: the plugin's reader, sample and writer end to end."""

import numpy as np
import pytest
import tifffile

from napari_histovol._layers import layer_volume
from napari_histovol.core.io import read_volume, write_volume

from .conftest import tissue

pytestmark = pytest.mark.gui


def _not_blank(img: np.ndarray) -> bool:
    rgb = img[..., :3].astype(float)
    return rgb.std() > 10 and len(np.unique(rgb.reshape(-1, 3)[::97], axis=0)) > 20


def test_open_slice_folder_with_scale_and_gaps(make_napari_viewer, tmp_path):
    d = tmp_path / "sections"
    d.mkdir()
    for z in (1, 2, 4):
        tifffile.imwrite(
            d / f"s_{z:02d}.tif",
            tissue((120, 160), z, dtype=np.uint16),
            resolution=(1e4 / 0.5, 1e4 / 0.5),
            resolutionunit="CENTIMETER",
        )
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(d), plugin="napari-histovol")
    layer = layers[0]
    # the gap (section 3) is a plane of its own, empty: the slider steps through sections
    assert layer.data.shape == (4, 120, 160)
    assert layer.metadata["histovol_display"]["plane"] == [0, 1, -1, 2]
    assert not np.asarray(layer.data[2]).any()
    assert tuple(layer.scale) == pytest.approx((0.5, 0.5, 0.5))
    assert tuple(layer.translate)[0] == pytest.approx(0.5)  # section 1 at 1 x spacing
    assert [str(u) for u in layer.units] == ["micrometer"] * 3
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    assert layer.metadata["histovol"]["gaps"] == [3]
    assert layer.metadata["histovol"]["z_numbers"] == [1, 2, 4]
    assert layer_volume(layer).shape == (3, 120, 160)  # widgets get the measured sections
    viewer.dims.set_point(0, 0.5)  # section 1
    assert _not_blank(viewer.screenshot(canvas_only=True))
    viewer.dims.set_point(0, 1.5)  # section 3: missing, nothing to see
    assert viewer.screenshot(canvas_only=True)[..., :3].std() < 1


def test_open_ome_zarr_as_multiscale_with_scale(make_napari_viewer, make_sections, tmp_path):
    folder, _ = make_sections(zs=(1, 2, 3), shape=(600, 700), rgb=True)
    out = tmp_path / "v.ome.zarr"
    write_volume(read_volume(folder, pixel_size=0.25, section_spacing=5), out, n_levels=3)
    viewer = make_napari_viewer(show=True)
    layer = viewer.open(str(out), plugin="napari-histovol")[0]
    assert layer.multiscale and len(layer.data) == 3 and layer.rgb
    assert tuple(layer.scale) == pytest.approx((5, 0.25, 0.25))
    assert _not_blank(viewer.screenshot(canvas_only=True))


def test_sample_opens_and_renders(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-histovol", "lung_lesion3")
    layer = viewer.layers[-1]
    assert layer.rgb and layer.data.shape == (7, 661, 895, 3)  # sections 1..7, gaps 2 and 6
    assert layer.metadata["histovol"]["gaps"] == [2, 6]
    shot = viewer.screenshot(canvas_only=True)
    assert _not_blank(shot)
    # stepping to another section changes the picture
    viewer.dims.set_current_step(0, 4)
    assert np.abs(viewer.screenshot(canvas_only=True).astype(int) - shot.astype(int)).mean() > 1


def test_save_layer_through_plugin_writer(make_napari_viewer, make_sections, tmp_path):
    folder, _ = make_sections(zs=(1, 3))
    viewer = make_napari_viewer(show=True)
    layer = viewer.open(str(folder), plugin="napari-histovol")[0]
    out = tmp_path / "saved.ome.zarr"
    viewer.layers.save(str(out), selected=False, plugin="napari-histovol")
    back = read_volume(out)
    assert layer.data.shape[0] == 3  # sections 1, 3 and the gap between them
    np.testing.assert_array_equal(back.data.compute(), read_volume(folder).data.compute())
    assert back.meta.gaps == (2,) and back.meta.z_numbers == (1, 3)


def test_histovol_demo_opens_napari_and_saves_a_screenshot(tmp_path):
    import os
    import subprocess
    import sys

    import imagecodecs

    assert os.environ.get("DISPLAY"), "pytest-xvfb provides the display"
    shot = tmp_path / "demo.png"
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_histovol.cli",
            "demo",
            "--screenshot",
            str(shot),
            "--out",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    img = imagecodecs.png_decode(shot.read_bytes())
    assert img.shape[0] > 300 and _not_blank(img)


def test_tensorflow_never_loads_in_the_napari_process():
    """TensorFlow's LLVM crashes next to napari's OpenGL canvas: it must only run in children."""
    import sys

    assert "tensorflow" not in sys.modules


def test_a_folder_whose_middle_section_is_missing_opens_on_a_section(
    make_napari_viewer, qtbot, tmp_path
):
    """napari opens a stack at its middle plane; with sections 1, 2, 3, 5, 6, 7 that is the
    missing section 4, a blank canvas. The reader moves the slider to a measured section."""
    d = tmp_path / "sections"
    d.mkdir()
    for z in (1, 2, 3, 5, 6, 7):
        tifffile.imwrite(d / f"s_{z:02d}.tif", tissue((96, 128), z, dtype=np.uint16))
    viewer = make_napari_viewer(show=True)
    layer = viewer.open(str(d), plugin="napari-histovol")[0]
    assert layer.metadata["histovol_display"]["plane"] == [0, 1, 2, -1, 3, 4, 5]
    qtbot.waitUntil(lambda: viewer.dims.current_step[0] != 3, timeout=5000)
    assert viewer.dims.current_step[0] == 2  # section 3, the nearer measured one below
    assert _not_blank(viewer.screenshot(canvas_only=True))


def test_a_stack_without_a_pixel_size_opens_in_pixels_and_says_so(
    make_napari_viewer, tmp_path, monkeypatch
):
    """A plain TIFF stack (no resolution tags, no OME metadata) opens at scale 1 in pixels,
    and the user is told once how to give it micrometres; a scaled one says nothing."""
    from napari.utils import notifications

    told: list[str] = []
    monkeypatch.setattr(notifications, "show_info", lambda text: told.append(text))
    plain = tmp_path / "nuclei.tif"
    tifffile.imwrite(plain, np.stack([tissue((64, 80), z, dtype=np.uint16) for z in range(4)]))
    viewer = make_napari_viewer(show=True)
    layer = viewer.open(str(plain), plugin="napari-histovol")[0]
    assert tuple(layer.scale) == (1.0, 1.0, 1.0)
    assert len(told) == 1 and "'nuclei.tif' holds no pixel size" in told[0]
    assert "Sections tab" in told[0]
    told.clear()
    scaled = tmp_path / "scaled.ome.tif"
    write_volume(read_volume(plain, pixel_size=0.26, section_spacing=0.29), scaled)
    viewer.open(str(scaled), plugin="napari-histovol")
    assert not told

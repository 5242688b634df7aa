"""Dock widgets end to end in a real viewer (Xvfb)."""

import numpy as np
import pytest

from .test_align import he_section, moved, rigid

pytestmark = pytest.mark.gui


def test_align_widget_aligns_a_layer_and_lists_qc(make_napari_viewer, qtbot):
    from napari_histovol._widgets.align_widget import AlignWidget

    img = he_section(256)
    rng = np.random.default_rng(0)
    truths = [
        rigid(0, 0, 0, (256, 256)),
        rigid(12, 9, -6, (256, 256)),
        rigid(-9, -7, 5, (256, 256)),
    ]
    stack = np.stack([moved(img, t, rng) for t in truths])
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(stack, rgb=True, name="sections", scale=(4, 0.5, 0.5))
    widget = AlignWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    widget.reference.value = "first"
    widget.run()
    qtbot.waitUntil(lambda: widget.result is not None and widget.run_button.enabled, timeout=60000)
    out = viewer.layers["sections aligned"]
    assert tuple(out.scale) == (4, 0.5, 0.5) and out.rgb
    assert len(out.metadata["transforms"]) == 3
    assert widget.table.rowCount() == 2
    a = np.asarray(out.data[1]).astype(float)
    b = np.asarray(out.data[0]).astype(float)
    inner = (slice(60, 196), slice(60, 196))
    assert np.abs(a[inner] - b[inner]).mean() < 12  # aligned onto the first section
    widget._go_to_row(1, 0)
    assert viewer.dims.current_step[0] == 2
    shot = viewer.screenshot(canvas_only=True)
    assert shot[..., :3].std() > 10


def test_align_widget_notes_a_steady_turn(make_napari_viewer, qtbot):
    """Sections turned 0.8 degrees apiece along z: the tab's status line ends with the note
    the command prints (the turn, and the smoothing that keeps it out)."""
    from napari_histovol._widgets.align_widget import AlignWidget

    from .test_align_global import _turned_steadily, isbi_base

    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(_turned_steadily(isbi_base(96)), name="sections")
    widget = AlignWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    widget.run()
    qtbot.waitUntil(lambda: widget.result is not None and widget.run_button.enabled, timeout=60000)
    status = widget.progress.status.value
    assert "Note: the alignment turns the sections steadily" in status, status
    assert "'keep shape over' 5 sections" in status


def test_a_tab_s_image_box_follows_the_layer_the_user_selects(make_napari_viewer):
    """A user opened an aligned volume, then the raw sections, and found the Align tab set to
    the aligned volume (the first image layer): pressing Align would have aligned the aligned
    volume again. The box starts on the selected layer and follows the user's selection and
    the layers napari selects on adding them, except the tab's own and mere displays."""
    from napari_histovol._widgets._common import layers_changed_by_tab
    from napari_histovol._widgets.align_widget import AlignWidget

    viewer = make_napari_viewer(show=True)
    aligned = viewer.add_image(np.zeros((3, 32, 32), np.uint8), name="stack aligned")
    raw = viewer.add_image(np.ones((3, 32, 32), np.uint8), name="raw sections")
    widget = AlignWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer.value is raw  # the selected layer, not the first
    viewer.layers.selection.active = aligned
    assert widget.layer.value is aligned
    viewer.layers.selection.active = raw
    assert widget.layer.value is raw
    with layers_changed_by_tab(widget.layer):  # a layer the tab adds itself
        made = viewer.add_image(np.ones((5, 32, 32), np.uint8), name="raw sections aligned")
    assert viewer.layers.selection.active is made and widget.layer.value is raw
    viewer.add_points(np.zeros((1, 3)), name="clicks")  # not an image: the box stays
    assert widget.layer.value is raw
    with layers_changed_by_tab():  # a display no tab takes as input (a focus map)
        viewer.add_image(np.ones((5, 32, 32), np.uint8), name="focus map")
    assert widget.layer.value is raw
    with layers_changed_by_tab(object()):  # another tab's result: the next step's input
        other = viewer.add_image(np.ones((5, 32, 32), np.uint8), name="raw sections restored")
    assert widget.layer.value is other
    opened = viewer.add_image(np.ones((5, 32, 32), np.uint8), name="opened by the user")
    assert widget.layer.value is opened


def test_interpolate_widget_computes_gray_16_bit(make_napari_viewer, qtbot):
    from napari_histovol._widgets.interpolate_widget import InterpolateWidget

    from .conftest import tissue

    stack = np.stack([tissue((64, 80), i, dtype=np.uint16) for i in range(3)])
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(stack, name="sec", scale=(6.0, 0.5, 0.5))
    w = InterpolateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    w.frames.value = 2
    w.run()
    qtbot.waitUntil(
        lambda: (
            w.result_layer is not None
            and isinstance(w.result_layer.data, np.ndarray)
            and w.run_button.enabled
        ),
        timeout=60000,
    )
    out = w.result_layer
    assert out.data.shape == (7, 64, 80) and out.data.dtype == np.uint16
    assert tuple(out.scale) == pytest.approx((2.0, 0.5, 0.5))
    assert tuple(out.contrast_limits) == pytest.approx(tuple(layer.contrast_limits))
    assert out.metadata["histovol"]["synthetic"] == [False, True, True, False, True, True, False]
    np.testing.assert_array_equal(out.data[3], stack[1])


def test_build_widget_builds_and_shows_in_3d(make_napari_viewer, qtbot, tmp_path):
    from napari_histovol._sample_data import sample_folder
    from napari_histovol._widgets.build_widget import BuildWidget

    viewer = make_napari_viewer(show=True)
    w = BuildWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.folder.value = str(sample_folder())
    w.output.value = str(tmp_path / "lung.ome.zarr")
    w.size.value = 256
    w.frames.value = 1
    w.pixel_size.value = 2.0
    w.spacing.value = 4.0
    w.run()
    qtbot.waitUntil(lambda: bool(w.layers) and w.run_button.enabled, timeout=120000)
    layer = w.layers[0]
    assert viewer.dims.ndisplay == 3
    shape = (layer.data[0] if layer.multiscale else layer.data).shape
    assert layer.rgb and shape[0] == 13
    assert layer.scale[0] == pytest.approx(2.0)
    assert (tmp_path / "lung.transforms.json").is_file()
    # named apart from the sections it was built from (a layer of the same name is replaced)
    assert layer.name == "lung volume"
    # again into the same output while it is shown: refused, as for a volume opened from its
    # file (replacing the store under the open layer crashed napari's renderer)
    w.run()
    assert "shown as layer 'lung volume'" in w.progress.status.value
    viewer.layers.remove(layer)
    # again into the same output: asked first (the error used to name a box the tab lacks)
    asked = []
    w._confirm_overwrite = lambda path: asked.append(path) or False  # No
    w.run()
    assert asked == [tmp_path / "lung.ome.zarr"] and "exists already" in w.progress.status.value
    w.layers = []
    w.frames.value = 0
    w._confirm_overwrite = lambda path: True  # Yes
    w.run()
    qtbot.waitUntil(lambda: bool(w.layers) and w.run_button.enabled, timeout=120000)
    assert (w.layers[0].data[0] if w.layers[0].multiscale else w.layers[0].data).shape[0] == 7


def test_build_takes_the_scale_set_on_the_open_sections(make_napari_viewer, qtbot, tmp_path):
    """A helper set 2 µm pixels and 5 µm spacing on the opened sample in the Sections tab,
    then built it with the Build tab's boxes at 0: the volume came out in pixels."""
    import warnings

    from napari_histovol._sample_data import sample_folder

    viewer = make_napari_viewer(show=True)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (sections,) = viewer.open(str(sample_folder()), plugin="napari-histovol")
    tab = panel.show_tab("Sections")
    tab.layer.value = sections
    tab.pixel_size.value, tab.spacing.value = 2.0, 5.0
    tab.set_scale()
    w = panel.show_tab("Build")
    w.folder.value = str(sample_folder())
    w.output.value = str(tmp_path / "lung.ome.zarr")
    w.size.value = 256
    assert w.pixel_size.value == 0 and w.spacing.value == 0
    w.run()
    qtbot.waitUntil(lambda: bool(w.layers) and w.run_button.enabled, timeout=120000)
    built = w.layers[0]
    assert built.scale[0] == pytest.approx(5.0)  # 5 µm spacing, gaps filled, no frames
    assert built.scale[1] == pytest.approx(2.0 * 895 / 256, rel=0.01)  # 2 µm, downsized
    assert [str(u) for u in built.units] == ["micrometer"] * 3


def test_3d_view_clips_a_gray_volume_and_2d_comes_back(make_napari_viewer, tmp_path):
    from scipy import ndimage as ndi

    from napari_histovol._widgets.view3d_widget import View3DWidget

    rng = np.random.default_rng(0)
    vol = ndi.gaussian_filter(rng.random((40, 96, 96)), 3)
    vol = ((vol - vol.min()) / np.ptp(vol) * 255).astype(np.uint8)  # an EM-like gray volume
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(vol, name="vol", scale=(3, 1, 1))
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    assert w.show_3d() == [layer] and viewer.dims.ndisplay == 3 and layer.visible
    viewer.scene.camera.angles = (0, 35, 50)
    full = viewer.screenshot(canvas_only=True)
    assert full[..., :3].std() > 10  # not blank
    w.axis.value = "y"
    w.position.value = 0.5
    assert len(layer.experimental_clipping_planes) == 1
    half = viewer.screenshot(canvas_only=True)
    w.position.value = 0.2
    other = viewer.screenshot(canvas_only=True)
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert diff(full, half) > 1 and diff(half, other) > 1
    w.thickness.value = 0.2
    assert len(layer.experimental_clipping_planes) == 2
    w.axis.value = "oblique"
    w.z_exaggeration.value = 2.0
    assert layer.scale[0] == pytest.approx(6.0)
    w.rendering.value = "attenuated_mip"
    assert layer.rendering == "attenuated_mip"
    w.shot_path.value = str(tmp_path / "shot.png")
    assert (
        w.save_screenshot() == str(tmp_path / "shot.png")
        and (tmp_path / "shot.png").stat().st_size > 1000
    )
    viewer.dims.ndisplay = 2  # the stack as it was: scale and no clipping
    assert layer.scale[0] == pytest.approx(3.0) and not layer.experimental_clipping_planes


def test_focus_widget_maps_flags_and_jumps(make_napari_viewer, qtbot):
    import cv2

    from napari_histovol._widgets.focus_widget import FocusWidget

    from .conftest import tissue

    sharp = tissue((256, 256), 1)
    sharp = cv2.add(sharp, np.random.default_rng(0).integers(0, 40, sharp.shape, dtype=np.uint8))
    planes = [sharp] * 7
    planes[2] = cv2.GaussianBlur(sharp, (0, 0), 3)
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(np.stack(planes), name="sec", scale=(5, 0.5, 0.5))
    w = FocusWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    w.tile.value = 64
    w.run()
    qtbot.waitUntil(lambda: w.report is not None and w.run_button.enabled, timeout=60000)
    assert w.report["flagged_z"] == [2] and w.report["worst_plane"] == 2
    assert w.map_layer.data.shape == (7, 4, 4)
    assert tuple(w.map_layer.scale) == pytest.approx((5, 32, 32))
    w._go_worst()
    assert viewer.dims.current_step[0] == 2
    assert len(w.plot.scores) == 7


def test_gaussian_widget_fits_shows_and_saves(make_napari_viewer, qtbot, tmp_path):
    from napari_histovol._widgets.gaussian_widget import GaussianWidget
    from napari_histovol.core.gaussians import read_hgm

    from .test_gaussians import placed_volume

    _, vol = placed_volume(np.random.default_rng(0), shape=(20, 40, 40))
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(vol, name="cells", scale=(2.0, 0.5, 0.5))
    w = GaussianWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    w.budget.value = "count"
    w.count.value = 12
    w.iterations.value = 60
    w.run()
    qtbot.waitUntil(lambda: w.report is not None and w.run_button.enabled, timeout=120000)
    rec = viewer.layers["cells (Gaussians)"]
    pts = viewer.layers["cells (Gaussians) Gaussians"]
    assert tuple(rec.scale) == (2.0, 0.5, 0.5) and rec.data.shape == vol.shape
    assert 1 <= len(pts.data) <= 12
    assert w.report["psnr_db"] > 25 and "PSNR" in w.summary.value
    # The reconstruction resembles the original and is what was fitted.
    diff = np.abs(np.asarray(rec.data).astype(float) - vol).mean()
    assert diff < 0.05 * float(vol.max())
    out = tmp_path / "cells.hgm"
    viewer.layers.selection = {rec}
    viewer.layers.save(str(out), selected=True, plugin="napari-histovol")
    mix, header = read_hgm(out)
    assert len(mix) == len(pts.data) and header.shape == vol.shape
    viewer.dims.ndisplay = 3
    pts.visible = True
    shot = viewer.screenshot(canvas_only=True)
    assert shot[..., :3].std() > 5

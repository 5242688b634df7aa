"""The live interpolation slider in a real viewer (Xvfb): moving 'frames between' updates one
layer with no button, its generated planes are the core's frames, memory does not follow the
frame count, bad text is a message, and 'Interpolate' computes or writes the plugin's own
multiscale OME-Zarr."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_histovol._layers import world_z
from napari_histovol.core.interpolate import interpolate_pair
from napari_histovol.core.io import read_volume, write_volume

from .conftest import tissue, write_image

pytestmark = pytest.mark.gui


def _shifted_folder(tmp_path, shape=(160, 208), n=4):
    """RGB sections of one tissue moved by known shifts, numbered 1..n, stain in the name."""
    base = tissue(shape, 5, rgb=True)
    d = tmp_path / "shifted"
    d.mkdir()
    for i in range(n):
        img = ndi.shift(base, (3 * i, -2 * i, 0), order=1, mode="nearest")
        write_image(d / f"case_{('HE', 'CD31', 'Ki67', 'Cc10')[i % 4]}_s{i + 1:02d}.png", img)
    return d


def _panel(viewer):
    # docked as a user docks it, from the Plugins menu: napari hands it a PublicOnlyProxy
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    return panel


def _open(viewer, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return viewer.open(str(path), plugin="napari-histovol")[0]


def _shown(layer):
    """The plane napari shows now (2D view)."""
    return np.asarray(layer._slice.image.raw)


def test_slider_updates_one_live_layer_with_the_cores_frames(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    sections = _open(viewer, _shifted_folder(tmp_path))
    tab = panel.tools["Sections"]
    tab.layer.value = sections
    tab.pixel_size.value, tab.spacing.value = 0.5, 4.0
    tab.set_scale()
    name = f"{sections.name} interpolated"
    assert name not in viewer.layers  # a tab the user does not see makes nothing
    viewer.dims.set_point(0, world_z(sections, 2))  # section 3
    w = panel.show_tab("Interpolate")
    w.layer.value = sections
    # the tab in view: the live layer at the slider's default (1 frame), no control moved (a
    # pathologist saw nothing until the slider was moved away from 1 and back)
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=10000)
    assert w.frames.value == 1 and viewer.layers[name].data.shape[0] == 7
    w.frames.value = 3  # no button pressed: the debounce timer rebuilds the layer
    qtbot.waitUntil(lambda: viewer.layers[name].data.shape[0] == 13, timeout=10000)
    live = viewer.layers[name]
    assert live.data.shape[0] == 13 and live.rgb
    assert tuple(live.scale) == pytest.approx((1.0, 0.5, 0.5))
    assert [str(u) for u in live.units] == ["micrometer"] * 3
    assert tuple(live.axis_labels) == ("z", "y", "x")
    assert live.contrast_limits == pytest.approx(sections.contrast_limits)
    # the viewer stayed on section 3, now plane 8 of the live layer
    assert viewer.dims.point[0] == pytest.approx(world_z(sections, 2))
    np.testing.assert_array_equal(_shown(live), np.asarray(sections.data[2]))

    w.frames.value = 7
    qtbot.waitUntil(lambda: live.data.shape[0] == 25, timeout=10000)
    assert viewer.layers[name] is live and len(viewer.layers) == 2  # updated, not added
    assert live.scale[0] == pytest.approx(0.5)
    assert viewer.dims.point[0] == pytest.approx(world_z(sections, 2))
    np.testing.assert_array_equal(_shown(live), np.asarray(sections.data[2]))

    # a generated plane is the core's frame at its t (ground truth), named by the Sections tab
    viewer.dims.set_point(0, world_z(live, 10))  # between sections 2 and 3, t = 2/8
    a, b = np.asarray(sections.data[1]), np.asarray(sections.data[2])
    np.testing.assert_array_equal(_shown(live), interpolate_pair(a, b, [0.25])[0])
    viewer.layers.selection.active = live
    assert tab.refresh() == (
        "plane z 11 · synthetic between section 2 (CD31) and section 3 (Ki67), t = 0.25"
    )
    # the Sections list follows the live layer as its planes change
    tab.layer.value = live  # (it may be there already: a tab's new stack is every box's)
    qtbot.waitUntil(lambda: tab.list.count() == 25, timeout=5000)  # rebuilt on the next loop
    w.frames.value = 1
    qtbot.waitUntil(lambda: tab.list.count() == 7, timeout=10000)
    w.frames.value = 7
    qtbot.waitUntil(lambda: tab.list.count() == 25, timeout=10000)
    viewer.dims.set_point(0, world_z(live, 10))  # back on the plane t = 2/8
    # the method follows too
    w.method.value = "linear"
    qtbot.waitUntil(
        lambda: live.metadata["histovol"]["extra"]["interpolation"]["method"] == "linear",
        timeout=10000,
    )
    lin = 0.75 * a.astype(np.float32) + 0.25 * b.astype(np.float32)
    np.testing.assert_array_equal(_shown(live), np.rint(lin).astype(np.uint8))


def test_memory_does_not_follow_the_frame_count(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    sections = _open(viewer, _shifted_folder(tmp_path, shape=(256, 320)))
    w = panel.show_tab("Interpolate")
    w.layer.value = sections
    viewer.dims.set_point(0, world_z(sections, 1))
    z1 = world_z(sections, 0)  # sections 1..4 at world z 1..4 (no spacing known: 1)
    peaks, planes = {}, {}
    for n in (5, 50):
        w.frames.value = n
        tracemalloc.start()
        assert w.update_live()  # what the debounce timer calls, timed here for tracemalloc
        for where in (1.5, 0.25, 1.75):  # between sections 2-3, 1-2, 2-3 again
            viewer.dims.set_point(0, z1 + where)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        planes[n] = w.result_layer.data.shape[0]
    plane_bytes = 256 * 320 * 3
    assert planes == {5: 19, 50: 154}
    # each pair's flow was estimated once and reused at 50 frames between
    assert w.cache.computed == 2 and len(w.cache) == 2
    # only the planes shown were made, not the 150 generated planes: 3 visited at 5 frames
    # (the first plane shown is section 2, measured), 3 at 50 plus the plane at the z the
    # viewer kept through the rebuild
    assert w.cache.planes == 3 + 1 + 3, w.cache.planes
    # memory is flat: the rebuild and three planes at 50 frames between peak no higher than
    # at 5 (where two flows were estimated too), and far below the 154 planes (38 MB) that
    # materialising would hold
    assert peaks[50] < peaks[5] + 4 * plane_bytes, peaks
    assert peaks[50] < 0.5 * planes[50] * plane_bytes, peaks


def test_bad_replace_text_is_a_message_not_a_traceback(make_napari_viewer, qtbot, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    sections = _open(viewer, _shifted_folder(tmp_path, shape=(64, 80)))
    w = panel.show_tab("Interpolate")
    w.layer.value = sections
    before = len(notification_manager.records)
    w.replace.value = "3,x"
    qtbot.wait(3 * 150)
    assert w.progress.status.value.startswith("'3,x' is not a list of z numbers")
    w.run()  # the button says the same, once
    qtbot.wait(50)
    new = [str(n.message) for n in notification_manager.records[before:]]
    assert new == [
        "'3,x' is not a list of z numbers; write whole numbers separated by commas, like 12, 31."
    ]
    w.replace.value = "9"
    qtbot.wait(3 * 150)
    assert w.progress.status.value.startswith("Cannot replace z 9: no such section")
    w.replace.value = "2"  # a good value: section 2 regenerated from 1 and 3
    qtbot.waitUntil(lambda: w.result_layer is not None, timeout=10000)
    hv = w.result_layer.metadata["histovol"]
    assert hv["synthetic"][2] and hv["extra"]["planes"][2]["replaces"] == 2


def test_interpolate_computes_and_writes_the_plugins_own_ome_zarr(
    make_napari_viewer, qtbot, tmp_path
):
    zarr = tmp_path / "case.ome.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vol = read_volume(
            _shifted_folder(tmp_path, shape=(96, 128)), pixel_size=0.5, section_spacing=4
        )
    write_volume(vol, zarr, n_levels=2)
    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    layer = _open(viewer, zarr)
    assert layer.multiscale
    w = panel.show_tab("Interpolate")
    w.layer.value = layer
    w.frames.value = 2
    qtbot.waitUntil(lambda: w.result_layer is not None, timeout=10000)
    live = w.result_layer
    lazy = np.asarray(live.data)  # the lazy layer, computed here for reference

    w.run()  # no output path: computed into memory
    qtbot.waitUntil(
        lambda: isinstance(live.data, np.ndarray) and w.run_button.enabled, timeout=30000
    )
    assert viewer.layers[f"{layer.name} interpolated"] is live
    assert live.data.shape == (10, 96, 128, 3)
    np.testing.assert_array_equal(live.data, lazy)
    assert w.progress.status.value.startswith("in memory: 10 planes (6 generated)")

    out = tmp_path / "out.ome.zarr"
    w.output.value = str(out)
    w.run()
    qtbot.waitUntil(lambda: w.run_button.enabled and out.exists(), timeout=30000)
    written = read_volume(out)
    assert written.meta.synthetic == tuple(live.metadata["histovol"]["synthetic"])
    assert written.meta.scale == pytest.approx((4 / 3, 0.5, 0.5))
    np.testing.assert_array_equal(written.data.compute(), lazy)
    assert w.progress.status.value.startswith(f"wrote {out}")

    # an existing output is replaced only after a confirmation
    asked = []
    w._confirm_overwrite = lambda p: asked.append(p) or False  # the dialog says No
    w.frames.value = 1
    w.run()
    assert asked == [out] and w.progress.status.value.startswith("not written")
    assert read_volume(out).shape[0] == 10
    w._confirm_overwrite = lambda p: True  # Yes
    w.run()
    qtbot.waitUntil(
        lambda: w.run_button.enabled and w.progress.status.value.startswith("wrote"), timeout=30000
    )
    assert read_volume(out).shape[0] == 7

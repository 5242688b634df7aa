"""The HistoVol panel in a real viewer (Xvfb): it fits a 1000 px window, names the section
under the slider (after a gap, for a generated plane), sets the scale of an open stack, reports
a failed job once, and every tool works on the plugin's own multiscale OME-Zarr output."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_histovol._layers import add_volume_layer, layer_volume, world_z
from napari_histovol.core.interpolate import interpolate
from napari_histovol.core.io import read_volume, write_volume

from .conftest import tissue, write_image

pytestmark = pytest.mark.gui


@pytest.fixture
def stained_folder(tmp_path):
    """Sections 1, 2, 4 (3 missing) named by stain, as slide scanners export them."""
    d = tmp_path / "case"
    d.mkdir()
    for z, stain in ((1, "HE"), (2, "CD31"), (4, "Ki67")):
        write_image(d / f"case7_{stain}_s{z:02d}.png", tissue((96, 128), z, rgb=True))
    return d


def _panel(viewer):
    # docked as a user docks it, from the Plugins menu: napari hands it a PublicOnlyProxy
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    return panel


def test_panel_has_every_tool_and_fits_1000_px(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    titles = [panel.tabs.tabText(i) for i in range(panel.tabs.count())]
    assert titles == [
        "Stitch",
        "Sections",
        "Align",
        "QC",
        "Interpolate",
        "Isotropic",
        "Build",
        "3D",
        "Segment",
        "Focus",
        "Gaussians",
    ]
    assert panel.minimumSizeHint().height() <= 1000
    assert panel.sizeHint().height() <= 1000


def test_section_under_the_slider_is_named_after_a_gap_and_for_a_generated_plane(
    make_napari_viewer, stained_folder
):
    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    sections = panel.show_tab("Sections")
    layer = viewer.open(str(stained_folder), plugin="napari-histovol")[0]
    sections.layer.value = layer
    assert sections.list.count() == 4  # 1, 2, the gap 3, 4
    viewer.dims.set_point(0, world_z(layer, 1))
    assert sections.current.value == "section 2 · CD31 · case7_CD31_s02.png"
    viewer.dims.set_point(0, float(layer.translate[0]) + 2 * float(layer.scale[0]))
    assert sections.current.value == "section 3 · missing (a gap in the numbering)"
    from napari_histovol._widgets._common import text_overlay

    assert text_overlay(viewer).visible and "section 3" in text_overlay(viewer).text
    viewer.dims.ndisplay = 3  # a plane's name does not belong over a 3D view
    assert not text_overlay(viewer).visible
    viewer.dims.ndisplay = 2
    assert text_overlay(viewer).visible
    viewer.dims.order = (1, 0, 2)  # an x-z view: the slider is y, no section is under it
    assert not text_overlay(viewer).visible and sections.current.value == ""
    viewer.dims.order = (0, 1, 2)
    assert text_overlay(viewer).visible
    viewer.dims.set_point(0, world_z(layer, 2))
    assert sections.current.value.startswith("section 4 · Ki67")
    # a generated plane names the sections it was made from
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filled = interpolate(layer_volume(layer), frames_between=1, method="linear").volume
    (made,) = add_volume_layer(viewer, filled, name="filled")
    viewer.layers.selection.active = made
    viewer.dims.set_point(0, world_z(made, 1))
    assert sections.refresh() == (
        "plane z 2 · synthetic between section 1 (HE) and section 2 (CD31), t = 0.50"
    )
    # planes sit at their physical z: section 2 of both layers at the same world z
    assert world_z(made, 2) == pytest.approx(world_z(layer, 1))


def test_scale_set_on_an_open_stack(make_napari_viewer, stained_folder):
    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    sections = panel.show_tab("Sections")
    layer = viewer.open(str(stained_folder), plugin="napari-histovol")[0]
    sections.layer.value = layer
    sections.pixel_size.value = 0.5
    sections.spacing.value = 4.0
    sections.set_scale()
    assert tuple(layer.scale) == pytest.approx((4.0, 0.5, 0.5))
    assert tuple(layer.translate)[0] == pytest.approx(4.0)  # section 1 at 1 x 4 µm
    assert [str(u) for u in layer.units] == ["micrometer"] * 3
    vol = layer_volume(layer)
    assert vol.meta.scale == pytest.approx((4.0, 0.5, 0.5)) and vol.meta.scale_known


def test_an_em_scale_is_kept_and_the_section_under_the_slider_stays_in_view(
    make_napari_viewer, stained_folder, monkeypatch
):
    """EM: 4 nm pixels and 50 nm sections. The boxes showed two decimals, so 0.004 became 0
    and 'Set the scale' raised; and after a scale change the slider pointed between planes,
    so the canvas went black until it was moved."""
    from napari.utils import notifications

    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    sections = panel.show_tab("Sections")
    layer = viewer.open(str(stained_folder), plugin="napari-histovol")[0]
    sections.layer.value = layer
    viewer.dims.set_point(0, world_z(layer, 1))  # section 2 (CD31)
    sections.pixel_size.native.setValue(0.004)  # as typed
    sections.spacing.native.setValue(0.05)
    assert sections.pixel_size.value == pytest.approx(0.004)
    sections.set_scale()
    assert tuple(layer.scale) == pytest.approx((0.05, 0.004, 0.004))
    assert viewer.dims.point[0] == pytest.approx(world_z(layer, 1))
    assert sections.current.value.startswith("section 2 · CD31")
    shot = viewer.screenshot(canvas_only=True)[..., :3].astype(float)
    assert shot.std() > 10  # the section is drawn, not a black canvas
    # a scale the core refuses: one notification, no exception, the layer unchanged
    told: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda text: told.append(text))
    monkeypatch.setattr(type(layer_volume(layer).meta), "with_scale", _refuse)
    sections.set_scale()
    assert len(told) == 1 and "positive" in told[0]
    assert tuple(layer.scale) == pytest.approx((0.05, 0.004, 0.004))


def _refuse(self, **_):
    from napari_histovol.core.errors import InputError

    raise InputError("The pixel size must be a positive number of micrometres, not 0.0.")


def test_a_failed_job_is_reported_once_with_its_reason(make_napari_viewer, qtbot):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    align = panel.show_tab("Align")
    blank = viewer.add_image(np.full((3, 64, 64), 7, np.uint8), name="blank")
    align.layer.value = blank
    before = len(notification_manager.records)
    align.run()
    qtbot.waitUntil(lambda: align.run_button.enabled, timeout=60000)
    qtbot.wait(200)
    new = notification_manager.records[before:]
    errors = [str(n.message) for n in new if str(n.severity).lower().endswith("error")]
    assert errors == ["Every section looks blank; there is nothing to register."], new
    assert align.progress.status.value.startswith("failed: Every section looks blank")


def test_every_tool_works_on_the_plugins_own_multiscale_ome_zarr(
    make_napari_viewer, qtbot, stained_folder, tmp_path
):
    zarr = tmp_path / "case.ome.zarr"
    write_volume(read_volume(stained_folder, pixel_size=0.5, section_spacing=4), zarr, n_levels=2)
    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    layer = viewer.open(str(zarr), plugin="napari-histovol")[0]
    assert layer.multiscale and type(layer.data).__name__ == "MultiScaleData"
    assert [str(u) for u in layer.units] == ["micrometer"] * 3

    align = panel.show_tab("Align")
    align.layer.value = layer
    align.reg_size.value = 64
    align.run()
    qtbot.waitUntil(lambda: align.result is not None and align.run_button.enabled, timeout=60000)
    out = viewer.layers[f"{layer.name} aligned"]
    assert out.data.shape[0] == 4 and tuple(out.scale) == pytest.approx((4, 0.5, 0.5))
    assert [str(u) for u in out.units] == ["micrometer"] * 3

    focus = panel.show_tab("Focus")
    focus.layer.value = layer
    focus.tile.value = 32
    focus.run()
    qtbot.waitUntil(lambda: focus.report is not None and focus.run_button.enabled, timeout=60000)
    assert [p["z"] for p in focus.report["planes"]] == [1, 2, 4]
    assert focus.map_layer.data.shape[0] == 4  # on the layer's grid, the gap included

    sections = panel.show_tab("Sections")
    sections.layer.value = layer
    viewer.dims.set_point(0, world_z(layer, 2))
    assert sections.current.value.startswith("section 4 · Ki67")

    iso = panel.show_tab("Isotropic")
    iso.layer.value = layer
    iso.factor.value = 2
    iso.time_budget.value = 5
    iso.run()
    qtbot.waitUntil(lambda: iso.result is not None and iso.run_button.enabled, timeout=60000)
    out = viewer.layers[f"{layer.name} isotropic"]
    # z 1, 2, 4 at 4 µm, two planes per spacing: 7 planes 2 µm apart, the missing 3 rebuilt
    assert out.data.shape[0] == 7 and tuple(out.scale)[-3:] == pytest.approx((2, 0.5, 0.5))
    assert out.metadata["histovol"]["synthetic"] == [False, True, False, True, True, True, False]
    assert [str(u) for u in out.units][-3:] == ["micrometer"] * 3


def test_focus_on_a_single_slide(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    panel = _panel(viewer)
    focus = panel.show_tab("Focus")
    slide = viewer.add_image(tissue((256, 320), 3, rgb=True), rgb=True, name="slide")
    focus.layer.value = slide
    focus.tile.value = 64
    focus.run()
    qtbot.waitUntil(lambda: focus.report is not None and focus.run_button.enabled, timeout=60000)
    assert focus.map_layer.data.shape == (4, 5)  # one map over the slide
    assert not focus.progress.status.value.startswith("failed")


def test_every_tab_fits_a_dock_400_px_wide(make_napari_viewer):
    """The Align tab's landmark hint set its page 476 px wide: in a normal dock the flags
    column and the right ends of its controls were cut off behind a scroll bar (helper's
    journey). Long labels wrap; every tab's page fits 400 px."""
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    QApplication.processEvents()
    widths = {
        panel.tabs.tabText(i): panel.tabs.widget(i).widget().minimumSizeHint().width()
        for i in range(panel.tabs.count())
    }
    assert max(widths.values()) <= 400, widths

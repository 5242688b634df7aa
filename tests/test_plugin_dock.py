"""The tabs as a user docks them: from the Plugins menu, where napari hands each widget a
``PublicOnlyProxy`` of the viewer (the tests that build a widget on the viewer itself did not
see what that broke)."""

import numpy as np
import pytest

from .conftest import tissue

pytestmark = pytest.mark.gui


def _docked(viewer, name):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-histovol", name)
    return widget


def test_the_interpolate_slider_docked_from_the_menu_always_starts_from_the_sections(
    make_napari_viewer, qtbot
):
    """Docked from the menu, every slider move re-interpolated the previous result: 19, 37,
    145 planes for 2, 1, 3 frames (a helper's journey), and selecting the result in the layer
    list made it the input."""
    viewer = make_napari_viewer(show=True)
    stack = np.stack([tissue((48, 56), i, dtype=np.uint8) for i in range(3)])
    sections = viewer.add_image(stack, name="sections", scale=(6.0, 0.5, 0.5))
    w = _docked(viewer, "Interpolate sections")
    assert w.layer.value is sections
    for frames in (2, 1, 3, 0, 2):
        w.frames.value = frames
        want = 2 * (frames + 1) + 1
        qtbot.waitUntil(
            lambda want=want: w.result_layer is not None and w.result_layer.data.shape[0] == want,
            timeout=30000,
        )
        qtbot.wait(400)  # a second rebuild (from the result) would land here
        assert w.result_layer.data.shape[0] == want
        assert w.layer.value is sections
        assert [lay.name for lay in viewer.layers] == ["sections", "sections interpolated"]
    result = w.result_layer
    viewer.layers.selection.active = result  # the user looks at the result
    qtbot.wait(800)
    assert w.result_layer is result and result.data.shape[0] == 7
    assert w.layer.value is not result


def test_the_3d_tab_docked_from_the_menu_shows_the_stack_once(make_napari_viewer, qtbot):
    """Docked from the menu, "Show in 3D" removed and re-made its colour layers 841 times in a
    minute and the canvas stayed black."""
    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(0)
    rgb = (rng.random((6, 48, 48, 3)) * 255).astype(np.uint8)
    layer = viewer.add_image(rgb, rgb=True, name="sections", scale=(4.0, 1.0, 1.0))
    w = _docked(viewer, "3D view")
    assert w.layer.value is layer
    shown = w.show_3d()
    added = list(viewer.layers)
    qtbot.wait(1500)
    assert list(viewer.layers) == added  # nothing removed and re-made since
    assert viewer.dims.ndisplay == 3 and all(lay.visible for lay in shown)
    assert w.layer.value is layer
    shot = viewer.screenshot(canvas_only=True)
    assert shot[..., :3].std() > 5  # not a black canvas


def test_after_align_the_other_tabs_take_the_aligned_stack_and_align_keeps_its_input(
    make_napari_viewer, qtbot
):
    """napari selects the aligned stack Align adds; clicking an already selected layer fires
    nothing, so QC, Isotropic and 3D waited on the raw stack and a user ran QC on it unaligned
    (helper's journey). Align's own box keeps the raw stack, so Align again is not Align of the
    aligned; a focus map is no tab's input."""
    viewer = make_napari_viewer(show=True)
    stack = np.stack([tissue((64, 64), i, dtype=np.uint8) for i in range(4)])
    raw = viewer.add_image(stack, name="em", scale=(0.05, 0.004, 0.004))
    panel = _docked(viewer, "HistoVol")
    align = panel.show_tab("Align")
    assert align.layer.value is raw
    align.reg_size.value = 64
    align.run()
    qtbot.waitUntil(lambda: align.result is not None and align.run_button.enabled, timeout=60000)
    aligned = viewer.layers["em aligned"]
    assert viewer.layers.selection.active is aligned
    assert align.layer.value is raw
    for title in ("QC", "Isotropic", "3D", "Segment", "Interpolate", "Focus"):
        assert panel.tools[title].layer.value is aligned, title
    focus = panel.show_tab("Focus")
    focus.tile.value = 32
    focus.run()
    qtbot.waitUntil(lambda: focus.report is not None and focus.run_button.enabled, timeout=60000)
    assert focus.map_layer is not None
    for title in ("QC", "Isotropic", "3D", "Segment", "Interpolate", "Focus", "Align"):
        assert panel.tools[title].layer.value is not focus.map_layer, title


def test_the_build_tab_keeps_an_em_pixel_size_and_section_spacing(make_napari_viewer):
    """Two decimals turned 0.004 µm into 0.00, read as 'the file's' size: an EM build came
    out at 1 µm pixels, a flat sheet in 3D (helper's journey)."""
    viewer = make_napari_viewer(show=True)
    build = _docked(viewer, "Build volume")
    build.pixel_size.value = 0.004
    build.spacing.value = 0.05
    assert build.pixel_size.value == pytest.approx(0.004)
    assert build.spacing.value == pytest.approx(0.05)
    sections = _docked(viewer, "Sections")
    sections.spacing.value = 0.006
    assert sections.spacing.value == pytest.approx(0.006)


def test_the_interpolate_box_keeps_its_sections_while_the_user_looks_around(
    make_napari_viewer, qtbot
):
    """Selecting the live layer to look at it, leaving 3D (which re-selects a layer) or QC
    replacing its masks switched the Interpolate box to its own result, and the slider froze;
    picking the raw stack rebuilt the layer named '... aligned interpolated' from it
    (helper's journey)."""
    viewer = make_napari_viewer(show=True)
    stack = np.stack([tissue((48, 56), i, dtype=np.uint8) for i in range(3)])
    raw = viewer.add_image(stack + 1, name="raw", scale=(6.0, 0.5, 0.5))
    sections = viewer.add_image(stack, name="sections", scale=(6.0, 0.5, 0.5))
    panel = _docked(viewer, "HistoVol")
    w = panel.show_tab("Interpolate")
    assert w.layer.value is sections

    def frames(n):
        w.frames.value = n
        qtbot.waitUntil(
            lambda: w.result_layer is not None and w.result_layer.data.shape[0] == 2 * n + 3,
            timeout=30000,
        )

    frames(2)
    live = w.result_layer
    viewer.layers.selection.active = live  # the user looks at the result
    assert w.layer.value is sections
    frames(1)
    view3d = panel.show_tab("3D")
    view3d.layer.value = live
    view3d.show_3d()
    viewer.dims.ndisplay = 2  # back to the slides: the 3D tab re-selects its source
    assert w.layer.value is sections
    frames(3)
    viewer.layers.selection.active = raw  # the user picks the raw stack
    assert w.layer.value is raw
    qtbot.waitUntil(lambda: "raw interpolated" in viewer.layers, timeout=30000)
    assert live.name == "sections interpolated" and live.data.shape[0] == 9  # untouched


def test_the_interpolate_box_does_not_follow_to_a_volume_with_generated_planes(
    make_napari_viewer, qtbot
):
    """After a build, napari selected the built volume, the Interpolate box followed it and
    the tab interpolated it again on its own (181 planes between interpolated ones); a user
    who means it still chooses it in the box."""
    from napari_histovol._layers import add_volume_layer
    from napari_histovol.core.io import Volume, VolumeMeta

    viewer = make_napari_viewer(show=True)
    stack = np.stack([tissue((48, 56), i, dtype=np.uint8) for i in range(3)])
    sections = viewer.add_image(stack, name="sections", scale=(6.0, 0.5, 0.5))
    panel = _docked(viewer, "HistoVol")
    w = panel.show_tab("Interpolate")
    assert w.layer.value is sections
    meta = VolumeMeta(z_numbers=(1, 2, 3), synthetic=(False, True, False)).with_planes(3)
    (built,) = add_volume_layer(viewer, Volume(stack, meta), name="sections volume")
    viewer.layers.selection.active = built  # as napari selects a layer it adds
    assert w.layer.value is sections
    w.layer.value = built  # chosen in the box: taken
    assert w.layer.value is built

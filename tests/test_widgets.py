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


def test_interpolate_widget_preview_and_run(make_napari_viewer, qtbot):
    from napari_histovol._widgets.interpolate_widget import InterpolateWidget

    from .conftest import tissue

    stack = np.stack([tissue((64, 80), i, dtype=np.uint16) for i in range(3)])
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(stack, name="sec", scale=(6.0, 0.5, 0.5))
    w = InterpolateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    w.pair.value = 1
    w.t.value = 0.5
    w.preview()
    qtbot.waitUntil(
        lambda: "interpolation preview" in viewer.layers and w.run_button.enabled, timeout=60000
    )
    assert viewer.layers["interpolation preview"].data.shape == (64, 80)
    w.frames.value = 2
    w.run()
    qtbot.waitUntil(lambda: w.result_layer is not None and w.run_button.enabled, timeout=60000)
    out = w.result_layer
    assert out.data.shape == (7, 64, 80) and out.data.dtype == np.uint16
    assert tuple(out.scale) == pytest.approx((2.0, 0.5, 0.5))
    assert out.metadata["histovol"]["synthetic"] == [False, True, True, False, True, True, False]
    np.testing.assert_array_equal(out.data[3], stack[1])
    viewer.dims.set_current_step(0, 1)
    from napari_histovol._widgets.interpolate_widget import _text_overlay

    assert "synthetic" in _text_overlay(viewer).text

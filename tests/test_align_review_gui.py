"""Landmark review and carried annotations in the Align widget, in a real viewer (Xvfb)."""

import numpy as np
import pytest

from .test_align import he_section, moved, rigid

pytestmark = pytest.mark.gui


@pytest.fixture
def aligned_widget(make_napari_viewer, qtbot):
    from napari_histovol._widgets.align_widget import AlignWidget

    img = he_section(192)
    rng = np.random.default_rng(0)
    truths = [rigid(0, 0, 0, (192, 192)), rigid(8, 6, -4, (192, 192)), rigid(-6, -5, 3, (192, 192))]
    stack = np.stack([moved(img, t, rng) for t in truths])
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(stack, rgb=True, name="sections", scale=(4, 0.5, 0.5))
    widget = AlignWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    widget.reference.value = "first"
    widget.run()
    qtbot.waitUntil(lambda: widget.result is not None and widget.run_button.enabled, timeout=60000)
    return viewer, widget


def test_landmark_correction_moves_the_section_and_fills_the_table(aligned_widget):
    viewer, widget = aligned_widget
    widget.reference_z.value = "0"
    widget.moving_z.value = "1"
    widget.make_landmark_layers()
    mov, ref = viewer.layers["landmarks moving"], viewer.layers["landmarks reference"]
    assert viewer.layers.selection.active is mov and mov.mode == "add"
    ys, xs = np.meshgrid([40.0, 90, 140], [40.0, 100, 150], indexing="ij")
    yx = np.c_[ys.ravel(), xs.ravel()]
    # the user says: section 1's tissue at yx is where section 0 shows it 3 px right, 2 px down
    ref.data = np.c_[np.zeros(len(yx)), yx + [2.0, 3.0]]
    mov.data = np.c_[np.ones(len(yx)), yx]
    before = widget.result.transforms[1].matrix.copy()
    widget.lm_follow.value = "neighbours follow"
    widget.correct_from_landmarks()
    assert widget.lm_table.rowCount() == len(yx)
    assert float(widget.lm_table.item(0, 1).text()) == pytest.approx(np.hypot(2, 3), abs=0.01)
    assert float(widget.lm_table.item(0, 2).text()) < 0.01
    # the moving landmarks now sit on the reference's, and section 2 moved with section 1
    np.testing.assert_allclose(np.asarray(mov.data)[:, 1:], np.asarray(ref.data)[:, 1:], atol=1e-6)
    t1 = widget.result.transforms[1]
    src_pt = (before @ [100.0, 90.0, 1])[:2]  # what section 1 showed at aligned (100, 90)
    np.testing.assert_allclose(t1.source_to_aligned(src_pt)[0], [103, 92], atol=1e-6)
    assert widget.landmark_result.moved == [1, 2]
    out = viewer.layers["sections aligned"]
    assert len(out.metadata["transforms"]) == 3
    assert "-> 0.00 px" in widget.lm_status.value


def test_points_and_shapes_carried_into_the_aligned_volume_and_back(aligned_widget):
    viewer, widget = aligned_widget
    src = viewer.layers["sections"]
    pts = np.array([[1, 60.0, 70.0], [2, 100.0, 120.0], [0, 50.0, 50.0]])
    drawn = viewer.add_points(pts, name="cells", scale=src.scale)
    widget.carry_layer.reset_choices()
    widget.carry_layer.value = drawn
    fwd = widget.carry(inverse=False)
    assert fwd.name == "cells aligned" and tuple(fwd.scale) == tuple(src.scale)
    for (z, y, x), (z2, y2, x2) in zip(pts, np.asarray(fwd.data), strict=True):
        t = widget.result.transforms[int(z)]
        assert z2 == z
        np.testing.assert_allclose(t.aligned_to_source(np.array([[x2, y2]]))[0], [x, y], atol=1e-3)
    assert np.abs(np.asarray(fwd.data) - pts)[:2].max() > 2  # sections 1, 2 were moved
    widget.carry_layer.reset_choices()
    widget.carry_layer.value = fwd
    back = widget.carry(inverse=True)
    np.testing.assert_allclose(np.asarray(back.data), pts, atol=1e-3)
    box = np.array([[1, 40.0, 40], [1, 40, 90], [1, 80, 90], [1, 80, 40]])
    shapes = viewer.add_shapes([box, box], shape_type=["rectangle", "ellipse"], scale=src.scale)
    widget.carry_layer.reset_choices()
    widget.carry_layer.value = shapes
    out = widget.carry()
    assert list(out.shape_type) == ["polygon", "polygon"] and len(out.data[1]) == 48
    t = widget.result.transforms[1]
    got = t.aligned_to_source(np.asarray(out.data[0])[:, [2, 1]])
    np.testing.assert_allclose(got, box[:, [2, 1]], atol=1e-3)

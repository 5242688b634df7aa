"""The Segment widget in a real viewer (Xvfb): two DAB-stained ellipsoids of known voxels joined
by a bridge, in real H&E texture. A click added through the prompts layer (as a user's click
adds it) segments the clicked section at once and then the volume; a Shift-click (negative)
on the second ellipsoid removes the leak; undo brings it back; the labels are written at the
image's scale and the volumes table holds µm³."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from .conftest import SHARED_DATA

pytestmark = pytest.mark.gui

SHAPE = (12, 64, 112)
SCALE = (2.0, 0.5, 0.25)  # µm: one voxel is 0.25 µm³


def _ellipsoid(centre, radii) -> np.ndarray:
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii, strict=True)) < 1


def dice(a, b) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@pytest.fixture
def bridged_objects():
    import tifffile

    path = SHARED_DATA / "skin_he_2d" / "skin.tif"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    skin = tifffile.imread(path)[..., :3]
    y0, x0 = skin.shape[0] // 3, skin.shape[1] // 3
    nz, ny, nx = SHAPE
    img = np.stack([skin[y0 + 2 * z : y0 + 2 * z + ny, x0 : x0 + nx] for z in range(nz)])
    img = img.astype(np.float32)
    a = _ellipsoid((6, 32, 32), (5, 14, 16))
    b = _ellipsoid((6, 32, 78), (5, 14, 16))
    bridge = _ellipsoid((6, 32, 55), (4, 11, 12))
    rng = np.random.default_rng(3)
    tex = ndi.gaussian_filter(rng.normal(0, 1, SHAPE), 1.0)[..., None] * 40
    fg = a | b | bridge
    img[fg] = (np.array([150.0, 95.0, 45.0]) + tex[fg]).clip(0, 255)
    return img.clip(0, 255).astype(np.uint8), a, b, fg


def _labels(w) -> np.ndarray:
    return np.asarray(w.objects.data)


def _started_on(make_napari_viewer, img, scale):
    """A Segment tab docked in a shown viewer, started on ``img`` (µm at ``scale``)."""
    from napari_histovol._widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(img, scale=scale, units="micrometer", name="nuclei")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = image
    w.start()
    return w


def test_segment_widget_clicks_leak_undo_and_volumes(
    make_napari_viewer, qtbot, bridged_objects, tmp_path, monkeypatch
):
    from napari_histovol._widgets import segment_widget
    from napari_histovol._widgets.segment_widget import SegmentWidget
    from napari_histovol.core.io import read_volume

    img, a, b, fg = bridged_objects
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(img, rgb=True, scale=SCALE, units="micrometer", name="stack")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = image
    w.start()
    assert w.points is viewer.layers.selection.active and w.points.mode == "add"
    assert tuple(w.objects.scale) == SCALE and tuple(w.objects.translate) == tuple(image.translate)
    assert w.objects.data.shape == SHAPE

    # a click in section 6 on the first ellipsoid: that section first, then the volume
    sections: list[int] = []
    real_section = w.session.segment_section

    def section(obj, z):
        sections.append(z)
        return real_section(obj, z)

    monkeypatch.setattr(w.session, "segment_section", section)
    w.points.add([6, 32, 32])
    assert not w.points.features["positive"].isna().any() and w.points.features["positive"][0]
    qtbot.waitUntil(lambda: sections == [6] and _labels(w)[6].any(), timeout=20000)
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    lab = _labels(w) == 1
    # the stain region the click is in (the ellipsoids and their bridge), through the volume
    assert dice(lab[6], fg[6]) >= 0.9
    assert dice(lab, fg) >= 0.9
    assert (lab & b).sum() > 0.5 * b.sum()  # the leak into the second ellipsoid
    first = lab.copy()

    # Shift-click (negative) on the second ellipsoid, the toggle left on positive
    monkeypatch.setattr(segment_widget, "_flip_held", lambda: True)
    w.points.add([6, 32, 80])
    monkeypatch.setattr(segment_widget, "_flip_held", lambda: False)
    assert not w.points.features["positive"][1]
    assert w.info.value.startswith("object 1: 1 positive, 1 negative click(s)")
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    fixed = _labels(w) == 1
    assert (fixed & b).sum() < 0.1 * b.sum()
    assert (fixed & a).sum() > 0.9 * a.sum()
    assert dice(fixed, a) >= 0.75  # a and its half of the bridge
    assert len(w.prompts) == 2 and not w.prompts[1].positive

    # undo: the negative click goes from the layer and the leak comes back
    w.undo()
    assert len(w.points.data) == 1 and len(w.prompts) == 1
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    again = _labels(w) == 1
    assert dice(again, first) >= 0.95

    # the volumes table in µm³ and the labels written at the image's scale
    table = tmp_path / "volumes.csv"
    w.table_path.value = str(table)
    assert w.save_table() == table
    rows = table.read_text().splitlines()
    assert rows[0] == "object,voxels,volume_um3"
    obj, voxels, um3 = rows[1].split(",")
    assert int(obj) == 1 and int(voxels) == int(again.sum())
    assert float(um3) == pytest.approx(again.sum() * 0.25, rel=1e-5)

    out = tmp_path / "objects.ome.zarr"
    w.output.value = str(out)
    w.write_labels()
    qtbot.waitUntil(lambda: w.progress.worker is None, timeout=20000)
    written = read_volume(out)
    assert w.info.value == "labels written to objects.ome.zarr"  # not the undo's message
    assert np.array_equal(np.asarray(written.data), _labels(w))
    assert tuple(written.meta.scale) == pytest.approx(SCALE)

    # an existing output is not replaced without a yes
    before = table.read_text()
    monkeypatch.setattr(SegmentWidget, "_confirm_overwrite", lambda self, path: False)
    w.negative.value = True  # a new negative click by the toggle: its object gets smaller
    w.points.add([6, 32, 80])
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    assert w.save_table() is None and table.read_text() == before
    assert "exists already" in w.info.value
    w.write_labels()
    assert w.info.value == "not written: 'objects.ome.zarr' exists already"
    assert w.progress.status.value == w.info.value  # not "wrote objects.ome.zarr"
    # the file keeps the object as it was before the negative click
    assert not np.array_equal(np.asarray(read_volume(out).data), _labels(w))


def test_scribbles_alone_segment_an_object(make_napari_viewer, qtbot):
    """Scribbles painted in the layer (1 on a ball, 9 on the background; with no click every
    scribbled label is an object) and 'Segment all objects': the ball through the volume."""
    from napari_histovol._widgets.segment_widget import SegmentWidget

    rng = np.random.default_rng(0)
    img = (rng.random((6, 48, 48)) * 40).astype(np.float32)
    zz, yy, xx = np.mgrid[:6, :48, :48]
    ball = ((zz - 3) / 3) ** 2 + ((yy - 24) / 10) ** 2 + ((xx - 20) / 10) ** 2 < 1
    img[ball] += 150
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(img, scale=(2, 0.5, 0.5), units="micrometer")
    w = SegmentWidget(viewer)
    w.layer.value = image
    w.start()
    w.scribbles.data[3, 22:26, 18:22] = 1
    w.scribbles.data[3, 2:5, 40:46] = 9
    w.scribbles.events.data()
    w.segment_all()
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=20000)
    lab = np.asarray(w.objects.data)
    assert set(np.unique(lab)) <= {0, 1, 9}
    assert dice(lab == 1, ball) >= 0.85
    assert w.table.data.to_list()[0][:2] == [1, int((lab == 1).sum())]


def test_segment_widget_in_3d_on_a_near_isotropic_stack(make_napari_viewer, qtbot):
    """A confocal-like stack scaled in µm with z twice the pixel size: one click segments the
    nucleus in 3D and keeps the nucleus it touches out; the table holds its µm³."""

    from .test_segment_3d import SAMPLING, _nuclei

    img, truth = _nuclei(
        [(12, 30, 26), (12, 30, 46)], [(6, 11, 11), (6, 11, 10)], [0.9, 0.55], shape=(24, 60, 72)
    )
    w = _started_on(make_napari_viewer, img, SAMPLING)
    assert w.session.volumetric
    w.points.add([12, 30, 26])
    qtbot.waitUntil(lambda: (_labels(w) == 1).any(), timeout=20000)
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    got = _labels(w) == 1
    assert dice(got, truth == 1) >= 0.85
    assert (got & (truth == 2)).sum() < 0.05 * (truth == 2).sum()
    row = w.table.data.to_list()[0]
    assert row[:2] == [1, int(got.sum())]
    shown = w.table.native.itemDelegate().displayText("307501", w.table.native.locale())
    assert shown == "307501"  # counts as the CSV writes them, not 3.075e+05
    assert float(row[2]) == pytest.approx(got.sum() * 0.5 * 0.25 * 0.25, rel=1e-3)


def test_segment_panel_wraps_its_messages_and_names_its_own_image_box(make_napari_viewer):
    """A long message wraps inside the dock instead of widening it, and Start with no image
    says which box to fill (not another tab's words)."""
    from qtpy.QtWidgets import QApplication

    from napari_histovol._widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer(show=True)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.info.native.wordWrap()
    w.info.value = "click an object (Shift- or Alt-click: the other kind of click); " * 4
    QApplication.processEvents()
    assert w.native.minimumSizeHint().width() < 600  # unwrapped, this line alone is 1500 px
    from unittest import mock

    with mock.patch("napari.utils.notifications.show_warning") as warn:
        w.start()
    (call,) = warn.call_args_list
    assert call.args[0] == "Open an image, then choose it in the 'image' box of this tab."


def test_write_labels_refuses_to_replace_the_open_image(make_napari_viewer, tmp_path):
    """'Write labels' over the OME-Zarr the image was opened from used to replace it after a
    Replace? yes, while napari kept showing the old image from memory."""
    from napari_histovol._widgets.segment_widget import SegmentWidget
    from napari_histovol.core.io import read_volume, write_volume
    from napari_histovol.core.segment.volume import as_volume

    src = tmp_path / "vol.ome.zarr"
    rng = np.random.default_rng(0)
    write_volume(as_volume(rng.integers(0, 200, (4, 32, 40), dtype=np.uint8)), src)
    before = np.asarray(read_volume(src).data)
    viewer = make_napari_viewer(show=True)
    layer = viewer.open(str(src), plugin="napari-histovol")[0]
    w = SegmentWidget(viewer)
    w.layer.value = layer
    w.start()
    w._confirm_overwrite = lambda path: pytest.fail("asked to replace the input")
    w.output.value = str(src)
    w.write_labels()
    assert "would replace the input" in w.info.value and layer.name in w.info.value
    assert w.progress.worker is None
    np.testing.assert_array_equal(np.asarray(read_volume(src).data), before)


def test_quick_clicks_on_three_nuclei_segment_all_three(make_napari_viewer, qtbot):
    """Clicks on three nuclei in quick succession (a new object each): every one is segmented
    and the queue ends idle. A job's 'finished' signal used to be connected after its worker
    had started; a job that ended first (the volume step of a 3D object takes milliseconds)
    left the queue waiting for it, and a clicked nucleus stayed empty without a word."""

    from .test_segment_3d import SAMPLING, _nuclei

    centres = [(12, 20, 20), (12, 20, 52), (12, 48, 36)]
    img, truth = _nuclei(centres, [(5, 8, 8)] * 3, [0.9, 0.7, 0.8], shape=(24, 68, 72))
    w = _started_on(make_napari_viewer, img, SAMPLING)
    # the GUI thread busy for a moment after each job starts (napari redrawing a layer): a
    # quick job ends before the widget's next line runs
    plain_start = w.progress.start

    def busy_start(worker):
        plain_start(worker)
        time.sleep(0.5)

    w.progress.start = busy_start
    for k, c in enumerate(centres):
        if k:
            w._new_object()
        w.points.add(list(c))
        qtbot.wait(50)  # the user's next click comes while the last one is being segmented
    qtbot.waitUntil(
        lambda: w.progress.worker is None and not w._dirty and w._running is None, timeout=60000
    )
    got = _labels(w)
    for k in (1, 2, 3):
        assert dice(got == k, truth == k) >= 0.8, k
    assert [row[0] for row in w.table.data.to_list()] == [1, 2, 3]


def test_undo_of_an_object_s_only_click_takes_it_out_of_the_volumes_table(
    make_napari_viewer, qtbot, bridged_objects
):
    """Undo cleared object 2 from the labels but the table kept its row (helper's journey):
    the table and the saved CSV disagreed."""
    img, a, b, fg = bridged_objects
    w = _started_on(make_napari_viewer, img[..., 0], SCALE)
    w.points.add([6, 32, 32])
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    w._new_object()
    w.points.add([2, 10, 110])
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    assert [r["object"] for r in w.rows] == [1, 2]
    w.undo()
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    assert not (_labels(w) == 2).any()
    assert [r["object"] for r in w.rows] == [1]
    assert w.table.shape[0] == 1
    # the progress line says so too (it still gave object 2's sections: a helper)
    assert w.progress.status.value == "object 2 removed"


def test_cancel_while_the_clicked_section_is_segmented_stops_the_object(
    make_napari_viewer, qtbot, bridged_objects, monkeypatch
):
    """A helper pressed Cancel while the clicked section was being segmented: that step ran
    to its end, and the volume step then started on its own and labelled all 12 planes."""
    import threading

    img, a, b, fg = bridged_objects
    w = _started_on(make_napari_viewer, img, SCALE)
    started, release, volume_steps = threading.Event(), threading.Event(), []
    real_section = w.session.segment_section

    def slow_section(obj, z):
        started.set()
        release.wait(20)
        return real_section(obj, z)

    real_volume = w.session.iter_segment_object

    def volume(obj):
        volume_steps.append(obj)
        return (yield from real_volume(obj))

    monkeypatch.setattr(w.session, "segment_section", slow_section)
    monkeypatch.setattr(w.session, "iter_segment_object", volume)
    w.points.add([6, 32, 32])
    qtbot.waitUntil(started.is_set, timeout=20000)
    w.progress.cancel.native.click()  # the user's Cancel, during the clicked section
    release.set()
    qtbot.waitUntil(lambda: w.progress.worker is None, timeout=30000)
    qtbot.wait(300)  # a volume step would start on the next turn of the event loop
    assert w.progress.worker is None and not volume_steps
    assert w.progress.status.value == "cancelled"
    assert not _labels(w).any()
    # the click stays: the next click (or Update) segments the object again
    assert len(w.prompts) == 1


def test_closing_the_objects_layer_ends_the_session_and_says_so(
    make_napari_viewer, qtbot, bridged_objects
):
    """A helper deleted the objects layer: later clicks still ran and reported "object 1:
    13 section(s)" with nothing shown and no word why."""
    img, a, b, fg = bridged_objects
    w = _started_on(make_napari_viewer, img, SCALE)
    w.points.add([6, 32, 32])
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=30000)
    w.viewer.layers.remove(w.objects)
    assert w.session is None
    assert w.progress.status.value == "'nuclei objects' was closed: press Start to segment again"
    w.points.add([6, 32, 80])  # a click after it: nothing runs
    qtbot.wait(300)
    assert w.progress.worker is None and "was closed" in w.progress.status.value
    w.start()  # a new session, new layers
    assert w.session is not None and w.objects in w.viewer.layers

"""The Section QC tab in a real viewer (Xvfb): QC of a stack with a fold, a copy and a missing
number that we made ourselves; the strip and the list go to the section, the masks lie over the
fold as a Labels layer on the layer's grid, and one click repairs the fold or replaces the copy
into '<name> restored' (synthetic pixels recorded)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_histovol._layers import add_volume_layer, world_z
from napari_histovol._widgets.qc_widget import KIND_COLOURS
from napari_histovol.core.qc import KINDS, decode_mask, simulate

from .test_qc import as_volume, blob_stack, psnr

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def damaged():
    """Sections 0-9 without 8: a fold at z 3, z 6 a copy of z 5."""
    clean = blob_stack(10)
    a = clean.copy()
    a[3], fold_m = simulate.fold(clean[3], np.random.default_rng(3), strength=1.5)
    a[6] = a[5]
    keep = [0, 1, 2, 3, 4, 5, 6, 7, 9]
    return clean, a[keep], keep, fold_m


def test_qc_tab_flags_goes_to_masks_repairs_and_replaces(make_napari_viewer, qtbot, damaged):

    clean, a, keep, fold_m = damaged
    viewer = make_napari_viewer(show=True)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    qc = panel.show_tab("QC")
    from dataclasses import replace

    vol = as_volume(a, keep)  # at a physical size, so the layers carry micrometres
    vol = type(vol)(vol.data, replace(vol.meta, scale=(2.0, 0.5, 0.5), unit="micrometer"))
    (layer,) = add_volume_layer(viewer, vol, name="stack")
    qc.layer.value = layer
    assert not qc.repair_button.enabled  # nothing to repair before a QC

    qc.run()
    qtbot.waitUntil(lambda: qc.run_button.enabled and qc.report is not None, timeout=60000)
    flagged = {s.z: s.flags for s in qc.report.sections if s.flags}
    assert flagged[3][0] == "fold" and flagged[6] == ["duplicate"] and flagged[8] == ["missing"]
    assert set(flagged) == {3, 6, 8}, flagged  # the clean sections are left alone
    # the strip: one bar per z number (the missing one included), flagged ones over 1
    strip = {z: (score, flag) for z, score, flag in qc.strip.entries}
    assert sorted(strip) == list(range(10))
    assert strip[3][1] == "fold" and strip[3][0] >= 1 and strip[1][1] is None
    # under the pointer, a bar says what it stands for; numbers are written where they fit
    assert qc.strip.tooltip_at(_bar_centre(qc.strip, 3).x()).startswith("section 3: fold")
    assert qc.strip.tooltip_at(_bar_centre(qc.strip, 8).x()).startswith("section 8: missing")
    assert "not flagged" in qc.strip.tooltip_at(_bar_centre(qc.strip, 1).x())
    shown = qc.strip.labelled()
    assert shown[0] == 0 and shown[-1] == 9
    gaps = np.diff(shown) * qc.strip.width() / 10
    assert gaps.min() >= 32 * 0.5 and len(shown) >= 2
    assert [qc.list.item(i).text().split(":")[0] for i in range(qc.list.count())] == [
        "section 3",
        "section 6",
        "section 8",
    ]
    assert qc.progress.status.value.startswith("2 of 9 sections flagged")

    # masks: a Labels layer on the layer's grid (the gap is an empty plane), fold over the fold
    masks = qc.mask_layer
    assert type(masks).__name__ == "Labels"
    assert masks.data.shape == layer.data.shape[:3] == (10, 160, 160)
    assert tuple(masks.scale) == tuple(layer.scale) == (2.0, 0.5, 0.5)
    assert tuple(masks.units) == tuple(layer.units) and str(layer.units[0]) == "micrometer"
    fold_plane = np.asarray(masks.data[3])
    got = fold_plane == KINDS.index("fold") + 1
    assert (got & fold_m).sum() > 0.5 * got.sum() > 0
    assert not np.asarray(masks.data[8]).any()
    # each kind's label in the colour the strip and the list give it (a helper saw a tear
    # cyan in the layer and orange in the list)
    for kind in ("fold", "tear", "debris"):
        rgba = masks.colormap.map(np.array([KINDS.index(kind) + 1]))[0]
        assert np.allclose(rgba[:3] * 255, KIND_COLOURS[kind], atol=1)

    # a click on the strip's bar of z 3 goes there; the list's item of z 6 goes there
    qtbot.mouseClick(qc.strip, _left(), pos=_bar_centre(qc.strip, 3))
    assert viewer.dims.point[0] == pytest.approx(world_z(layer, keep.index(3)))
    assert qc.current_index() == keep.index(3) and qc.strip.current == 3
    assert qc.list.currentItem().text().startswith("section 3:")
    item = qc.list.item(1)
    qc.list.itemClicked.emit(item)
    assert qc.current_index() == keep.index(6)
    # the list follows the slider: a clean section highlights nothing, not the last one clicked
    qc.go_to_z(1)
    assert qc.list.currentRow() == -1 and not qc.list.selectedItems()
    qc.go_to_z(6)
    assert qc.list.currentItem().text().startswith("section 6:")

    # a clean section: nothing to repair, and the status says so (not the last run's line)
    qc.go_to_z(1)
    qc.repair_button.changed.emit(True)
    assert "section 1" in qc.progress.status.value and "nothing" in qc.progress.status.value
    # repair the fold (the slider on z 3): the region becomes the neighbours' interpolation
    qc.go_to_z(3)
    qc.repair_button.changed.emit(True)
    qtbot.waitUntil(lambda: qc.restored_layer is not None and qc.run_button.enabled, timeout=60000)
    restored = qc.restored_layer
    assert restored.name == "stack restored"
    # the repaired section's mask is gone, as its damage is (a helper saw the stale mask of
    # a realigned section hide the repair); it was the only one, so the layer goes
    assert qc.mask_layer is None and "stack QC masks" not in viewer.layers
    # and the list says it was repaired (a helper could not tell after a repair)
    assert qc.list.item(0).text().startswith("section 3:")
    assert qc.list.item(0).text().endswith("[repaired: inpainted]")
    # a line longer than the dock wraps, and shows whole as its tooltip
    assert qc.list.wordWrap() and qc.list.item(0).toolTip() == qc.list.item(0).text()
    assert "repaired" not in qc.list.item(1).text()
    fixed = np.asarray(restored.data[3])
    assert psnr(fixed, clean[3], fold_m) > psnr(a[3], clean[3], fold_m) + 3
    assert np.array_equal(np.asarray(restored.data[2]), a[2])  # others untouched
    meta = restored.metadata["histovol"]
    rec = {r["z"]: r for r in meta["extra"]["restored"]}
    assert rec[3]["action"] == "inpainted" and 0 < rec[3]["synthetic_fraction"] < 0.5
    syn = decode_mask(rec[3]["synthetic_mask"]).astype(bool)
    assert syn[got].all()

    # drop the copy and interpolate it: flagged synthetic, the fold's repair kept
    qc.go_to_z(6)
    qc.replace_button.changed.emit(True)
    qtbot.waitUntil(
        lambda: qc.run_button.enabled and "section 6" in qc.progress.status.value, timeout=60000
    )
    restored = qc.restored_layer
    meta = restored.metadata["histovol"]
    assert {r["z"]: r["action"] for r in meta["extra"]["restored"]} == {
        3: "inpainted",
        6: "replaced",
    }
    synthetic_z = [z for z, syn in zip(meta["z_numbers"], meta["synthetic"], strict=True) if syn]
    assert synthetic_z == [6]
    assert qc.list.item(1).text().endswith("[repaired: replaced]")
    # the copy's replacement is between its neighbours, not the copy of z 5
    err_new = np.abs(np.asarray(restored.data[6], float) - clean[6]).mean()
    err_copy = np.abs(a[keep.index(6)].astype(float) - clean[6]).mean()
    assert err_new < err_copy
    # and the canvas says so (it read only "synthetic (generated plane)": a helper)
    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.sections import plane_label

    label = plane_label(VolumeMeta.from_dict(meta), meta["z_numbers"].index(6))
    assert label.startswith("plane z 6 · section 6 regenerated from section 5"), label


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _bar_centre(strip, i):
    from qtpy.QtCore import QPoint

    w = strip.width() / len(strip.entries)
    return QPoint(int((i + 0.5) * w), strip.height() // 2)


def test_qc_tab_on_one_image_says_it_needs_a_stack(make_napari_viewer, qtbot):

    viewer = make_napari_viewer(show=True)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    qc = panel.show_tab("QC")
    qc.layer.value = viewer.add_image(blob_stack(1)[0], name="one slide")
    qc.run()
    qtbot.waitUntil(lambda: "only 1 section" in str(qc.progress.status.value), timeout=30000)
    assert qc.report is None


def test_qc_of_a_clean_stack_adds_no_empty_masks_layer(make_napari_viewer, qtbot):

    viewer = make_napari_viewer(show=True)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    qc = panel.show_tab("QC")
    qc.layer.value = viewer.add_image(blob_stack(8), name="clean")
    qc.run()
    qtbot.waitUntil(lambda: qc.run_button.enabled and qc.report is not None, timeout=60000)
    assert not qc.report.flagged_z
    assert qc.progress.status.value.startswith("0 of 8 sections flagged")
    assert qc.mask_layer is None and "clean QC masks" not in viewer.layers


def test_the_list_names_a_built_volumes_planes_by_plane_and_file():
    """A built volume's planes are renumbered 1..N: its list says 'plane z 16 (s06.png)',
    not 'section 16' (the canvas calls that section 6)."""
    from napari_histovol._widgets.qc_widget import _section_name
    from napari_histovol.core.io import VolumeMeta
    from napari_histovol.core.qc import SectionQC

    sec = SectionQC(z=16, file="s06.png", flags=["fold"])
    built = VolumeMeta(extra={"interpolation": {"frames_between": 2}})
    assert _section_name(sec, built) == "plane z 16 (s06.png)"
    assert _section_name(sec, VolumeMeta()) == "section 16"
    generated = SectionQC(z=5, synthetic=True)  # 'Section 5 has no QC flag' (helper)
    assert _section_name(generated, built) == "plane z 5 (generated)"


def test_closing_the_layer_while_qc_runs_cancels_it_and_adds_nothing(
    make_napari_viewer, qtbot, monkeypatch
):
    """A helper closed the image while QC ran: when the job ended, selecting the closed
    layer raised ValueError, and a masks layer was added for a layer that was gone."""
    import threading

    from napari_histovol._widgets import qc_widget

    viewer = make_napari_viewer(show=True)
    _dock, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    qc = panel.show_tab("QC")
    stack = viewer.add_image(blob_stack(8), name="damaged")
    qc.layer.value = stack
    started, release = threading.Event(), threading.Event()
    real = qc_widget.iter_section_qc

    def slow(volume):
        started.set()
        release.wait(20)
        return (yield from real(volume))

    monkeypatch.setattr(qc_widget, "iter_section_qc", slow)
    qc.run()
    qtbot.waitUntil(started.is_set, timeout=20000)
    viewer.layers.remove(stack)
    release.set()
    qtbot.waitUntil(lambda: qc.run_button.enabled, timeout=60000)
    assert qc.progress.status.value == "cancelled: 'damaged' was closed"
    assert qc.report is None and [ly.name for ly in viewer.layers] == []

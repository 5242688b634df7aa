"""'Section QC' dock widget: damage flags of every section (fold, tear, blur, debris, contrast,
duplicate, missing, misaligned) as a strip of scores under the controls and a list (a click goes
to the section), the damage masks as a Labels layer over the sections, and one click to repair
the current section's masked region or to replace it by the interpolation of its neighbours."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dask.array as da
import numpy as np
from magicgui.widgets import Container, PushButton
from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QSizePolicy, QWidget

from .._layers import DISPLAY_KEY, add_volume_layer, layer_volume, world_z
from ..core.progress import Progress
from ..core.qc import KINDS, iter_section_qc
from ..core.qc.restore import apply_repairs, repair_at
from ._common import (
    ProgressRow,
    chosen_layer,
    image_layer_picker,
    layer_placement,
    layers_changed_by_tab,
    plain_viewer,
)
from .sections_widget import plane_under_slider

if TYPE_CHECKING:
    import napari

#: Bar colour per kind (the strip and the list); the Labels layer numbers kinds as KINDS does.
KIND_COLOURS = {
    "fold": (230, 90, 60),
    "tear": (240, 170, 40),
    "blur": (120, 150, 230),
    "debris": (200, 90, 200),
    "contrast": (90, 200, 200),
    "duplicate": (160, 160, 160),
    "missing": (90, 90, 90),
    "misaligned": (240, 230, 90),
}


def mask_colormap():
    """The Labels colours of the QC masks: each kind's label (its place in KINDS + 1) in the
    colour the strip and the list give it."""
    from napari.utils.colormaps import DirectLabelColormap

    colours = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
    for k, rgb in KIND_COLOURS.items():
        colours[KINDS.index(k) + 1] = (*(c / 255 for c in rgb), 1.0)
    return DirectLabelColormap(color_dict=colours)


#: Scores are drawn up to this value (a kind is flagged at 1).
STRIP_TOP = 3.0


class QCStrip(QWidget):
    """One bar per section (missing numbers included): height the largest score, colour its
    worst flag (clean sections blue), a line at the flag level 1, section numbers along the
    top where they fit, the section, its flag and score under the pointer as a tooltip; a
    click selects a section."""

    clicked = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[int, float, str | None]] = []  # (z, score, worst flag)
        self.current = -1
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(True)  # the tooltip follows the pointer

    def set_data(self, entries) -> None:
        self.entries = list(entries)
        self.update()

    def set_current(self, i: int) -> None:
        if i != self.current:
            self.current = i
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(38, 41, 48))
        if not self.entries:
            p.setPen(QPen(QColor(180, 180, 180)))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "run the QC to see each section")
            return
        n = len(self.entries)
        w = self.width() / n
        h = self.height() - 6
        for i, (_, score, flag) in enumerate(self.entries):
            colour = QColor(*KIND_COLOURS[flag]) if flag else QColor(90, 120, 170)
            bh = max(2.0, h * min(score, STRIP_TOP) / STRIP_TOP)
            p.fillRect(QRectF(i * w + 1, self.height() - bh - 3, max(1.0, w - 2), bh), colour)
            if i == self.current:
                p.setPen(QPen(QColor(255, 255, 255)))
                p.drawRect(QRectF(i * w, 0, max(1.0, w - 1), self.height() - 1))
        y1 = self.height() - 3 - h / STRIP_TOP
        p.setPen(QPen(QColor(220, 220, 220), 1, Qt.PenStyle.DashLine))
        p.drawLine(QPointF(0, y1), QPointF(self.width(), y1))
        # section numbers: the first, the last and every step-th in between, as many as fit
        # on a dark plate, so that a number stays readable over a full-height yellow bar
        for i in self.labelled():
            text = str(self.entries[i][0])
            box = QRectF(i * w - 20 + w / 2, 1, 40, 14)
            plate = p.boundingRect(box, Qt.AlignmentFlag.AlignCenter, text).adjusted(-2, 0, 2, 0)
            p.fillRect(plate, QColor(38, 41, 48, 200))
            p.setPen(QPen(QColor(220, 220, 220)))
            p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)

    def labelled(self, min_gap_px: float = 32.0) -> list[int]:
        """Indices of the bars whose section number is written over them."""
        n = len(self.entries)
        if not n:
            return []
        step = max(1, int(np.ceil(min_gap_px / max(self.width() / n, 1e-6))))
        shown = list(range(0, n, step))
        if shown[-1] != n - 1:
            if (n - 1 - shown[-1]) < step and len(shown) > 1:
                shown[-1] = n - 1  # the last number rather than one crowding it
            else:
                shown.append(n - 1)
        return shown

    def tooltip_at(self, x: float) -> str:
        """What the bar under x (pixels from the left) stands for."""
        if not self.entries:
            return ""
        z, score, flag = self.entries[self.index_at(x)]
        if flag == "missing":
            return f"section {z}: missing (no section with this number)"
        from ..core.qc import score_text

        return (
            f"section {z}: {flag or 'not flagged'}, largest score {score_text(score)} "
            "(flagged at 1)"
        )

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt API
        x = event.position().x() if hasattr(event, "position") else event.x()
        self.setToolTip(self.tooltip_at(x))
        super().mouseMoveEvent(event)

    def index_at(self, x: float) -> int:
        """The entry under x (pixels from the left)."""
        n = len(self.entries)
        return min(n - 1, max(0, int(x / (self.width() / n))))

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self.entries:
            x = event.position().x() if hasattr(event, "position") else event.x()
            self.clicked.emit(self.index_at(x))


def _section_name(sec, meta) -> str:
    """How the list names a section: its number, or in a volume whose planes were renumbered
    (built, interpolated, isotropic) its plane number and source file, since its number there
    is no section number (the canvas names the sections by theirs)."""
    extra = meta.extra or {}
    if "interpolation" in extra or "isotropic" in extra:
        if sec.file:
            return f"plane z {sec.z} ({sec.file})"
        if sec.synthetic:
            return f"plane z {sec.z} (generated)"
    return f"section {sec.z}"


def _strip_entry(sec) -> tuple[int, float, str | None]:
    top = 1.0 if "missing" in sec.flags else sec.largest_score()[1]
    return int(sec.z), float(top), (sec.flags[0] if sec.flags else None)


class QCWidget(Container):
    """Run the section QC on a layer, show it, and repair or replace the current section."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = plain_viewer(viewer)
        self.layer = image_layer_picker(viewer, "sections")
        self.run_button = PushButton(text="Run QC")
        self.repair_button = PushButton(text="Repair damaged region (current section)")
        self.replace_button = PushButton(text="Drop and interpolate (current section)")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.layer,
                self.run_button,
                self.progress,
                self.repair_button,
                self.replace_button,
            ]
        )
        self.strip = QCStrip()
        self.list = QListWidget()
        self.list.setMaximumHeight(160)
        # long lines wrap (a helper could not see the "[repaired: ...]" tag at the end of a
        # line cut at the dock's width) and show whole as a tooltip
        self.list.setWordWrap(True)
        self.list.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.native.layout().addWidget(self.strip)
        self.native.layout().addWidget(self.list)
        self.strip.clicked.connect(lambda i: self.go_to_z(self.strip.entries[i][0]))
        self.list.itemClicked.connect(
            lambda item: self.go_to_z(item.data(Qt.ItemDataRole.UserRole))
        )
        self.run_button.changed.connect(self.run)
        self.repair_button.changed.connect(lambda *_: self.repair_current(replace_whole=False))
        self.replace_button.changed.connect(lambda *_: self.repair_current(replace_whole=True))
        viewer.dims.events.current_step.connect(self._follow_slider)
        self.report = None
        self.source = None  # the layer the report belongs to
        self.volume = None
        self.mask_layer = None
        self.restored_layer = None
        self.repairs: dict[int, tuple[np.ndarray, object]] = {}
        self._set_repair_enabled(False)

    # ------------------------------------------------------------------------------ QC run

    def run(self) -> None:
        """Run the QC on the chosen layer on a worker thread."""
        layer = chosen_layer(self.layer)
        if layer is None:
            return
        volume = layer_volume(layer)
        self._set_repair_enabled(False)
        self.progress.run(
            lambda: iter_section_qc(volume),
            lambda rep: self._show(layer, volume, rep),
            self.run_button,
            source=(self.viewer, layer),
        )

    def _show(self, layer, volume, rep) -> None:
        self.report, self.source, self.volume = rep, layer, volume
        self.repairs = {}
        self.strip.set_data([_strip_entry(s) for s in rep.sections])
        self.list.clear()
        for s in rep.sections:
            if not s.flags:
                continue
            words = ", ".join(
                f"{k} {s.scores[k]:.1f}" if k in s.scores and k != "missing" else k for k in s.flags
            )
            item = QListWidgetItem(f"{_section_name(s, volume.meta)}: {words}")
            item.setToolTip(item.text())
            item.setData(Qt.ItemDataRole.UserRole, int(s.z))
            # the missing bar's dark grey is unreadable as text on the dark list
            colour = (175, 175, 175) if s.flags[0] == "missing" else KIND_COLOURS[s.flags[0]]
            item.setForeground(QColor(*colour))
            self.list.addItem(item)
        self._show_masks(layer, volume, rep)
        flagged = rep.flagged_z
        missing = [s.z for s in rep.sections if s.flags == ["missing"]]
        generated = sum(bool(s.synthetic) for s in rep.sections)
        self.progress.status.value = (
            f"{len(flagged)} of {volume.shape[0] - generated} sections flagged"
            + (f", {generated} generated planes not judged" if generated else "")
            + (f" (z {', '.join(map(str, flagged))})" if flagged else "")
            + (f"; missing z {', '.join(map(str, missing))}" if missing else "")
        )
        if rep.alignment_note:
            from napari.utils.notifications import show_warning

            note = rep.alignment_note
            show_warning(note[0].upper() + note[1:] + ".")
        self._set_repair_enabled(True)
        self._follow_slider()

    def _show_masks(self, layer, volume, rep, cleared=()) -> None:
        """The masks as a Labels layer on the layer's display grid (lazy: zeros where a
        section has none, or is among the ``cleared`` z numbers: repaired); no layer when no
        section has one (a previous run's is removed). No tab's image box follows the
        selection this moves."""
        with layers_changed_by_tab():
            self._replace_masks(layer, volume, rep, cleared)

    def _replace_masks(self, layer, volume, rep, cleared) -> None:
        name = f"{layer.name} QC masks"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.mask_layer = None
        if not any(
            s.mask is not None and s.mask.any() and s.z not in cleared for s in rep.sections
        ):
            return
        h, w = volume.shape[1:3]
        zs = list(volume.meta.with_planes(volume.shape[0]).z_numbers)
        planes = []
        for z in zs:
            sec = rep.section(z)
            m = sec.mask if sec is not None and sec.mask is not None else None
            m = None if z in cleared else m
            planes.append(
                da.from_array(m, chunks=m.shape)
                if m is not None
                else da.zeros((h, w), dtype=np.uint8, chunks=(h, w))
            )
        stack = da.stack(planes)
        grid = (layer.metadata.get(DISPLAY_KEY) or {}).get("plane")
        if grid:  # the layer shows gaps as empty planes: the masks follow its grid
            stack = da.stack(
                [
                    stack[i] if i >= 0 else da.zeros((h, w), dtype=np.uint8, chunks=(h, w))
                    for i in grid
                ]
            )
        self.mask_layer = self.viewer.add_labels(
            stack,
            name=name,
            **layer_placement(layer),
            opacity=0.5,
            colormap=mask_colormap(),
            metadata={"qc_kinds": list(KINDS)},
        )
        self.viewer.layers.selection.active = layer

    # ---------------------------------------------------------------------------- navigation

    def go_to_z(self, z: int) -> None:
        """Move the slider to section (or missing number) ``z`` of the QC'd layer."""
        layer = self.source
        if layer is None or layer.ndim < 3:
            return
        shown_z = (layer.metadata.get(DISPLAY_KEY) or {}).get("z")
        if shown_z and z in shown_z:
            point = float(layer.translate[0]) + shown_z.index(z) * float(layer.scale[0])
        else:
            zs = list(self.volume.meta.with_planes(self.volume.shape[0]).z_numbers)
            if z not in zs:
                return
            point = world_z(layer, zs.index(z))
        self.viewer.dims.set_point(0, point)

    def current_index(self) -> int | None:
        """Index (into the QC'd volume) of the section under the slider, None on a gap."""
        if self.source is None or self.viewer.dims.ndim < 3:
            return None
        _, index = plane_under_slider(self.source, float(self.viewer.dims.point[0]))
        return index

    def _follow_slider(self, *_) -> None:
        if self.report is None:
            return
        index = self.current_index()
        z = None
        if index is None:
            self.strip.set_current(-1)
        else:
            z = self.volume.meta.with_planes(self.volume.shape[0]).z_numbers[index]
            strip_z = [e[0] for e in self.strip.entries]
            self.strip.set_current(strip_z.index(z) if z in strip_z else -1)
        # the list highlights the section under the slider, or nothing (not the last one clicked)
        row = next(
            (
                i
                for i in range(self.list.count())
                if self.list.item(i).data(Qt.ItemDataRole.UserRole) == z
            ),
            -1,
        )
        if row != self.list.currentRow():
            self.list.setCurrentRow(row)
        if row < 0:
            self.list.clearSelection()

    # -------------------------------------------------------------------------------- repair

    def _set_repair_enabled(self, on: bool) -> None:
        self.repair_button.enabled = on
        self.replace_button.enabled = on

    def repair_current(self, *, replace_whole: bool) -> None:
        """Repair the masked region of the section under the slider (or replace the section by
        the interpolation of its neighbours) into the layer '<name> restored'."""
        from napari.utils.notifications import show_warning

        if self.report is None or self.source not in self.viewer.layers:
            show_warning("Run the QC on the sections first.")
            return
        index = self.current_index()
        if index is None:
            show_warning("Move the slider to a section (not a missing number) first.")
            self.progress.status.value = "no section under the slider"
            return
        volume, report = self.volume, self.report
        z = volume.meta.with_planes(volume.shape[0]).z_numbers[index]
        sec = report.section(z)
        name = self._name(z)
        if not replace_whole and (sec is None or not sec.flags):
            show_warning(f"{name[0].upper()}{name[1:]} has no QC flag; nothing to repair.")
            self.progress.status.value = f"{name}: no QC flag, nothing repaired"
            return

        def job():
            verb = "replacing" if replace_whole else "repairing"
            yield Progress(0, 1, f"{verb} {name}", "restore")
            return repair_at(volume, report, index, replace_whole=replace_whole)

        self.progress.run(
            job,
            lambda res: self._repaired(index, res),
            self.run_button,
            self.repair_button,
            self.replace_button,
        )

    def _name(self, z: int) -> str:
        """How the list names the plane numbered ``z`` (a built volume's plane numbers are no
        section numbers: 'section 10: inpainted' was section 4)."""
        from ..core.qc import SectionQC

        sec = self.report.section(z) if self.report is not None else None
        return _section_name(sec if sec is not None else SectionQC(z=z), self.volume.meta)

    def _repaired(self, index: int, res) -> None:
        fixed, rec = res
        if rec is None:
            from napari.utils.notifications import show_warning

            z = self.volume.meta.with_planes(self.volume.shape[0]).z_numbers[index]
            name = self._name(z)
            show_warning(
                f"{name[0].upper()}{name[1:]} has no sound neighbour to be rebuilt from (or "
                "only the section it copies); remove it from the stack instead."
            )
            self.progress.status.value = f"{name}: nothing to rebuild it from"
            return
        self.repairs[index] = (fixed, rec)
        restored = apply_repairs(
            self.volume, [(i, f, r) for i, (f, r) in sorted(self.repairs.items())]
        )
        layer = self.source
        with layers_changed_by_tab(self.layer):
            made = add_volume_layer(
                self.viewer, restored, name=f"{layer.name} restored", like=layer
            )
        self.restored_layer = made[0] if made else None
        # the masks of the repaired sections go (the damage is gone, and a section that was
        # realigned moved away from its mask; a helper saw stale masks hide the repair); the
        # others stay on top of the restored layer
        zs = self.volume.meta.with_planes(self.volume.shape[0]).z_numbers
        self._show_masks(layer, self.volume, self.report, cleared={zs[i] for i in self.repairs})
        self._mark_repaired(rec.z, rec.action)
        self.progress.status.value = (
            f"{self._name(rec.z)}: {rec.action} ({len(self.repairs)} repaired in "
            f"'{layer.name} restored')"
        )

    def _mark_repaired(self, z: int, action: str) -> None:
        """Say in the list that section ``z`` was repaired, and how (its flags stay: they are
        what the QC found in the section as measured)."""
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == z:
                text = item.text().split("  [", 1)[0]
                item.setText(f"{text}  [repaired: {action}]")
                item.setToolTip(item.text())

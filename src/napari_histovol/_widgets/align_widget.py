"""'Align sections' dock widget: method, reference, downsizing; QC table with flagged sections."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem

from .._layers import add_volume_layer, layer_volume, world_z
from ..core.align import (
    DEFAULT_NEIGHBOURS,
    DEFAULT_REFERENCE,
    MAX_NEIGHBOURS,
    METHODS,
    REFERENCES,
    iter_align,
)
from ..core.align.stack import ENGINES
from ._common import ProgressRow, chosen_layer, image_layer_picker

if TYPE_CHECKING:
    import napari


class AlignWidget(Container):
    """Align the sections of an image layer; adds '<name> aligned' with the transforms in its
    metadata, and lists neighbour pairs with their NCC before/after and QC flags (click a row
    to go to that section)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:

        self.viewer = viewer
        self.layer = image_layer_picker(viewer, "sections")
        self.method = ComboBox(choices=METHODS, value="rigid", label="method")
        self.reference = ComboBox(choices=REFERENCES, value=DEFAULT_REFERENCE, label="reference")
        self.neighbours = SpinBox(
            value=DEFAULT_NEIGHBOURS, min=1, max=MAX_NEIGHBOURS, label="neighbours (global)"
        )
        self.smooth = FloatSpinBox(
            value=0.0, min=0.0, max=10000.0, step=1.0, label="keep shape over (sections, 0 off)"
        )
        self.engine = ComboBox(choices=ENGINES, value="histovol", label="engine")
        self.reg_size = SpinBox(value=512, min=64, max=8192, step=64, label="register at (px)")
        self.run_button = PushButton(text="Align")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.layer,
                self.method,
                self.reference,
                self.neighbours,
                self.smooth,
                self.engine,
                self.reg_size,
                self.run_button,
                self.progress,
            ]
        )
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["z a", "z b", "NCC before", "NCC after", "flags"])
        self.table.cellClicked.connect(self._go_to_row)
        self.native.layout().addWidget(self.table)
        self.run_button.changed.connect(self.run)
        self.result = None
        self._z_of_plane: list[int] = []

    def run(self) -> None:
        layer = chosen_layer(self.layer)
        if layer is None:
            return
        volume = layer_volume(layer)
        opts = dict(
            method=self.method.value,
            reference=self.reference.value,
            neighbours=int(self.neighbours.value),
            smooth=float(self.smooth.value),
            engine=self.engine.value,
            reg_size=int(self.reg_size.value),
        )
        self.progress.run(
            lambda: iter_align(volume, **opts),
            lambda result: self._show(layer, result),
            self.run_button,
        )

    def _show(self, layer, result) -> None:
        self.result = result
        self.source = layer
        (self.aligned,) = add_volume_layer(
            self.viewer, result.volume, name=f"{layer.name} aligned", like=layer
        )
        self.aligned.metadata = {
            **self.aligned.metadata,
            "transforms": [t.matrix.tolist() for t in result.transforms],
            "qc": result.qc,
        }
        self._z_of_plane = list(result.volume.meta.z_numbers)
        pairs = result.qc["pairs"]
        self.table.setRowCount(len(pairs))
        for r, p in enumerate(pairs):
            cells = [
                str(p["z_a"]),
                str(p["z_b"]),
                _fmt(p["ncc_before"]),
                _fmt(p["ncc_after"]),
                ", ".join(p["flags"]),
            ]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if p["flags"]:
                    item.setBackground(QColor(150, 40, 40))
                self.table.setItem(r, c, item)
        flagged = result.flagged_z
        self.progress.status.value = (
            f"mean NCC {_fmt(result.qc['mean_ncc_before'])} -> "
            f"{_fmt(result.qc['mean_ncc_after'])}"
            + (f"; flagged z: {', '.join(map(str, flagged))}" if flagged else "; no flags")
        )

    def _go_to_row(self, row: int, _col: int) -> None:
        item = self.table.item(row, 1)
        if item is None or not self._z_of_plane:
            return
        z = int(item.text())
        if z in self._z_of_plane:
            self.viewer.dims.set_point(0, world_z(self.aligned, self._z_of_plane.index(z)))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"

"""'Focus QC' dock widget: sharpness per section (plot), focus maps per tile over the sections,
out-of-focus flags, and buttons that jump to the best and the worst section."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from .._layers import layer_volume, on_display_grid, world_z
from ..core.focus import DEFAULT_METRIC, METRICS, iter_focus_stack
from ._common import (
    ProgressRow,
    chosen_layer,
    image_layer_picker,
    layers_changed_by_tab,
    plain_viewer,
)

if TYPE_CHECKING:
    import napari


class ScorePlot(QWidget):
    """Bars of the per-section scores: flagged red, best green; a click selects a section."""

    clicked = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self.scores: list[float] = []
        self.flags: list[bool] = []
        self.best = -1
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_data(self, scores, flags, best) -> None:
        self.scores, self.flags, self.best = list(scores), list(flags), best
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(38, 41, 48))
        if not self.scores:
            p.setPen(QPen(QColor(180, 180, 180)))
            p.drawText(
                self.rect(),
                Qt.AlignmentFlag.AlignCenter,
                "run to see the sharpness of each section",
            )
            return
        n = len(self.scores)
        top = max(self.scores) or 1.0
        w = self.width() / n
        h = self.height() - 6
        for i, s in enumerate(self.scores):
            colour = (
                QColor(220, 60, 60)
                if self.flags[i]
                else QColor(90, 170, 90)
                if i == self.best
                else QColor(120, 150, 210)
            )
            bh = h * (s / top)
            p.fillRect(QRectF(i * w + 1, self.height() - bh - 3, max(1.0, w - 2), bh), colour)
        p.setPen(QPen(QColor(200, 200, 200)))
        p.drawLine(QPointF(0, self.height() - 3), QPointF(self.width(), self.height() - 3))

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self.scores:
            x = event.position().x() if hasattr(event, "position") else event.x()
            self.clicked.emit(
                min(len(self.scores) - 1, max(0, int(x / (self.width() / len(self.scores)))))
            )


class FocusWidget(Container):
    """Score sections and tiles; flag blurry ones; jump to the best or worst section."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:

        self.viewer = viewer = plain_viewer(viewer)
        self.layer = image_layer_picker(viewer, "sections")
        self.metric = ComboBox(choices=METRICS, value=DEFAULT_METRIC, label="metric")
        self.tile = SpinBox(value=256, min=0, max=8192, step=32, label="tile (px, 0 = none)")
        self.threshold = FloatSpinBox(
            value=3.5, min=0.5, max=20.0, step=0.5, label="flag below z =  -"
        )
        self.run_button = PushButton(text="Score focus")
        self.best_button = PushButton(text="Go to sharpest")
        self.worst_button = PushButton(text="Go to blurriest")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.layer,
                self.metric,
                self.tile,
                self.threshold,
                self.run_button,
                self.best_button,
                self.worst_button,
                self.progress,
            ]
        )
        self.plot = ScorePlot()
        self.native.layout().addWidget(self.plot)
        self.plot.clicked.connect(self._go)
        self.run_button.changed.connect(self.run)
        self.best_button.changed.connect(
            lambda *_: self._go(self.report["best_plane_index"]) if self.report else None
        )
        self.worst_button.changed.connect(self._go_worst)
        self.report = None
        self.map_layer = None

    def run(self) -> None:
        layer = chosen_layer(self.layer)
        if layer is None:
            return
        volume = layer_volume(layer)
        opts = dict(
            metric=self.metric.value,
            tile=int(self.tile.value) or None,
            threshold=float(self.threshold.value),
        )
        self.progress.run(
            lambda: iter_focus_stack(volume, **opts),
            lambda rep: self._show(layer, rep),
            self.run_button,
            source=(self.viewer, layer),
        )

    def _show(self, layer, rep) -> None:
        self.report = rep
        planes = rep["planes"]
        self.plot.set_data(
            [p["score"] for p in planes],
            [p["out_of_focus"] for p in planes],
            rep["best_plane_index"],
        )
        if "tiles" in planes[0]:
            maps = np.stack([np.asarray(p["tiles"]["scores"], np.float32) for p in planes])
            tile = planes[0]["tiles"]["tile_px"]
            sy, sx = tuple(layer.scale)[-2:]
            ty, tx = tuple(layer.translate)[-2:]
            scale, translate = (
                (sy * tile, sx * tile),
                (ty + (tile - 1) / 2 * sy, tx + (tile - 1) / 2 * sx),
            )
            if layer.ndim >= 3:  # a stack: one map per plane, on the layer's own z grid
                maps = on_display_grid(layer, maps)
                scale, translate = (layer.scale[0], *scale), (layer.translate[0], *translate)
            else:  # one slide
                maps = maps[0]
            kwargs = dict(
                name=f"{layer.name} focus map",
                colormap="inferno",
                opacity=0.5,
                scale=scale,
                translate=translate,
                units=tuple(layer.units),
                axis_labels=tuple(layer.axis_labels),
                metadata={"focus": rep},
            )
            if self.map_layer is not None and self.map_layer in self.viewer.layers:
                self.viewer.layers.remove(self.map_layer)
            with layers_changed_by_tab():  # a map, no tab's input
                self.map_layer = self.viewer.add_image(maps, **kwargs)
        flagged = rep["flagged_z"]
        self.progress.status.value = (
            f"done: sharpest z {rep['best_plane']} (sub-step {rep['best_plane_subframe']:.2f})"
            + (f"; blurry z {', '.join(map(str, flagged))}" if flagged else "")
            + (
                "; the model's estimates hardly change across the planes: not to be trusted"
                if rep.get("model_estimates_flat")
                else ""
            )
        )

    def _go(self, index: int) -> None:
        layer = self.layer.value
        if layer is not None and layer.ndim >= 3:
            self.viewer.dims.set_point(0, world_z(layer, int(index)))

    def _go_worst(self, *_) -> None:
        if self.report:
            zs = [p["z"] for p in self.report["planes"]]
            self._go(zs.index(self.report["worst_plane"]))

"""'Align sections' dock widget: method, reference, downsizing; QC table with flagged sections;
landmark review and correction (paired Points layers, affine or thin-plate spline, a table of
landmark errors before and after); annotations (Points, Shapes) carried into the aligned
volume and back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem

from .._layers import (
    DISPLAY_KEY,
    add_volume_layer,
    layer_volume,
    volume_to_layer_data,
    world_z,
)
from ..core.align import (
    DEFAULT_NEIGHBOURS,
    DEFAULT_REFERENCE,
    MAX_NEIGHBOURS,
    METHODS,
    REFERENCES,
    iter_align,
    turn_note,
)
from ..core.align.stack import ENGINES
from ._common import (
    ProgressRow,
    chosen_layer,
    image_layer_picker,
    layers_changed_by_tab,
    plain_viewer,
    wrapping_label,
)

if TYPE_CHECKING:
    import napari


class AlignWidget(Container):
    """Align the sections of an image layer; adds '<name> aligned' with the transforms in its
    metadata, and lists neighbour pairs with their NCC before/after and QC flags (click a row
    to go to that section)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:

        self.viewer = viewer = plain_viewer(viewer)
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
        # the numbers as narrow as they are, the flags in the rest: in a 1600 px window the
        # flags column sat past the dock's edge
        header = self.table.horizontalHeader()
        for c in range(4):
            header.setSectionResizeMode(c, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(8 * self.table.verticalHeader().defaultSectionSize())
        self.table.cellClicked.connect(self._go_to_row)
        self.native.layout().addWidget(self.table)
        self.run_button.changed.connect(self.run)
        self.result = None
        self._z_of_plane: list[int] = []
        self._corrected: set[int] = set()
        self._build_review()

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
            source=(self.viewer, layer),
        )

    def _show(self, layer, result) -> None:
        self.result = result
        self.source = layer
        with layers_changed_by_tab(self.layer):
            (self.aligned,) = add_volume_layer(
                self.viewer, result.volume, name=f"{layer.name} aligned", like=layer
            )
        self.aligned.metadata = {
            **self.aligned.metadata,
            "transforms": [t.matrix.tolist() for t in result.transforms],
            "qc": result.qc,
        }
        self._z_of_plane = list(result.volume.meta.z_numbers)
        self._corrected = set()
        zs = [str(z) for z in self._z_of_plane]
        self.moving_z.choices = zs
        self.reference_z.choices = zs
        if len(zs) > 1:
            ref = str(result.qc.get("reference_z", zs[0]))
            self.reference_z.value = ref if ref in zs else zs[0]
            self.moving_z.value = next(z for z in zs if z != self.reference_z.value)
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
        first_flagged = next((r for r, p in enumerate(pairs) if p["flags"]), None)
        if first_flagged is not None:  # the first flagged pair in view, not below the fold
            self.table.scrollToItem(self.table.item(first_flagged, 0))
        flagged = result.flagged_z
        if not pairs:  # a single section: no pair to score ("mean NCC - -> -": a helper)
            self.progress.status.value = "a single section: nothing to align"
            return
        note = turn_note(result.qc)
        self.progress.status.value = (
            f"mean NCC {_fmt(result.qc['mean_ncc_before'])} -> "
            f"{_fmt(result.qc['mean_ncc_after'])}"
            + (f"; flagged z: {', '.join(map(str, flagged))}" if flagged else "; no flags")
            + (f". Note: {note}" if note else "")
        )

    def _go_to_row(self, row: int, _col: int) -> None:
        item = self.table.item(row, 1)
        if item is None or not self._z_of_plane:
            return
        z = int(item.text())
        if z in self._z_of_plane:
            self.viewer.dims.set_point(0, world_z(self.aligned, self._z_of_plane.index(z)))

    # ------------------------------------------------------------- landmark review

    def _build_review(self) -> None:
        from ..core.align.landmarks import MODELS

        self.moving_z = ComboBox(choices=[], label="moving section (z)")
        self.reference_z = ComboBox(choices=[], label="reference section (z)")
        self.lm_model = ComboBox(choices=MODELS, value="affine", label="correction")
        self.lm_follow = ComboBox(
            choices=["neighbours follow", "this section only"], value="neighbours follow"
        )
        self.lm_layers_button = PushButton(text="Landmark layers")
        self.lm_apply_button = PushButton(text="Correct from landmarks")
        self.lm_status = wrapping_label()
        self.carry_layer = ComboBox(choices=self._annotation_layers, label="annotations")
        self.carry_button = PushButton(text="Carry into aligned")
        self.carry_back_button = PushButton(text="Carry back to sections")
        review = Container(
            widgets=[
                Label(value="Landmarks (place on the aligned layer, same order on both):"),
                self.moving_z,
                self.reference_z,
                self.lm_model,
                self.lm_follow,
                self.lm_layers_button,
                self.lm_apply_button,
                self.lm_status,
                self.carry_layer,
                self.carry_button,
                self.carry_back_button,
            ]
        )
        self.native.layout().addWidget(review.native)
        self.lm_table = QTableWidget(0, 3)
        self.lm_table.setHorizontalHeaderLabels(["landmark", "before (px)", "after (px)"])
        self.native.layout().addWidget(self.lm_table)
        self._review = review
        self.lm_layers_button.changed.connect(self.make_landmark_layers)
        self.lm_apply_button.changed.connect(self.correct_from_landmarks)
        self.carry_button.changed.connect(lambda: self.carry(inverse=False))
        self.carry_back_button.changed.connect(lambda: self.carry(inverse=True))
        self.viewer.layers.events.inserted.connect(self.carry_layer.reset_choices)
        self.viewer.layers.events.removed.connect(self.carry_layer.reset_choices)

    def _annotation_layers(self, _widget=None) -> list:
        import napari

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, (napari.layers.Points, napari.layers.Shapes))
            and not layer.name.startswith("landmarks ")
        ]

    def _section_index(self, combo: ComboBox) -> int | None:
        if self.result is None or combo.value is None:
            return None
        return self._z_of_plane.index(int(combo.value))

    def _landmark_layer(self, role: str):
        name = f"landmarks {role}"
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def make_landmark_layers(self) -> None:
        """Add (or reuse) the 'landmarks moving' and 'landmarks reference' Points layers on the
        aligned layer's frame, and go to the moving section."""
        if self.result is None:
            self._say("Align first: landmarks are placed on the aligned layer.")
            return
        colours = {"moving": "magenta", "reference": "lime"}
        for role, colour in colours.items():
            if self._landmark_layer(role) is None:
                self.viewer.add_points(
                    ndim=3,
                    name=f"landmarks {role}",
                    scale=self.aligned.scale,
                    translate=self.aligned.translate,
                    face_color=colour,
                    size=max(4, 0.01 * max(self.result.volume.shape[1:3])),
                )
        i = self._section_index(self.moving_z)
        if i is not None:
            self.viewer.dims.set_point(0, world_z(self.aligned, i))
        layer = self._landmark_layer("moving")
        self.viewer.layers.selection.active = layer
        layer.mode = "add"

    def correct_from_landmarks(self) -> None:
        """Fit the correction from the paired landmark layers, fold it into the transforms,
        warp the aligned layer again, move the moving landmarks with their section, and fill
        the table of landmark errors before and after."""
        from ..core.align.landmarks import correct_section
        from ..core.align.warp import warp_volume
        from ..core.errors import InputError
        from ..core.io.volume import Volume

        mov_layer, ref_layer = self._landmark_layer("moving"), self._landmark_layer("reference")
        i, r = self._section_index(self.moving_z), self._section_index(self.reference_z)
        if self.result is None or mov_layer is None or ref_layer is None or i is None or r is None:
            self._say("Align, then add the landmark layers and place points on both sections.")
            return
        ts = self.result.transforms
        a = np.asarray(mov_layer.data, float)[:, [2, 1]]  # aligned frame, x, y
        b = np.asarray(ref_layer.data, float)[:, [2, 1]]
        try:
            res = correct_section(
                ts,
                i,
                ts[i].aligned_to_source(a),
                r,
                ts[r].aligned_to_source(b),
                canvas=tuple(self.result.volume.shape[1:3]),
                model=self.lm_model.value,
                follow=self.lm_follow.value == "neighbours follow",
                keep=sorted(self._corrected - {i}),
            )
        except InputError as e:
            self._say(str(e))
            return
        self._corrected.add(i)
        self.result.transforms = res.transforms
        src = layer_volume(self.source)
        shape = tuple(self.result.volume.shape[1:3])
        vol = Volume(warp_volume(src.data, res.transforms, shape), self.result.volume.meta)
        self.result.volume = vol
        self.aligned.data = volume_to_layer_data(vol, name=self.aligned.name)[0][0]
        self.aligned.metadata = {
            **self.aligned.metadata,
            "transforms": [t.matrix.tolist() for t in res.transforms],
        }
        # the moving landmarks move with their section (where its points now land)
        new_a = res.transforms[i].source_to_aligned(ts[i].aligned_to_source(a))
        data = np.asarray(mov_layer.data, float).copy()
        data[:, 2], data[:, 1] = new_a[:, 0], new_a[:, 1]
        mov_layer.data = data
        rows = res.table()
        self.lm_table.setRowCount(len(rows))
        for k, row in enumerate(rows):
            for c, text in enumerate(
                [str(row["index"] + 1), f"{row['before_px']:.2f}", f"{row['after_px']:.2f}"]
            ):
                self.lm_table.setItem(k, c, QTableWidgetItem(text))
        self.landmark_result = res
        self._say(
            f"landmark error {res.before_px.mean():.2f} -> {res.after_px.mean():.2f} px (mean); "
            f"moved z: {', '.join(str(self._z_of_plane[k]) for k in res.moved)}"
        )

    def carry(self, *, inverse: bool = False):
        """Carry the chosen Points or Shapes layer from the sections into the aligned layer
        (or, ``inverse``, back); returns the new layer."""
        from ..core.align.points import carry_points

        layer = self.carry_layer.value
        if self.result is None or layer is None:
            self._say("Align first, and choose a Points or Shapes layer to carry.")
            return None
        start, end = (self.aligned, self.source) if inverse else (self.source, self.aligned)
        grid_start = (start.metadata.get(DISPLAY_KEY) or {}).get("plane")

        def plane_of(k: int):
            if not grid_start:
                return k
            return grid_start[k] if 0 <= k < len(grid_start) and grid_start[k] >= 0 else None

        def move(vertices: np.ndarray) -> np.ndarray:
            world = np.array([layer.data_to_world(v) for v in vertices])
            data = np.array([start.world_to_data(w) for w in world])
            return carry_points(data, self.result.transforms, inverse=inverse, plane_of=plane_of)

        kwargs = dict(
            name=f"{layer.name} {'on sections' if inverse else 'aligned'}",
            scale=end.scale,
            translate=end.translate,
        )
        if kwargs["name"] in self.viewer.layers:
            self.viewer.layers.remove(kwargs["name"])
        if layer._type_string == "points":
            data = move(np.asarray(layer.data, float)) if len(layer.data) else layer.data
            out = self.viewer.add_points(data, ndim=3, size=layer.size, **kwargs)
        else:
            shapes = [
                move(_polygon(v, t)) for v, t in zip(layer.data, layer.shape_type, strict=True)
            ]
            types = [t if t in ("path", "line", "polygon") else "polygon" for t in layer.shape_type]
            out = self.viewer.add_shapes(shapes, shape_type=types, ndim=3, **kwargs)
        self._say(f"carried {len(layer.data)} {layer._type_string} to '{out.name}'")
        return out

    def _say(self, text: str) -> None:
        self.lm_status.value = text


def _polygon(vertices, shape_type: str) -> np.ndarray:
    """A shape's vertices as a polygon that a non-rigid map can carry: an ellipse (its box's
    4 corners) sampled at 48 points; other shapes as they are."""
    v = np.asarray(vertices, float)
    if shape_type != "ellipse" or len(v) != 4:
        return v
    c = v.mean(0)
    u, w = (v[1] - v[0]) / 2, (v[2] - v[1]) / 2
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)[:, None]
    return c + np.cos(t) * u + np.sin(t) * w


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"

"""'Sections' dock widget: what the plane under the slider is (section number, stain, file, or
the two sections a generated plane was made from), the list of a stack's sections to jump to,
and the pixel size and section spacing of an open stack.

The name of the plane under the slider is also written on the canvas (a text overlay), for the
selected napari-histovol layer or else the top visible one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import CheckBox, Container, Label, PushButton
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from .._layers import DISPLAY_KEY, physical_placement
from ..core.errors import HistovolError
from ..core.io.meta import META_KEY, VolumeMeta
from ..core.sections import missing_label, plane_label
from ._common import chosen_layer, image_layer_picker, micrometre_box, plain_viewer, text_overlay
from ._worker import error_text

if TYPE_CHECKING:
    import napari


def histovol_meta(layer) -> VolumeMeta | None:
    """The volume metadata napari-histovol put on a layer, or None."""
    hv = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    return VolumeMeta.from_dict(hv) if hv else None


def plane_under_slider(layer, world_z: float) -> tuple[int | None, int | None]:
    """(index of the displayed plane, index into the volume or None for a gap) at world z."""
    if layer is None or layer.ndim < 3:  # napari counts RGB channels out of ndim
        return None, None
    n = layer.data.shape[0] if not layer.multiscale else layer.data[0].shape[0]
    shown = round((world_z - float(layer.translate[0])) / float(layer.scale[0]))
    if not 0 <= shown < n:
        return None, None
    grid = (layer.metadata.get(DISPLAY_KEY) or {}).get("plane")
    if grid and len(grid) == n:
        return shown, (grid[shown] if grid[shown] >= 0 else None)
    return shown, shown


def describe_plane(layer, world_z: float) -> str:
    """The one line that names the plane of ``layer`` at world z (empty when it has none)."""
    meta = histovol_meta(layer)
    if meta is None:
        return ""
    shown, index = plane_under_slider(layer, world_z)
    if shown is None:
        return ""
    if index is None:
        z = (layer.metadata.get(DISPLAY_KEY) or {}).get("z", [])[shown]
        return missing_label(int(z))
    return plane_label(meta, index)


class SectionsWidget(Container):
    """Name the plane under the slider, list the sections, set the physical scale."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = plain_viewer(viewer)
        self.layer = image_layer_picker(viewer, "sections")
        self.current = Label(value="", label="under the slider")
        self.on_canvas = CheckBox(value=True, text="name the section on the canvas")
        self.pixel_size = micrometre_box(
            "pixel size (µm)", value=1.0, min=1e-5, max=1000.0, step=0.05
        )
        self.spacing = micrometre_box(
            "section spacing (µm)", value=1.0, min=1e-5, max=100000.0, step=1.0
        )
        self.apply_scale = PushButton(text="Set the scale of this stack")
        super().__init__(
            widgets=[
                self.layer,
                self.current,
                self.on_canvas,
                self.pixel_size,
                self.spacing,
                self.apply_scale,
            ]
        )
        self.current.native.setWordWrap(True)
        self.list = QListWidget()
        self.list.setMinimumHeight(120)
        self.list.setMaximumHeight(260)
        self.list.itemClicked.connect(self._go_to)
        self.native.layout().insertWidget(3, self.list)
        viewer.dims.events.current_step.connect(self.refresh)
        viewer.dims.events.ndisplay.connect(self.refresh)  # no plane name over a 3D view
        viewer.dims.events.order.connect(self.refresh)  # nor over an x-z or y-z view
        viewer.layers.events.inserted.connect(self._layers_changed)
        viewer.layers.events.removed.connect(self._layers_changed)
        viewer.layers.selection.events.active.connect(self.refresh)
        self.layer.changed.connect(self._layer_changed)
        self.on_canvas.changed.connect(self.refresh)
        self.apply_scale.changed.connect(self.set_scale)
        self._watched = None
        self._layer_changed()

    # ------------------------------------------------------------------ which layer
    def target(self):
        """The layer whose planes are named: the active one if napari-histovol made it, else
        the one picked here, else the top visible napari-histovol layer."""
        active = self.viewer.layers.selection.active
        if active is not None and histovol_meta(active) is not None and active.visible:
            return active
        picked = self.layer.value
        if picked is not None and histovol_meta(picked) is not None:
            return picked
        for layer in reversed(list(self.viewer.layers)):
            if layer.visible and histovol_meta(layer) is not None:
                return layer
        return None

    def _layers_changed(self, *_) -> None:
        self._layer_changed()

    def _watch(self, layer) -> None:
        """Rebuild the list when the picked layer's data is replaced (the Interpolate tab's
        live layer changes its planes as its slider moves), once its metadata is set too."""
        if self._watched is not None:
            try:
                self._watched.events.data.disconnect(self._data_replaced)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._watched = layer
        if layer is not None:
            layer.events.data.connect(self._data_replaced)

    def _data_replaced(self, *_) -> None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, self._layer_changed)

    def _layer_changed(self, *_) -> None:
        layer = self.layer.value
        if layer is not self._watched:
            self._watch(layer)
        meta = histovol_meta(layer) if layer is not None else None
        self.list.clear()
        if meta is not None:
            self.pixel_size.value = float(meta.scale[2])
            self.spacing.value = meta.section_spacing
            grid = (layer.metadata.get(DISPLAY_KEY) or {}).get("plane")
            zs = (layer.metadata.get(DISPLAY_KEY) or {}).get("z")
            n = len(grid) if grid else meta.n_planes
            for shown in range(n):
                index = grid[shown] if grid else shown
                text = missing_label(int(zs[shown])) if index < 0 else plane_label(meta, index)
                item = QListWidgetItem(text)
                item.setData(256, shown)  # Qt.UserRole
                self.list.addItem(item)
        self.refresh()

    # ------------------------------------------------------------------ naming
    def refresh(self, *_) -> str:
        """Update the label, the list's selection and the canvas overlay; returns the text."""
        layer = self.target()
        text = ""
        dims = self.viewer.dims
        z_sliced = dims.ndim >= 3 and (dims.ndim - 3) not in dims.displayed
        if layer is not None and z_sliced:
            text = describe_plane(layer, float(self.viewer.dims.point[0]))
            if layer is self.layer.value:
                shown, _ = plane_under_slider(layer, float(self.viewer.dims.point[0]))
                if shown is not None and shown < self.list.count():
                    self.list.setCurrentRow(shown)
        self.current.value = text
        overlay = text_overlay(self.viewer)
        overlay.visible = (
            bool(text) and bool(self.on_canvas.value) and self.viewer.dims.ndisplay == 2
        )
        if text:
            overlay.text = text
            overlay.position = "top_left"
        return text

    def _go_to(self, item) -> None:
        layer = self.layer.value
        if layer is None:
            return
        shown = int(item.data(256))
        world_z = float(layer.translate[0]) + shown * float(layer.scale[0])
        self.viewer.dims.set_point(0, world_z)

    # ------------------------------------------------------------------ scale
    def set_scale(self, *_) -> None:
        """Give the picked stack the pixel size and section spacing typed here (µm): its
        scale, units and placement, and the metadata that travels with it."""
        layer = chosen_layer(self.layer)
        if layer is None:
            return
        meta = histovol_meta(layer)
        if meta is None:
            meta = VolumeMeta(z_numbers=tuple(range(layer.data.shape[0])), rgb=layer.rgb)
        try:
            meta = meta.with_scale(
                pixel_size=float(self.pixel_size.value),
                section_spacing=float(self.spacing.value) / meta.planes_per_section,
            )
        except HistovolError as exc:
            from napari.utils.notifications import show_error

            show_error(error_text(exc))
            return
        # the plane under the slider stays under it (its world z changes with the scale)
        shown = None
        if layer.ndim >= 3 and self.viewer.dims.ndim >= 3:
            at = (self.viewer.dims.point[0] - float(layer.translate[0])) / float(layer.scale[0])
            shown = int(min(max(round(at), 0), layer.data.shape[0] - 1))
        placed = physical_placement(meta)
        layer.scale = placed["scale"][-layer.ndim :]
        layer.translate = placed["translate"][-layer.ndim :]
        layer.units = placed.get("units", ("micrometer",) * 3)[-layer.ndim :]
        layer.metadata = {**layer.metadata, META_KEY: meta.to_dict()}
        self.viewer.reset_view()
        if shown is not None:
            self.viewer.dims.set_point(0, float(layer.translate[0]) + shown * float(layer.scale[0]))
        self.refresh()

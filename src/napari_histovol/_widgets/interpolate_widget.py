"""'Interpolate sections' dock widget: frames-between slider, method, model folder, preview of
one pair at a chosen time, and the full run; synthetic planes are named in the canvas."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    LineEdit,
    PushButton,
    Slider,
    SpinBox,
)

from .._layers import layer_volume
from ..core.interpolate import METHODS, interpolate_pair, iter_interpolate, parse_z_numbers
from ..core.io.meta import META_KEY
from ..core.progress import Progress
from ._common import ProgressRow, chosen_layer, image_layer_picker

if TYPE_CHECKING:
    import napari


class InterpolateWidget(Container):
    """Generate planes between the sections of an image layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:

        self.viewer = viewer
        self.layer = image_layer_picker(viewer, "sections")
        self.frames = Slider(value=1, min=0, max=50, label="frames between")
        self.method = ComboBox(choices=METHODS, value="flow", label="method")
        self.model_dir = FileEdit(mode="d", label="model folder", value="")
        self.replace = LineEdit(value="", label="replace z (e.g. 12,31)")
        self.pair = SpinBox(value=0, min=0, max=10000, label="preview pair")
        self.t = FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, label="preview t")
        self.preview_button = PushButton(text="Preview")
        self.run_button = PushButton(text="Interpolate")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.layer,
                self.frames,
                self.method,
                self.model_dir,
                self.replace,
                self.pair,
                self.t,
                self.preview_button,
                self.run_button,
                self.progress,
            ]
        )
        self.preview_button.changed.connect(self.preview)
        self.run_button.changed.connect(self.run)
        self.result_layer = None
        viewer.dims.events.current_step.connect(self._show_plane_kind)

    def _volume(self):
        layer = chosen_layer(self.layer)
        return (None, None) if layer is None else (layer, layer_volume(layer))

    def _model(self) -> str | None:
        d = str(self.model_dir.value or "")
        return d if d not in ("", ".") else None

    def preview(self) -> None:
        layer, vol = self._volume()
        if vol is None:
            return
        i = min(int(self.pair.value), vol.shape[0] - 2)
        t, method, model = float(self.t.value), self.method.value, self._model()

        def gen():
            yield Progress(0, 1, f"pair {i}-{i + 1} at t={t:.2f}", stage="preview")
            a, b = np.asarray(vol.data[i].compute()), np.asarray(vol.data[i + 1].compute())
            runner = None
            if method == "model":
                from ..core.errors import InputError
                from ..core.interpolate.model import ModelRunner

                if not model:
                    raise InputError("Choose the model folder for the model method.")
                runner = ModelRunner(model)
            try:
                frame = interpolate_pair(a, b, [t], method=method, runner=runner)[0]
            finally:
                if runner is not None:
                    runner.close()
            yield Progress(1, 1, "done", stage="preview")
            return frame

        def show(frame):
            name = "interpolation preview"
            if name in self.viewer.layers:
                self.viewer.layers[name].data = frame
            else:
                self.viewer.add_image(frame, name=name, rgb=layer.rgb, scale=tuple(layer.scale)[1:])

        self.progress.run(gen, show, self.run_button, self.preview_button)

    def run(self) -> None:
        layer, vol = self._volume()
        if vol is None:
            return
        opts = dict(
            frames_between=int(self.frames.value),
            method=self.method.value,
            model_dir=self._model(),
            replace_z=parse_z_numbers(self.replace.value),
        )

        def gen():
            result = yield from iter_interpolate(vol, **opts)
            try:
                data = result.volume.data
                out = np.empty(data.shape, data.dtype)
                start = 0
                n = data.shape[0]
                for c in data.chunks[0]:  # one chunk per measured plane or per generated pair
                    out[start : start + c] = data[start : start + c].compute()
                    start += c
                    yield Progress(start, n, f"plane {start}/{n}", stage="interpolate")
            finally:
                result.close()
            return result.volume.meta, out

        def show(value):
            meta, out = value
            md = dict(layer.metadata)
            md[META_KEY] = meta.to_dict()
            scale = (
                meta.scale[0]
                if meta.scale_known or meta.spacing_known
                else layer.scale[0] / (opts["frames_between"] + 1),
                *tuple(layer.scale)[1:],
            )
            self.result_layer = self.viewer.add_image(
                out, name=f"{layer.name} interpolated", rgb=layer.rgb, scale=scale, metadata=md
            )
            self.progress.status.value = (
                f"{sum(meta.synthetic)} of {len(meta.synthetic)} planes generated"
            )
            self._show_plane_kind()

        self.progress.run(gen, show, self.run_button, self.preview_button)

    def _show_plane_kind(self, event=None) -> None:
        layer = self.result_layer
        if layer is None or layer not in self.viewer.layers:
            return
        hv = layer.metadata.get(META_KEY, {})
        i = int(self.viewer.dims.current_step[0])
        syn, zs = hv.get("synthetic", []), hv.get("z_numbers", [])
        if 0 <= i < len(syn):
            overlay = _text_overlay(self.viewer)
            overlay.visible = True
            overlay.text = f"z {zs[i]}: " + ("synthetic (interpolated)" if syn[i] else "measured")


def _text_overlay(viewer):
    """The canvas text overlay (napari >= 0.9 moved it under ``viewer.canvas.overlays``)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    text = getattr(overlays, "text", None) if overlays is not None else None
    return text if text is not None else viewer.text_overlay

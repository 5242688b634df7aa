"""'3D view' dock widget: clipping planes (z, y, x, oblique; position, flip, slab), rendering,
opacity from intensity for RGB volumes, z exaggeration, screenshot. napari has no clipping
controls of its own; this fills that gap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    PushButton,
)

from ..core.render3d import AXES, clipping_planes, rgb_channels_for_3d
from ._common import image_layer_picker

if TYPE_CHECKING:
    import napari

RENDERINGS = ("mip", "translucent", "attenuated_mip", "average", "minip", "iso")


def _level_for_3d(layer, max_side: int = 1024):
    """The pyramid level napari would volume-render (largest with sides <= ``max_side``), with
    the scale and translate that put it where level 0 is."""
    if not layer.multiscale:
        return layer.data, tuple(layer.scale), tuple(layer.translate)
    levels = list(layer.data)
    base = levels[0].shape
    pick = next((lv for lv in levels if max(lv.shape[1:3]) <= max_side), levels[-1])
    factors = [b / p for b, p in zip(base[:3], pick.shape[:3], strict=True)]
    scale = tuple(s * f for s, f in zip(tuple(layer.scale), factors, strict=True))
    translate = tuple(
        t + (f - 1) / 2 * s
        for t, f, s in zip(tuple(layer.translate), factors, tuple(layer.scale), strict=True)
    )
    return pick, scale, translate


class View3DWidget(Container):
    """Clip and render a volume layer in 3D."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:

        self.viewer = viewer
        self.layer = image_layer_picker(viewer, "volume")
        self.split_rgb = PushButton(text="RGB volume: split into channels for 3D")
        self.rendering = ComboBox(choices=RENDERINGS, value="mip", label="rendering")
        self.threshold = FloatSlider(
            value=0.1, min=0.0, max=0.95, step=0.01, label="transparent below"
        )
        self.axis = ComboBox(choices=AXES, value="none", label="clip along")
        self.position = FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, label="position")
        self.flip = CheckBox(value=False, text="flip side")
        self.thickness = FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, label="slab thickness")
        self.azimuth = FloatSlider(
            value=30.0, min=-180.0, max=180.0, step=1.0, label="oblique azimuth"
        )
        self.elevation = FloatSlider(
            value=20.0, min=-90.0, max=90.0, step=1.0, label="oblique elevation"
        )
        self.z_exaggeration = FloatSlider(
            value=1.0, min=0.2, max=20.0, step=0.1, label="z exaggeration"
        )
        self.shot_path = FileEdit(
            mode="w", value="histovol-3d.png", label="screenshot file", filter="*.png"
        )
        self.shot = PushButton(text="Save screenshot")
        super().__init__(
            widgets=[
                self.layer,
                self.split_rgb,
                self.rendering,
                self.threshold,
                self.axis,
                self.position,
                self.flip,
                self.thickness,
                self.azimuth,
                self.elevation,
                self.z_exaggeration,
                self.shot_path,
                self.shot,
            ]
        )
        self._targets: dict[str, list] = {}
        self._base_scale: dict[int, tuple] = {}
        for w in (
            self.rendering,
            self.threshold,
            self.axis,
            self.position,
            self.flip,
            self.thickness,
            self.azimuth,
            self.elevation,
            self.z_exaggeration,
        ):
            w.changed.connect(self.apply)
        self.layer.changed.connect(self._layer_changed)
        self.split_rgb.changed.connect(self.make_rgb_renderable)
        self.shot.changed.connect(self.save_screenshot)

    # ------------------------------------------------------------------ targets
    def targets(self) -> list:
        layer = self.layer.value
        if layer is None:
            return []
        return [t for t in self._targets.get(layer.name, [layer]) if t in self.viewer.layers]

    def _layer_changed(self, *_):
        self.split_rgb.enabled = bool(self.layer.value is not None and self.layer.value.rgb)
        self.apply()

    def make_rgb_renderable(self, *_) -> list:
        """Replace an RGB layer in 3D by three channel layers with additive blending, so that
        opacity follows intensity and the slide (or black background) is transparent."""
        from ..core.image import is_bright_background

        layer = self.layer.value
        if layer is None or not layer.rgb:
            return []
        import numpy as np

        data, scale, translate = _level_for_3d(layer)
        probe = np.asarray(data[data.shape[0] // 2])
        chans, cmaps, top = rgb_channels_for_3d(data, brightfield=is_bright_background(probe))
        made = []
        for c, cmap, label in zip(chans, cmaps, ("R", "G", "B"), strict=True):
            made.append(
                self.viewer.add_image(
                    c,
                    name=f"{layer.name} [{label} 3D]",
                    colormap=cmap,
                    blending="additive",
                    scale=scale,
                    translate=translate,
                    contrast_limits=(0, top),
                    metadata=layer.metadata,
                )
            )
        layer.visible = False
        self._targets[layer.name] = made
        self.viewer.dims.ndisplay = 3
        self.apply()
        return made

    # ------------------------------------------------------------------ apply
    def apply(self, *_) -> None:
        for t in self.targets():
            if t.rgb:
                continue  # napari renders RGB volumes as a per-channel MIP: split them first
            try:
                t.rendering = self.rendering.value
            except (ValueError, AttributeError):
                pass
            lo, hi = t.contrast_limits_range
            if (
                t.colormap.name in ("cyan", "magenta", "yellow", "red", "green", "blue")
                or self.threshold.value > 0
            ):
                t.contrast_limits = (lo + self.threshold.value * (hi - lo), hi)
            base = self._base_scale.setdefault(id(t), tuple(t.scale))
            t.scale = (base[0] * self.z_exaggeration.value, *base[1:])
            shape = t.data.shape if not t.multiscale else t.data[0].shape
            t.experimental_clipping_planes = clipping_planes(
                tuple(shape[-3:]),
                self.axis.value,
                self.position.value,
                thickness=self.thickness.value,
                flip=self.flip.value,
                azimuth_deg=self.azimuth.value,
                elevation_deg=self.elevation.value,
            )

    def save_screenshot(self, *_) -> str:
        path = str(self.shot_path.value)
        self.viewer.screenshot(path, canvas_only=True)
        from napari.utils.notifications import show_info

        show_info(f"saved {path}")
        return path

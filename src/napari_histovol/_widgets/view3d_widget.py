"""'3D view' dock widget: a volume in 3D as a pathologist knows it, and a clipping plane to cut it.

In 3D an RGB (H&E, IHC) layer is drawn in its stain colours with the slide transparent: napari
cannot volume-render RGB, so the widget shows a palette-indexed copy of the layer (every voxel
the index of its nearest stain colour; the colormap gives each index its colour and an opacity
from optical density) and hides the RGB layer; back in 2D the copy goes and the slide view
returns as it was. The clipping plane is moved from the widget or in the canvas: Shift+drag
moves it along its normal, Ctrl+Shift+drag tilts it (the sliders follow).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    PushButton,
)

from ..core.progress import Progress
from ..core.render3d import AXES, clipping_planes, plane_normal, true_colour_style
from ._common import (
    NO_LAYER_TEXT,
    ProgressRow,
    chosen_layer,
    image_layer_picker,
    layers_changed_by_tab,
    plain_viewer,
    wrapping_label,
)

if TYPE_CHECKING:
    import napari

RENDERINGS = ("translucent", "mip", "attenuated_mip", "average", "minip", "iso")
#: Pyramid levels with a longer side are not volume-rendered (GPU texture size) ...
MAX_3D_SIDE = 1024
#: ... and with a software OpenGL (Mesa llvmpipe, no GPU) none longer than this, so that
#: dragging the clipping plane stays interactive (measured in benchmarks/napari_bench.py).
MAX_3D_SIDE_SOFTWARE = 512
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")
COLOUR_SUFFIX = " [3D colour]"
DRAG_HELP = "Canvas: Shift+drag moves the clip,\nCtrl+Shift+drag tilts it."


def _level_for_3d(layer, max_side: int = MAX_3D_SIDE):
    """What to volume-render: the largest pyramid level with sides <= ``max_side`` or, for a
    single level that is larger, that level averaged over s x s pixel blocks (colours are
    averaged before they are looked up in the palette); with the scale and translate that put
    it where level 0 is."""
    if layer.multiscale:
        levels = list(layer.data)
        pick = next((lv for lv in levels if max(lv.shape[1:3]) <= max_side), levels[-1])
    else:
        levels, pick = [layer.data], layer.data
    step = max(1, int(math.ceil(max(pick.shape[1:3]) / max_side)))
    if step > 1:
        pick = _block_mean(pick, step)
    base = levels[0].shape
    factors = [b / p for b, p in zip(base[:3], pick.shape[:3], strict=True)]
    scale = tuple(s * f for s, f in zip(tuple(layer.scale), factors, strict=True))
    translate = tuple(
        t + (f - 1) / 2 * s
        for t, f, s in zip(tuple(layer.translate), factors, tuple(layer.scale), strict=True)
    )
    return pick, scale, translate


def gray_rendering(layer) -> str:
    """The rendering that shows a gray volume's material: ``mip`` where it is bright on a dark
    background (fluorescence); ``translucent`` where it is dark on a bright one (EM,
    brightfield gray): a maximum projection there returns the bright background along every
    ray, a washed-out block (59 % of an ISBI block near white), while the block drawn
    opaque shows its faces: the top section's membranes, the sections' edges on the sides."""
    from ..core.image import is_bright_background

    data = layer.data[-1] if layer.multiscale else layer.data
    n = int(data.shape[0])
    step = max(1, int(math.ceil(max(data.shape[1:3]) / 256)))
    plane = np.asarray(data[n // 2, ::step, ::step])
    return "translucent" if plane.size and is_bright_background(plane) else "mip"


def gl_renderer(viewer) -> str:
    """The OpenGL renderer drawing the viewer's canvas ('' if it cannot be asked)."""
    try:
        from vispy.gloo import gl

        native = viewer.window._qt_viewer.canvas._scene_canvas.native
        native.makeCurrent()
        return str(gl.glGetParameter(gl.GL_RENDERER))
    except Exception:  # noqa: BLE001 - no canvas or no context: no answer
        return ""


def max_3d_side(viewer) -> int:
    """The longest side volume-rendered in this viewer: smaller on a software renderer."""
    renderer = gl_renderer(viewer).lower()
    if any(name in renderer for name in SOFTWARE_RENDERERS):
        return MAX_3D_SIDE_SOFTWARE
    return MAX_3D_SIDE


def _block_mean(data, step: int):
    """Average (Z, Y, X[, C]) data over ``step`` x ``step`` pixel blocks (edges cropped), lazily
    for dask input, in the input's dtype."""
    import dask.array as da

    arr = data if isinstance(data, da.Array) else da.from_array(np.asarray(data))
    y, x = (arr.shape[1] // step) * step, (arr.shape[2] // step) * step
    axes = {1: step, 2: step}
    mean = da.coarsen(np.mean, arr[:, :y, :x].astype(np.float32), axes, trim_excess=True)
    return mean.round().astype(arr.dtype) if arr.dtype.kind in "ui" else mean.astype(arr.dtype)


def _style_sample(data) -> np.ndarray:
    """Up to 8 evenly spaced planes, at most ~256 px a side, to learn the stain palette from."""
    n = data.shape[0]
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, 8))})
    step = max(1, int(math.ceil(max(data.shape[1:3]) / 256)))
    return np.stack([np.asarray(data[i, ::step, ::step]) for i in picks])


class View3DWidget(Container):
    """Show, clip and render a volume layer in 3D."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = plain_viewer(viewer)
        self.layer = image_layer_picker(viewer, "volume")
        self.show3d = PushButton(text="Show in 3D")
        self.rendering = ComboBox(choices=RENDERINGS, value="mip", label="rendering (gray)")
        self.opacity = FloatSlider(value=0.6, min=0.02, max=1.0, step=0.02, label="stain opacity")
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
        self.help = wrapping_label(DRAG_HELP)
        self.shot_path = FileEdit(
            mode="w", value="histovol-3d.png", label="screenshot file", filter="*.png"
        )
        self.shot = PushButton(text="Save screenshot")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.layer,
                self.show3d,
                self.rendering,
                self.opacity,
                self.threshold,
                self.axis,
                self.position,
                self.flip,
                self.thickness,
                self.azimuth,
                self.elevation,
                self.z_exaggeration,
                self.help,
                self.shot_path,
                self.shot,
                self.progress,
            ]
        )
        # per source layer (by id): its colour copy, and what 2D needs back
        self._colour: dict[int, object] = {}
        self._styles: dict[int, object] = {}
        self._restore: dict[int, dict] = {}
        self._base_scale: dict[int, tuple] = {}  # before z exaggeration
        self._hidden_rgb: list = []  # other RGB layers hidden while in 3D
        self._background_set = False
        self._applying = False
        # the gray rendering follows the volume's content until the user picks one
        self._rendering_chosen = False
        self._choosing_rendering = False
        self.rendering.changed.connect(self._rendering_picked)
        for w in (
            self.rendering,
            self.opacity,
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
        self.show3d.changed.connect(self.show_3d)
        self.shot.changed.connect(self.save_screenshot)
        viewer.dims.events.ndisplay.connect(self._ndisplay_changed)
        viewer.mouse_drag_callbacks.append(self._drag_clip)
        viewer.layers.events.removed.connect(self._layer_removed)
        if viewer.dims.ndisplay == 3:
            self._enter_3d()

    # ------------------------------------------------------------------ 2D <-> 3D
    def show_3d(self, *_) -> list:
        """Switch the viewer to 3D (the chosen layer drawn in its colours) and return the layers
        that are rendered. A camera still looking straight down the sections is tilted (a
        volume seen from above looks like one section, whatever its depth). With no layer
        chosen, or a single 2D image, it says so and changes nothing."""
        source = chosen_layer(self.layer)
        if source is None:
            self.progress.status.value = NO_LAYER_TEXT.format(label=self.layer.label)
            return []
        if not _is_volume(source):
            from napari.utils.notifications import show_warning

            text = (
                f"'{source.name}' is a single 2D image: choose a volume (a stack of "
                "sections) in the 'volume' box to see it in 3D."
            )
            show_warning(text)
            self.progress.status.value = text
            return []
        if self.viewer.dims.ndisplay != 3:
            self.viewer.dims.ndisplay = 3  # -> _enter_3d
        else:
            self._enter_3d()
        if abs(float(self.viewer.scene.camera.view_direction[0])) > 0.99:
            tilt_camera(self.viewer)
        return self.targets()

    def _ndisplay_changed(self, event=None) -> None:
        if self.viewer.dims.ndisplay == 3:
            self._enter_3d()
        else:
            self._leave_3d()

    def _rendering_picked(self, *_) -> None:
        if not self._choosing_rendering:
            self._rendering_chosen = True

    def _enter_3d(self) -> None:
        source = self.layer.value
        if source is None or not _is_volume(source):
            return  # napari's own 3D button on a 2D image: nothing of ours to draw
        if not source.rgb and not self._rendering_chosen:
            self._choosing_rendering = True
            try:
                self.rendering.value = gray_rendering(source)
            finally:
                self._choosing_rendering = False
        if source.rgb and id(source) not in self._colour and id(source) not in self._restore:
            self._add_colour_copy(source)
        # napari draws other RGB volumes as opaque white blocks: hide them while in 3D
        for layer in self.viewer.layers:
            if getattr(layer, "rgb", False) and layer.visible and layer is not source:
                layer.visible = False
                self._hidden_rgb.append(layer)
        self.apply()

    def _add_colour_copy(self, source) -> None:
        """Hide the RGB layer and show its colour copy: at once for data in memory, on a thread
        worker with progress for lazy data (a live interpolated or on-disk volume, whose planes
        are computed as they are read), so the window never freezes while planes are made."""
        data, scale, translate = _level_for_3d(source, max_3d_side(self.viewer))
        key = id(source)
        self._restore[key] = {"visible": source.visible}
        source.visible = False
        place = {"scale": scale, "translate": translate}
        if not hasattr(data, "dask"):
            style = self._styles.get(key)
            if style is None:
                style = self._styles[key] = true_colour_style(_style_sample(data))
            self._show_colour_copy(source, style.indices(np.asarray(data)), style, place)
            return
        known = self._styles.get(key)

        def make():
            n = int(data.shape[0])
            yield Progress(0, n + 1, "learning the stain colours", stage="3D colour")
            style = known if known is not None else true_colour_style(_style_sample(data))
            index = np.empty(tuple(data.shape[:3]), np.uint8)
            for z in range(n):
                index[z] = style.indices(np.asarray(data[z]))
                yield Progress(z + 1, n + 1, f"plane {z + 1} of {n}", stage="3D colour")
            return style, index

        def show(value) -> None:
            style, index = value
            if self.viewer.dims.ndisplay != 3 or self.layer.value is not source:
                return  # the user has moved on
            self._styles[key] = style
            self._show_colour_copy(source, index, style, place)
            self.apply()
            self.progress.status.value = f"{source.name}: {index.shape[0]} planes in colour"

        self.progress.run(make, show, self.show3d)

    def _show_colour_copy(self, source, index, style, place: dict) -> None:
        with layers_changed_by_tab():  # a display of the source, no tab's input
            copy = self.viewer.add_image(
                index,
                name=source.name + COLOUR_SUFFIX,
                colormap=_colormap(style, self.opacity.value, f"{source.name} stains"),
                contrast_limits=(0, len(style.palette) - 1),
                rendering="translucent",
                blending="translucent",
                interpolation3d="nearest",
                units=source.units,
                axis_labels=source.axis_labels[:3],
                metadata=dict(source.metadata),
                **place,
            )
        self._colour[id(source)] = copy
        if style.brightfield and not self._background_set:
            # the slide's own colour behind the tissue, as on the glass
            self.viewer.canvas.background_color_override = tuple(style.background / 255.0)
            self._background_set = True
        with layers_changed_by_tab():
            self.viewer.layers.selection.active = copy

    def _leave_3d(self) -> None:
        """Back to the slide view: colour copies go, RGB layers show again, scales and clipping
        are undone (no tab's image box follows the layers this removes and re-selects)."""
        with layers_changed_by_tab():
            self._restore_2d()

    def _restore_2d(self) -> None:
        if self.progress.worker is not None:
            self.progress.worker.quit()  # a colour copy still being made is not wanted now
        for copy in list(self._colour.values()):
            if copy in self.viewer.layers:
                self.viewer.layers.remove(copy)
        self._colour.clear()
        for key, restore in list(self._restore.items()):
            source = next((ly for ly in self.viewer.layers if id(ly) == key), None)
            if source is not None:
                source.visible = restore.get("visible", True)
                self.viewer.layers.selection.active = source
        self._restore.clear()
        for layer in self._hidden_rgb:
            if layer in self.viewer.layers:
                layer.visible = True
        self._hidden_rgb.clear()
        for layer in self.viewer.layers:
            base = self._base_scale.pop(id(layer), None)
            if base is not None:
                layer.scale = base
            if getattr(layer, "experimental_clipping_planes", None):
                layer.experimental_clipping_planes = []
        if self._background_set:
            self.viewer.canvas.background_color_override = None
            self._background_set = False

    def _layer_changed(self, *_) -> None:
        if self.viewer.dims.ndisplay == 3:
            self._leave_3d()
            self._enter_3d()

    def _layer_removed(self, event) -> None:
        layer = event.value
        self._styles.pop(id(layer), None)
        copy = self._colour.pop(id(layer), None)
        if copy is not None and copy in self.viewer.layers:
            self.viewer.layers.remove(copy)

    # ------------------------------------------------------------------ targets
    def targets(self) -> list:
        """The layers the controls act on: the colour copy of an RGB layer in 3D, else the
        layer itself."""
        layer = self.layer.value
        if layer is None:
            return []
        copy = self._colour.get(id(layer))
        if copy is not None and copy in self.viewer.layers:
            return [copy]
        return [layer] if layer in self.viewer.layers and not layer.rgb else []

    # ------------------------------------------------------------------ apply
    def apply(self, *_) -> None:
        """Apply rendering, opacity, z exaggeration and the clipping plane to the targets."""
        if self._applying or self.viewer.dims.ndisplay != 3:
            return
        targets = self.targets()
        for t in targets:
            is_copy = t.name.endswith(COLOUR_SUFFIX)
            if is_copy:
                style = self._styles.get(id(self.layer.value))
                # a new colormap only when the opacity moved (each one is a new lookup texture)
                alpha = np.asarray(t.colormap.colors)[:, 3]
                if style is not None and not np.allclose(
                    alpha, style.rgba(self.opacity.value)[:, 3]
                ):
                    t.colormap = _colormap(style, self.opacity.value, t.colormap.name)
            else:
                try:
                    t.rendering = self.rendering.value
                except (ValueError, AttributeError):
                    pass
                lo, hi = t.contrast_limits_range
                if self.threshold.value > 0:
                    t.contrast_limits = (lo + self.threshold.value * (hi - lo), hi)
            base = self._base_scale.setdefault(id(t), tuple(t.scale))
            t.scale = (base[0] * self.z_exaggeration.value, *base[1:])
            t.experimental_clipping_planes = _in_world(
                t,
                clipping_planes(
                    _shape3(t),
                    self.axis.value,
                    self.position.value,
                    thickness=self.thickness.value,
                    flip=self.flip.value,
                    azimuth_deg=self.azimuth.value,
                    elevation_deg=self.elevation.value,
                ),
            )
        self._apply_to_others(targets)

    def _apply_to_others(self, targets: list) -> None:
        """The z exaggeration for every other layer in the viewer, and the clipping plane for
        the Labels layers (segmented objects): at 4x the volume stood 4 times taller than the
        labels drawn in it, and the labels showed above the cut (a helper's journey)."""
        if not targets:
            return
        from napari.layers import Labels

        planes = list(targets[0].experimental_clipping_planes)
        for layer in self.viewer.layers:
            if layer in targets or layer.ndim < 3 or layer.name.endswith(COLOUR_SUFFIX):
                continue
            base = self._base_scale.setdefault(id(layer), tuple(layer.scale))
            layer.scale = (base[0] * self.z_exaggeration.value, *base[1:])
            if isinstance(layer, Labels):
                layer.experimental_clipping_planes = [p.dict() for p in planes]

    # ------------------------------------------------------------------ drag in the canvas
    def _drag_clip(self, viewer, event):
        """Shift+drag: move the clipping plane along its normal; Ctrl+Shift+drag: tilt it. The
        widget's sliders are updated, so they stay the plane's one description."""
        if "Shift" not in event.modifiers or viewer.dims.ndisplay != 3:
            return None
        targets = self.targets()
        if not targets:
            return None
        target = targets[0]
        tilt = "Control" in event.modifiers
        dims = list(event.dims_displayed)
        shape = np.asarray(_shape3(target), float) - 1
        if self.axis.value == "none":  # start a plane facing the viewer
            self._set_oblique(
                -np.asarray(target._world_to_displayed_data_ray(event.view_direction, dims))
            )
        start_world = np.asarray(event.position)
        start_pos = float(self.position.value)
        start_normal = np.asarray(self._normal())
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        camera.mouse_pan = False
        yield
        try:
            while event.type == "mouse_move":
                if tilt:
                    a = np.asarray(target._world_to_displayed_data(start_world, dims))
                    b = np.asarray(
                        target._world_to_displayed_data(np.asarray(event.position), dims)
                    )
                    view = np.asarray(
                        target._world_to_displayed_data_ray(event.view_direction, dims)
                    )
                    self._set_oblique(_tilted(start_normal, b - a, view, shape))
                else:
                    distance = float(
                        np.ravel(
                            target.projected_distance_from_mouse_drag(
                                start_position=start_world,
                                end_position=np.asarray(event.position),
                                view_direction=np.asarray(event.view_direction),
                                vector=start_normal,
                                dims_displayed=dims,
                            )
                        )[0]
                    )
                    extent = max(float(np.abs(start_normal) @ shape), 1.0)
                    self.position.value = round(
                        float(np.clip(start_pos + distance / extent, 0, 1)), 3
                    )
                yield
        finally:
            camera.mouse_pan = True

    def _normal(self) -> tuple:
        axis = self.axis.value
        if axis == "none":
            axis = "z"
        return plane_normal(
            axis,
            azimuth_deg=self.azimuth.value,
            elevation_deg=self.elevation.value,
            flip=self.flip.value,
        )

    def _set_oblique(self, normal) -> None:
        """Point the plane along ``normal`` (z, y, x) by setting the oblique angles."""
        n = np.asarray(normal, float)
        n = n / max(np.linalg.norm(n), 1e-12)
        if self.flip.value:
            n = -n
        self._applying = True
        try:
            self.axis.value = "oblique"
            self.elevation.value = round(float(np.degrees(np.arcsin(np.clip(n[0], -1, 1)))), 1)
            self.azimuth.value = round(float(np.degrees(np.arctan2(n[1], n[2]))), 1)
        finally:
            self._applying = False
        self.apply()

    def save_screenshot(self, *_) -> str:
        """Save the canvas as a PNG and return its path."""
        path = str(self.shot_path.value)
        self.viewer.screenshot(path, canvas_only=True)
        from napari.utils.notifications import show_info

        show_info(f"saved {path}")
        return path


#: where "Show in 3D" points a camera that looks straight down z (scene z, y, x): 40 degrees
#: off the sections' normal, 30 degrees round from y, so the top section is seen in its stain
#: with the stack's depth beside it, as in `histovol demo`. A direction, not napari's Euler
#: angles, whose meaning changed in napari 0.9 (the angles written for the older convention
#: showed the stack edge-on, a thin diagonal sliver nobody could recognise as a slide)
TILTED_DIRECTION = (
    -np.cos(np.radians(40)),
    np.sin(np.radians(40)) * np.cos(np.radians(30)),
    np.sin(np.radians(40)) * np.sin(np.radians(30)),
)


def tilt_camera(viewer) -> None:
    """Point the 3D camera along :data:`TILTED_DIRECTION` (the canvas's up toward -y, as in
    2D) and fit the layers into the canvas."""
    viewer.scene.camera.set_view_direction(TILTED_DIRECTION, up_direction=(0, -1, 0))
    fit = getattr(viewer, "fit_to_view", None)
    if fit is not None:
        fit()
    else:  # napari before 0.9
        viewer.reset_view(reset_camera_angle=False)
    # the fit is for the block seen from above; tilted, its far corners reach further out
    viewer.scene.camera.zoom *= 0.8


def _in_world(layer, planes: list[dict]) -> list[dict]:
    """Clipping planes given in ``layer``'s data coordinates, in the world coordinates napari
    places them in (its scale, translation and any affine: with a pixel size of 0.5 µm a plane
    at data row 60 would otherwise clip at world 60, data row 120)."""
    to_world = layer._data_to_world
    linear = np.asarray(to_world.linear_matrix, float)[-3:, -3:]
    shift = np.asarray(to_world.translate, float)[-3:]
    normals = np.linalg.inv(linear).T
    out = []
    for plane in planes:
        n = normals @ np.asarray(plane["normal"], float)
        out.append(
            {
                **plane,
                "position": tuple(linear @ np.asarray(plane["position"], float) + shift),
                "normal": tuple(n / max(np.linalg.norm(n), 1e-12)),
            }
        )
    return out


def _is_volume(layer) -> bool:
    """Whether an image layer holds a volume (three axes or more besides colour)."""
    return int(layer.ndim) >= 3


def _shape3(layer) -> tuple:
    shape = layer.data[0].shape if layer.multiscale else layer.data.shape
    return tuple(shape[:3]) if layer.rgb else tuple(shape[-3:])


def _bin_edges(n: int) -> np.ndarray:
    """Colormap controls that give integer value k (of 0..n-1) exactly entry k."""
    inner = (np.arange(1, n) - 0.5) / (n - 1)
    return np.concatenate([[0.0], inner, [1.0]])


def _colormap(style, opacity: float, name: str):
    from napari.utils.colormaps import Colormap

    return Colormap(
        style.rgba(opacity),
        controls=_bin_edges(len(style.palette)),
        interpolation="zero",
        name=name,
    )


def _tilted(normal: np.ndarray, drag: np.ndarray, view: np.ndarray, shape: np.ndarray):
    """The normal turned about the axis perpendicular to the drag and the view direction, by
    180 degrees per drag as long as the volume's mean side."""
    view = view / max(np.linalg.norm(view), 1e-12)
    drag = drag - (drag @ view) * view  # the part of the drag seen on screen
    length = float(np.linalg.norm(drag))
    if length < 1e-9:
        return normal
    axis = np.cross(view, drag / length)
    axis /= max(np.linalg.norm(axis), 1e-12)
    angle = math.pi * length / max(float(np.mean(shape)), 1.0)
    c, s = math.cos(angle), math.sin(angle)
    return normal * c + np.cross(axis, normal) * s + axis * (axis @ normal) * (1 - c)

"""'Interpolate sections' widget: a live interpolated layer that follows the frames-between
slider, the method and the sections to replace, and a button that writes it to a file or
computes it into memory.

The live layer is lazy (core ``live_interpolate``): moving the slider rebuilds a dask volume
(milliseconds) and napari computes only the plane it shows; pairs' flows stay in a cache shared
by every rebuild, so a pair is estimated once whatever the frame count. The Sections tab names
the plane under the slider (measured, or synthetic between which sections at which t).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    PushButton,
    Slider,
)
from qtpy.QtCore import QEvent, QObject

from .._layers import layer_volume, result_layer_kwargs
from ..core.errors import HistovolError
from ..core.interpolate import METHODS, PairCache, live_interpolate, parse_z_numbers
from ..core.progress import Progress
from ._common import (
    NO_LAYER_TEXT,
    ProgressRow,
    chosen_layer,
    confirm_overwrite,
    image_layer_picker,
    layers_changed_by_tab,
    plain_viewer,
    replaces_an_input,
)
from ._worker import error_text

if TYPE_CHECKING:
    import napari

#: Milliseconds the controls must rest before the live layer is rebuilt.
DEBOUNCE_MS = 150
_SOURCE_IDS = itertools.count()


class InterpolateWidget(Container):
    """Interpolate the sections of an image layer: live while the controls move, then written
    to a file or computed into memory."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from qtpy.QtCore import QTimer

        self.viewer = viewer = plain_viewer(viewer)
        # never its own live layer, even when the user selects it to look at it
        # nor to a volume that holds generated planes already (a built volume, selected as
        # napari added it: the tab interpolated it again, 181 planes between interpolated
        # ones, on its own; a user who means it chooses it in the box)
        self.layer = image_layer_picker(
            viewer,
            "sections",
            own=lambda: [getattr(self, "result_layer", None), *_generated(self.viewer)],
        )
        self.frames = Slider(value=1, min=0, max=50, label="frames between")
        self.method = ComboBox(choices=METHODS, value="flow", label="method")
        self.model_dir = FileEdit(mode="d", label="model folder", value="")
        self.learn_budget = FloatSpinBox(
            value=60.0, min=5.0, max=3600.0, step=15.0, label="training time (s)", visible=False
        )
        self.replace = LineEdit(value="", label="replace z (e.g. 12,31)")
        self.live = CheckBox(value=True, text="update the interpolated layer as controls move")
        self.output = FileEdit(mode="w", label="write to (optional)", value="")
        self.run_button = PushButton(text="Interpolate")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.layer,
                self.frames,
                self.method,
                self.model_dir,
                self.learn_budget,
                self.replace,
                self.live,
                self.output,
                self.run_button,
                self.progress,
            ]
        )
        self.output.native.setToolTip(
            "Empty: 'Interpolate' computes the layer into memory. A .ome.zarr, .ome.tif, .npy "
            "or folder name: it is written there (an existing output is replaced only after "
            "you confirm)."
        )
        #: pairs' sections and flows, shared by every rebuild of the live layer
        self.cache = PairCache()
        self.result_layer = None
        self.result = None  # the InterpolationResult the layer shows
        self._source = None  # (layer, its data, source key)
        self._runner = None
        self._runner_dir = None
        self._learned = None  # (source key, trained axial model) for the learned method
        self._training = None  # the source key a model is being trained for
        self._told = ""
        self._timer = QTimer(self.native)  # goes with the tab: no rebuild after it closed
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_live)
        for control in (self.frames, self.method, self.replace, self.model_dir):
            control.changed.connect(self._schedule)
        self.model_dir.changed.connect(self._close_runner)
        self.method.changed.connect(lambda m: setattr(self.learn_budget, "visible", m == "learned"))
        self.layer.changed.connect(self._layer_changed)
        self.run_button.changed.connect(self.run)
        # the tab shown with a stack chosen: its live layer at the slider's value at once (a
        # pathologist saw nothing at the default of 1 frame until the slider was moved away
        # and back); a tab the user does not see makes nothing
        self._on_show = _ShowWatcher(self._shown)
        self.native.installEventFilter(self._on_show)

    # ------------------------------------------------------------------ live layer
    def _schedule(self, *_) -> None:
        if self.live.value:
            self._timer.start()  # restarts: one rebuild once the control rests

    def _layer_changed(self, *_) -> None:
        if self.result_layer is not None and self.result_layer in self.viewer.layers:
            self._schedule()
        elif self.native.isVisible():
            self._shown()

    def _shown(self) -> None:
        """The tab is in view: show the chosen stack's live layer if there is none yet."""
        if self.result_layer is not None and self.result_layer in self.viewer.layers:
            return
        layer = self.layer.value
        if layer is not None and layer is not self.result_layer and layer.ndim >= 3:
            self._schedule()

    def _tell(self, text: str) -> None:
        """One message for a bad setting: in the status line, and once as a notification."""
        self.progress.status.value = text
        if text != self._told:
            from napari.utils.notifications import show_warning

            show_warning(text)
        self._told = text

    def _model(self) -> str | None:
        d = str(self.model_dir.value or "")
        return d if d not in ("", ".") else None

    def _output(self) -> Path | None:
        d = str(self.output.value or "")
        return Path(d).expanduser() if d not in ("", ".") else None

    def _settings(self):
        """(layer, replace z) for a rebuild, or None after saying what is wrong."""
        layer = self.layer.value
        if layer is None:
            self._tell(NO_LAYER_TEXT.format(label=self.layer.label))
            return None
        if layer is self.result_layer:
            self._tell("Choose the sections layer, not the interpolated one.")
            return None
        try:
            replace = parse_z_numbers(self.replace.value)
        except HistovolError as e:
            self._tell(error_text(e))
            return None
        return layer, replace

    def _source_volume(self, layer):
        """The layer's volume and its key in the flow cache (the same key while the layer
        holds the same data, so flows survive a change of scale or of frame count)."""
        if (
            self._source is None
            or self._source[0] is not layer
            or self._source[1] is not layer.data
        ):
            self._source = (layer, layer.data, ("layer", next(_SOURCE_IDS)))
            self.cache.clear()  # other sections: the cached pairs cannot be used again
        return layer_volume(layer), self._source[2]

    def update_live(self) -> bool:
        """Rebuild the live interpolated layer from the controls now (the debounce timer calls
        this); returns whether the layer was updated."""
        settings = self._settings()
        if settings is None:
            return False
        layer, replace = settings
        method = self.method.value
        if method == "model" and not self._runner_ready():
            return False
        try:
            vol, key = self._source_volume(layer)
            if method == "learned" and not self._learned_ready(vol, key, replace):
                return False
            result = live_interpolate(
                vol,
                frames_between=int(self.frames.value),
                replace_z=replace,
                method=method,
                runner=self._method_runner(method),
                cache=self.cache,
                source_key=key,
            )
        except HistovolError as e:
            self._tell(error_text(e))
            return False
        self._told = ""
        self._show(layer, result, result.volume.data)
        n, made = len(result.plan.frames), result.plan.n_synthetic
        self.progress.status.value = (
            f"live: {n} planes, {made} generated as you view them ({len(self.cache)} pairs cached)"
        )
        return True

    def _show(self, layer, result, data) -> None:
        """Put ``data`` (the live volume, or it computed) in the result layer, at the same
        physical z: the existing layer is updated, not replaced."""
        vol = result.volume
        kwargs = result_layer_kwargs(vol, name=f"{layer.name} interpolated", like=layer)
        # given, so that napari does not compute generated planes to guess them
        kwargs["contrast_limits"] = tuple(layer.contrast_limits)
        dims = self.viewer.dims
        z = float(dims.point[0]) if dims.ndim >= 3 else None
        out = self.result_layer
        if (
            out is not None
            and out in self.viewer.layers
            # from another stack it is another result: a layer named "... aligned
            # interpolated" held the unaligned sections after the user picked them
            and out.name == kwargs["name"]
            and not out.multiscale
            and out.rgb == kwargs["rgb"]
            and out.data.ndim == data.ndim
        ):
            with out._block_refresh():  # one refresh for data, scale and placement together
                out.data = data
                out.scale = kwargs["scale"]
                out.translate = kwargs["translate"]
                if "units" in kwargs:
                    out.units = kwargs["units"]
                out.metadata = {**out.metadata, **kwargs["metadata"]}
            if z is not None:
                dims.set_point(0, z)
            out.refresh()
        else:
            if kwargs["name"] in self.viewer.layers:
                self.viewer.layers.remove(kwargs["name"])
            with layers_changed_by_tab(self.layer):
                out = self.viewer.add_image(data, **kwargs)
            if z is not None:
                dims.set_point(0, z)
        self.result_layer, self.result = out, result

    # ------------------------------------------------------------------ model runner
    def _runner_ready(self) -> bool:
        """Whether the model runs for the chosen folder; starts it (on a worker) if not."""
        model = self._model()
        if model is None:
            self._tell("Choose the model folder for the model method.")
            return False
        if self._runner is not None and self._runner_dir == model:
            return True
        self._close_runner()
        self._runner_dir = model

        def gen():
            from ..core.interpolate.model import ModelRunner

            yield Progress(0, 1, "loading the model", stage="model")
            return ModelRunner(model)

        def started(runner) -> None:
            if self._runner_dir != model:  # another folder was chosen meanwhile
                runner.close()
                return
            self._runner = runner
            self.update_live()

        self.progress.run(gen, started, self.run_button)
        return False

    def _method_runner(self, method: str):
        """The model runner (``model``) or the trained axial model (``learned``)."""
        if method == "model":
            return self._runner
        if method == "learned" and self._learned is not None:
            return self._learned[1]
        return None

    def _learned_ready(self, vol, key, replace) -> bool:
        """Whether a learned model is trained for these sections; trains one (on a worker,
        within the training time, at the current frame count) if not. One model then serves
        every frame count: the slider does not retrain."""
        if self._learned is not None and self._learned[0] == key:
            return True
        if self._training == key:
            return False
        from ..core.interpolate.plan import make_plan
        from ..core.interpolate.stack import kept_sections
        from ..core.isotropic import axial_geometry
        from ..core.isotropic.run import iter_train_model

        plan = make_plan(vol.meta.with_planes(vol.shape[0]).z_numbers, replace=tuple(replace))
        kept = kept_sections(vol, plan)
        factor = max(2, int(self.frames.value) + 1)
        geometry = axial_geometry(kept.meta, factor)
        budget = float(self.learn_budget.value)
        self._training = key

        def trained(model) -> None:
            self._training = None
            self._learned = (key, model)
            self.update_live()

        self.progress.run(
            lambda: iter_train_model(kept, geometry, time_budget=budget),
            trained,
            self.run_button,
            before_start=lambda w: w.finished.connect(lambda: setattr(self, "_training", None)),
        )
        self.progress.status.value = f"training the learned model on these sections ({budget:g} s)"
        return False

    def _close_runner(self, *_) -> None:
        runner, self._runner = self._runner, None
        self._runner_dir = None
        if runner is not None:
            self.cache.clear()
            runner.close()

    # ------------------------------------------------------------------ materialise / write
    def _confirm_overwrite(self, path: Path) -> bool:
        """Ask before an existing output is replaced."""
        return confirm_overwrite(self.native, path)

    def run(self) -> None:
        """Write the interpolated volume to the output path, or, without one, compute the
        live layer into memory; on a thread worker with progress and Cancel."""
        # a live rebuild still pending would replace the result with the lazy layer again
        self._timer.stop()
        if chosen_layer(self.layer) is None:
            return
        settings = self._settings()
        if settings is None:
            return
        layer, replace = settings
        path = self._output()
        overwrite = False
        refusal = replaces_an_input(self.viewer, path) if path is not None else None
        if refusal:
            self._tell(refusal)
            return
        if path is not None and (path.exists() or path.is_symlink()):
            if not self._confirm_overwrite(path):
                self.progress.status.value = f"not written: '{path.name}' exists already"
                return
            overwrite = True
        try:
            vol, key = self._source_volume(layer)
        except HistovolError as e:
            self._tell(error_text(e))
            return
        opts = dict(
            frames_between=int(self.frames.value),
            replace_z=replace,
            method=self.method.value,
            model_dir=self._model(),
            runner=self._method_runner(self.method.value),
            cache=self.cache,
            source_key=key,
        )

        def gen():
            yield Progress(0, 1, "planning", stage="interpolate")
            result = live_interpolate(vol, **opts)
            try:
                if path is None:
                    out = yield from _compute_planes(result.volume.data)
                    return result, out
                return result, (yield from _write(result, path, overwrite, layer.name, opts))
            finally:
                result.close()  # stops a model runner this job started (not the live one)

        def done(value) -> None:
            result, out = value
            made = result.plan.n_synthetic
            if isinstance(out, np.ndarray):
                self._show(layer, result, out)
                self.progress.status.value = (
                    f"in memory: {out.shape[0]} planes ({made} generated), "
                    f"{out.nbytes / 1e6:.0f} MB"
                )
            else:
                self.progress.status.value = (
                    f"wrote {out}: {result.volume.shape[0]} planes ({made} generated)"
                )

        self.progress.run(
            gen, done, self.run_button, self.frames, self.method, self.replace, self.model_dir
        )


def _generated(viewer) -> list:
    """The viewer's layers whose histovol metadata marks some planes generated."""
    from .sections_widget import histovol_meta

    out = []
    for layer in viewer.layers:
        meta = histovol_meta(layer)
        if meta is not None and any(meta.synthetic):
            out.append(layer)
    return out


class _ShowWatcher(QObject):
    """Calls ``on_show()`` each time the widget it watches is shown (its tab brought forward,
    its dock opened)."""

    def __init__(self, on_show) -> None:
        super().__init__()
        self._on_show = on_show

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Show:
            self._on_show()
        return False


def _compute_planes(data):
    """Compute a lazy volume into memory, a few planes at a time, with progress."""
    n = data.shape[0]
    out = np.empty(data.shape, data.dtype)
    step = max(1, os.cpu_count() or 1)
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = data[start:stop].compute()
        yield Progress(stop, n, f"plane {stop}/{n}", stage="interpolate")
    return out


def _write(result, path: Path, overwrite: bool, name: str, opts: dict):
    """Write through the writers ``histovol interpolate`` uses (folder: resumable)."""
    from ..core.interpolate import iter_write_interpolated_folder
    from ..core.io.atomic import check_output
    from ..core.io.detect import detect_format, iter_write_volume

    fmt = detect_format(path, for_output=True)
    if fmt == "folder":
        params = {
            "input": name,
            "files": list(result.volume.meta.extra["interpolation"]["source_files"]),
            "frames_between": opts["frames_between"],
            "replace": list(opts["replace_z"]),
            "method": opts["method"],
            "model": opts["model_dir"],
        }
        writer = iter_write_interpolated_folder(result, path, overwrite=overwrite, params=params)
    else:
        check_output(path, overwrite=overwrite)
        writer = iter_write_volume(result.volume, path, overwrite=overwrite)
    return (yield from writer)

"""'Segment' dock widget: click an object in a section, see it in that section at once and
through the volume on a thread worker; correct it with negative clicks (a toggle, or Shift- or
Alt-click), scribbles, undo; write the labels and a table of per-object volumes in µm³.

The widget holds no numerics: clicks become :class:`~napari_histovol.core.segment.Prompt`\\ s
of a :class:`~napari_histovol.core.segment.SegmentSession`, which is only touched by one job at
a time (the widget's queue starts the next when the last ends).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FileEdit, PushButton, SpinBox, Table

from .._layers import DISPLAY_KEY, layer_volume
from ..core.errors import HistovolError
from ..core.progress import Progress
from ..core.segment import (
    PretrainedModel,
    Prompt,
    SegmentSession,
    check_model_backend,
    iter_segment_pretrained,
    load_pretrained,
    object_table_csv,
    object_volumes,
)
from ..core.segment.classifier import warm_up
from ..core.segment.prompts import scribbles_from_labels
from ..core.segment.volume import known_voxel_size, label_meta, voxel_volume_um3
from ._common import (
    ProgressRow,
    chosen_layer,
    confirm_overwrite,
    image_layer_picker,
    layer_placement,
    plain_viewer,
    replaces_an_input,
    wrapping_label,
)
from ._worker import error_text

if TYPE_CHECKING:
    import napari

POSITIVE_COLOUR = "#2ecc40"
NEGATIVE_COLOUR = "#ff4136"
LABEL_FORMATS = ("ome-zarr", "ome-tiff")


def _flip_held() -> bool:
    """Whether Shift or Alt is held now (a click with either is of the other kind)."""
    from qtpy.QtCore import Qt
    from qtpy.QtGui import QGuiApplication

    mods = QGuiApplication.keyboardModifiers()
    return bool(mods & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.AltModifier))


class SegmentWidget(Container):
    """Prompt-based 3D segmentation of an image layer: '<name> prompts' (Points: green for
    "this is the object", red for "this is not"), '<name> scribbles' (Labels: paint with an
    object's id to mark it, with an id no click uses for background) and '<name> objects'
    (Labels: the result, at the image's scale and place)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = plain_viewer(viewer)
        self.layer = image_layer_picker(viewer, "image")
        self.start_button = PushButton(text="Start: add prompt layers")
        self.object_id = SpinBox(value=1, min=1, max=65535, label="object")
        self.new_object = PushButton(text="New object")
        self.negative = CheckBox(
            value=False, text="negative clicks (Shift- or Alt-click: the other kind)"
        )
        self.undo_button = PushButton(text="Undo last click")
        self.update_button = PushButton(text="Segment all objects (after scribbling)")
        self.model_path = FileEdit(
            mode="d",
            label="pretrained model",
            value="",
            tooltip="optional: a local nnInteractive model folder that segments each clicked "
            "object in 3D instead of the weight-free method (nothing is downloaded; its "
            "licence is shown)",
        )
        self.output = FileEdit(mode="w", label="labels to", filter="*.ome.zarr *.tif", value="")
        self.write_button = PushButton(text="Write labels")
        self.table = Table(value={"object": [], "voxels": [], "volume (µm³)": []})
        from qtpy.QtWidgets import QStyledItemDelegate

        # as written: magicgui's delegate shows 307501 voxels as 3.075e+05 and 687.65 µm³ as
        # 687.6500, unlike the command line and the CSV
        self.table.native.setItemDelegate(QStyledItemDelegate(self.table.native))
        self.table_path = FileEdit(mode="w", label="volumes CSV", filter="*.csv", value="")
        self.table_button = PushButton(text="Save volumes table")
        self.info = wrapping_label("choose the image, then Start")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.layer,
                self.start_button,
                self.object_id,
                self.new_object,
                self.negative,
                self.undo_button,
                self.update_button,
                self.model_path,
                self.info,
                self.progress,
                self.table,
                self.table_path,
                self.table_button,
                self.output,
                self.write_button,
            ]
        )
        self.session: SegmentSession | None = None
        self.image = None
        self.points = None
        self.scribbles = None
        self.objects = None
        self.volume = None
        self.prompts: list[Prompt] = []
        self.rows: list[dict[str, Any]] = []
        self._grid: list[int] | None = None
        self._synced: dict[int, tuple] = {}
        self._dirty: dict[int, int | None] = {}
        self._generation: dict[int, int] = {}
        self._shown: dict[int, set[int]] = {}
        self._scribbles_dirty = False
        self._guard = False
        self._running: int | None = None
        self._model: PretrainedModel | None = None
        self.start_button.changed.connect(self.start)
        self.new_object.changed.connect(self._new_object)
        self.negative.changed.connect(self._defaults)
        self.object_id.changed.connect(self._defaults)
        self.undo_button.changed.connect(self.undo)
        self.update_button.changed.connect(self.segment_all)
        self.write_button.changed.connect(self.write_labels)
        self.table_button.changed.connect(self.save_table)
        self.model_path.changed.connect(self._model_changed)
        viewer.layers.events.removed.connect(self._session_layer_removed)

    def _session_layer_removed(self, event) -> None:
        """The image, prompts or objects layer of the session was closed: the session ends
        (clicks ran on and reported sections that nothing showed: a helper's journey)."""
        layer = event.value
        if self.session is None or not any(
            layer is ly for ly in (self.image, self.points, self.objects)
        ):
            return
        if self.progress.worker is not None:
            self.progress.worker.quit()
        self.session = None
        self._dirty.clear()
        text = f"'{layer.name}' was closed: press Start to segment again"
        self._tell(text)
        self.progress.status.value = text

    # ------------------------------------------------------------------------- set up
    def start(self, *_) -> None:
        """Open a session on the chosen image and add its prompts, scribbles and objects
        layers (replacing those of an earlier session)."""
        layer = chosen_layer(self.layer)
        if layer is None:
            return
        if self.progress.worker is not None:
            self._tell("wait for the running job to end (or cancel it)")
            return
        try:
            volume = layer_volume(layer)
            session = SegmentSession(
                volume.data,
                rgb=volume.meta.rgb,
                # a layer scaled in µm is taken at its word (napari's own scale)
                sampling=known_voxel_size(volume.meta)
                or (volume.meta.scale if volume.meta.unit == "micrometer" else None),
            )
        except HistovolError as e:
            self._tell(error_text(e))
            return
        self.image, self.volume, self.session = layer, volume, session
        # the classifier's library loads while the user aims at the first object
        threading.Thread(target=warm_up, name="segment-warm-up", daemon=True).start()
        self.prompts, self._synced, self._dirty, self._shown = [], {}, {}, {}
        self._generation = {}
        grid = (layer.metadata.get(DISPLAY_KEY) or {}).get("plane")
        nz = volume.shape[0]
        self._grid = list(grid) if grid and layer.ndim == 3 else list(range(nz))
        shown = (len(self._grid), *volume.shape[1:3]) if layer.ndim == 3 else volume.shape[1:3]
        place = layer_placement(layer, layer.ndim)
        # the earlier session's layers go: not taken for this session's being closed
        self.points = self.scribbles = self.objects = None
        for suffix in ("prompts", "scribbles", "objects"):
            name = f"{layer.name} {suffix}"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.objects = self.viewer.add_labels(
            np.zeros(shown, np.uint16), name=f"{layer.name} objects", opacity=0.5, **place
        )
        self.scribbles = self.viewer.add_labels(
            np.zeros(shown, np.uint16), name=f"{layer.name} scribbles", **place
        )
        self.points = self.viewer.add_points(
            np.zeros((0, layer.ndim)),
            name=f"{layer.name} prompts",
            features={
                "object": np.zeros(0, np.int64),
                "positive": np.zeros(0, bool),
            },
            size=max(6.0, 0.025 * max(volume.shape[1:3])),  # visible at the whole view
            border_color="white",
            **place,
        )
        self._defaults()
        self.points.events.data.connect(self._points_changed)
        self.scribbles.events.paint.connect(self._scribbled)
        self.scribbles.events.data.connect(self._scribbled)
        self.points.mode = "add"
        self.viewer.layers.selection.active = self.points
        self._tell(
            "click an object (Shift- or Alt-click: the other kind of click); "
            f"{volume.shape[0]} sections"
        )
        self._table()

    def _defaults(self, *_) -> None:
        """New points take the chosen object and kind (and the colour that shows it)."""
        if self.points is not None:
            self.points.feature_defaults = {
                "object": int(self.object_id.value),
                "positive": not self.negative.value,
            }

    def _new_object(self, *_) -> None:
        used = {p.object for p in self.prompts}
        self.object_id.value = max(used | {int(self.object_id.value) - 1}) + 1

    def _tell(self, text: str) -> None:
        self.info.value = text

    def _refuse(self, text: str) -> None:
        """Say that a file was not written, on the progress line too (which still said "wrote
        ..." from the last write when the user declined to replace it; a helper's journey)."""
        self._tell(text)
        self.progress.status.value = text

    # ------------------------------------------------------------------------- prompts
    def _plane_of(self, shown: float) -> int | None:
        """The volume plane of a displayed plane (None for an empty plane shown for a gap)."""
        i = int(round(shown))
        if not 0 <= i < len(self._grid):
            return None
        plane = self._grid[i]
        return plane if plane >= 0 else None

    def _prompt(self, coords: np.ndarray, obj: int, positive: bool) -> Prompt | None:
        if len(coords) == 2:
            z, (y, x) = 0, coords
        else:
            z = self._plane_of(coords[0])
            y, x = coords[1:]
            if z is None:
                return None
        return Prompt(int(z), int(round(y)), int(round(x)), int(obj), bool(positive))

    def _points_changed(self, event) -> None:
        if self._guard or self.session is None:
            return
        action = str(getattr(event, "action", ""))
        if action.endswith("ADDED") or action == "added":
            self._clicked(list(getattr(event, "data_indices", ()) or ()))
        elif action.endswith(("REMOVED", "CHANGED")) or action in ("removed", "changed"):
            self._from_layer()

    def _clicked(self, indices: list[int]) -> None:
        """New points (a user's click): their kind follows the toggle, flipped by Shift/Alt."""
        flip = _flip_held()
        positive = (not self.negative.value) != flip
        obj = int(self.object_id.value)
        features = self.points.features
        bad = []
        shape = self.session.shape
        n = len(self.points.data)
        for i in sorted({int(i) % n for i in indices}) if n else ():  # napari says -1: the last
            p = self._prompt(self.points.data[i], obj, positive)
            if p is None or not (0 <= p.y < shape[1] and 0 <= p.x < shape[2]):
                bad.append(i)
                continue
            features.iloc[i, features.columns.get_loc("object")] = obj
            features.iloc[i, features.columns.get_loc("positive")] = positive
            self.prompts.append(p)
            self._mark(obj, p.z)
        if bad:
            self._guard = True
            try:
                self.points.selected_data = set(bad)
                self.points.remove_selected()
            finally:
                self._guard = False
            self._tell("a click outside the image (or on a missing section) was ignored")
        elif len(indices):
            self._tell(self._click_summary(obj))
        self._colour()
        self._pump()

    def _click_summary(self, obj: int) -> str:
        """What object ``obj`` has been given so far (the info line after a click)."""
        pos = sum(p.positive for p in self.prompts if p.object == obj)
        neg = sum(not p.positive for p in self.prompts if p.object == obj)
        return (
            f"object {obj}: {pos} positive, {neg} negative click(s); "
            "Shift- or Alt-click for the other kind"
        )

    def _from_layer(self) -> None:
        """Points moved or deleted in the layer: the clicks are read back from it."""
        prompts = []
        f = self.points.features
        for i, c in enumerate(self.points.data):
            p = self._prompt(c, int(f["object"].iloc[i]), bool(f["positive"].iloc[i]))
            if p is not None:
                prompts.append(p)
        changed = {p.object for p in set(prompts) ^ set(self.prompts)}
        self.prompts = prompts
        for obj in changed:
            self._mark(obj, None)
        self._colour()
        self._pump()

    def _colour(self) -> None:
        if self.points is None or not len(self.points.data):
            return
        from napari.utils.colormaps.standardize_color import transform_color

        pos = np.asarray(self.points.features["positive"], bool)
        colours = transform_color([POSITIVE_COLOUR, NEGATIVE_COLOUR])
        self.points.face_color = np.where(pos[:, None], colours[0], colours[1])
        self.points.refresh()

    def undo(self, *_) -> None:
        """Remove the last click; its object is segmented again without it."""
        if not self.prompts or self.points is None:
            return
        last = self.prompts.pop()
        self._guard = True
        try:
            self.points.selected_data = {len(self.points.data) - 1}
            self.points.remove_selected()
        finally:
            self._guard = False
        self._tell(f"undone: {'positive' if last.positive else 'negative'} click on {last.object}")
        self._mark(last.object, None)
        self._colour()
        self._pump()

    def _scribbled(self, *_) -> None:
        self._scribbles_dirty = True

    def segment_all(self, *_) -> None:
        """Segment every object again (after scribbles were painted)."""
        if self.session is None:
            self._tell("press Start first")
            return
        self._scribbles_dirty = True
        ids = {p.object for p in self.prompts if p.positive}
        ids |= set(np.unique(self.scribbles.data).tolist()) - {0}
        for obj in sorted(ids):
            self._mark(obj, None)
        self._pump()

    # ------------------------------------------------------------------------- jobs
    def _mark(self, obj: int, z: int | None) -> None:
        """Object ``obj`` needs segmenting again (``z``: the section to show at once)."""
        self._generation[obj] = self._generation.get(obj, 0) + 1
        self._dirty.pop(obj, None)
        self._dirty[obj] = z  # the latest request goes last
        worker = self.progress.worker
        if worker is not None and self._running == obj:
            worker.quit()  # its result is out of date: stop between two sections

    def _sync(self) -> None:
        """Hand the clicks (and scribbles) to the session; objects left with no positive click
        or scribble are cleared. Runs on the GUI thread while no job runs."""
        s = self.session
        s.prompts = list(self.prompts)
        if self._scribbles_dirty:
            keep = [i for i, p in enumerate(self._grid) if p >= 0]
            data = self.scribbles.data[keep] if self.scribbles.data.ndim == 3 else None
            if data is None:
                data = self.scribbles.data[None]
            sc = scribbles_from_labels(data, s.shape)
            s.set_scribbles(sc if sc.points else None)
            self._scribbles_dirty = False
        gone = [obj for obj in list(s.masks) if obj not in s.objects]
        for obj in gone:
            s.masks.pop(obj)
            self._redraw(obj)
        if gone:  # the table listed an object undo had removed from the labels
            self._table()
            self.info.value = f"object {', '.join(map(str, gone))} removed"
            # the progress line still gave the removed object's sections (a helper)
            self.progress.status.value = self.info.value

    def _pump(self, *_) -> None:
        """Start the next queued job when none runs."""
        if self.progress.worker is not None or not self._dirty or self.session is None:
            return
        try:
            self._sync()
        except HistovolError as e:
            self._tell(error_text(e))
            self._dirty.clear()
            return
        obj = next(reversed(self._dirty))
        z = self._dirty[obj]
        if obj not in self.session.objects:
            self._dirty.pop(obj)
            self._pump()
            return
        generation = self._generation[obj]
        s = self.session
        model_folder = self._path(self.model_path)
        if model_folder is not None:  # the pretrained network, in 3D at once
            rgb = self.volume.meta.rgb
            prompts, scribbles, data = list(s.prompts), s.scribbles, self.volume.data

            def gen():
                if not self._model_loaded(model_folder):
                    yield Progress(0, 1, f"loading the model in '{model_folder.name}'", "segment")
                model = self._load_model(model_folder)
                masks = yield from iter_segment_pretrained(
                    data, model, prompts, [obj], rgb=rgb, scribbles=scribbles
                )
                return masks.get(obj, {}), model.licence

            def done(result) -> None:
                if self.session is not s:
                    return  # the session ended (its layers closed) meanwhile
                per_z, licence = result
                s.masks[obj] = per_z
                self._redraw(obj)
                if self._generation[obj] == generation:
                    self._dirty.pop(obj, None)
                self._table()
                self.progress.status.value = f"object {obj}: {len(per_z)} section(s)"
                self._tell(
                    f"object {obj}: nnInteractive, {len(per_z)} section(s); "
                    f"model licence: {licence}"
                )

        elif z is not None:  # the clicked section at once, then the volume

            def gen():
                yield Progress(0, 1, f"object {obj}: section {z}", "segment")
                s.segment_section(obj, z)
                # one more yield, so that a Cancel pressed while the section was computed
                # ends the job here (the worker looks between two yields), before the volume
                # step is queued: it ran to its end, then the whole volume was segmented
                yield Progress(1, 1, f"object {obj}: section {z} done", "segment")
                return None

            def done(_) -> None:
                if self.session is not s:
                    return  # the session ended (its layers closed) meanwhile
                self._redraw(obj, [z])
                if self._dirty.get(obj, -1) == z and self._generation[obj] == generation:
                    self._dirty[obj] = None
                self.progress.status.value = f"object {obj}: section {z} done; volume next"
        else:

            def gen():
                return (yield from s.iter_segment_object(obj))

            def done(n) -> None:
                if self.session is not s:
                    return  # the session ended (its layers closed) meanwhile
                self._redraw(obj)
                if self._generation[obj] == generation:
                    self._dirty.pop(obj, None)
                self._table()
                self.progress.status.value = f"object {obj}: {n} section(s)"

        def hooks(worker) -> None:  # before it starts: a quick job ends at once
            worker.errored.connect(lambda *_: self._dirty.pop(obj, None))
            worker.aborted.connect(lambda *_: self._cancelled(obj, generation))
            worker.finished.connect(self._finished)

        self._running = obj
        self.progress.run(gen, done, self.write_button, self.update_button, before_start=hooks)

    def _model_changed(self, *_) -> None:
        """A new model folder: loaded by the next job (on its worker); say so."""
        self._model = None
        folder = self._path(self.model_path)
        if folder is None:
            self._tell("clicks are segmented by the weight-free method")
            return
        try:
            check_model_backend(folder)
        except HistovolError as e:
            self._tell(error_text(e))
            return
        self._tell(f"clicks will be segmented by the nnInteractive model in '{folder.name}'")

    def _model_loaded(self, folder: Path) -> bool:
        return self._model is not None and self._model.folder == folder

    def _load_model(self, folder: Path) -> PretrainedModel:
        """The model in ``folder``, loaded once (on the job's worker)."""
        if not self._model_loaded(folder):
            self._model = load_pretrained(folder)
        return self._model

    def _cancelled(self, obj: int, generation: int) -> None:
        if self._generation.get(obj) == generation:  # the user's Cancel, not a newer click
            self._dirty.pop(obj, None)

    def _finished(self, *_) -> None:
        self._running = None
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, self._pump)

    def _redraw(self, obj: int, zs: list[int] | None = None) -> None:
        """Draw the session's label planes where ``obj`` was or is now."""
        if self.session is None or self.objects not in self.viewer.layers:
            return  # the session ended (its layers closed) while the job ran
        now = set(self.session.masks.get(obj, {}))
        planes = set(zs) if zs is not None else now | self._shown.get(obj, set())
        self._shown[obj] = (self._shown.get(obj, set()) | set(planes)) if zs else now
        data = self.objects.data
        for z in planes:
            plane = self.session.label_plane(z, np.uint16)
            if data.ndim == 2:
                data[:] = plane
            else:
                data[self._grid.index(z)] = plane
        self.objects.refresh()

    # ------------------------------------------------------------------------- output
    def _table(self) -> None:
        """The per-object volumes (voxels and µm³) shown in the table."""
        counts = self.session.voxel_counts() if self.session is not None else {}
        um3 = voxel_volume_um3(self.volume.meta) if self.volume is not None else None
        self.rows = object_volumes(counts, um3)
        self.table.value = {
            "object": [r["object"] for r in self.rows],
            "voxels": [r["voxels"] for r in self.rows],
            "volume (µm³)": [
                "" if r["volume_um3"] is None else f"{r['volume_um3']:.6g}" for r in self.rows
            ],
        }

    def _confirm_overwrite(self, path: Path) -> bool:
        """Ask before an existing output is replaced."""
        return confirm_overwrite(self.native, path)

    def _path(self, widget: FileEdit) -> Path | None:
        text = str(widget.value or "").strip()
        return Path(text).expanduser() if text and text != "." else None

    def save_table(self, *_) -> Path | None:
        """Write the per-object volumes as CSV (``object,voxels,volume_um3``)."""
        from ..core.io.atomic import write_text

        path = self._path(self.table_path)
        if path is None:
            self._tell("choose where to save the volumes table")
            return None
        if self.progress.worker is not None:
            self._tell("wait for the running job to end, then save the table")
            return None
        self._table()
        overwrite = path.exists()
        if overwrite and not self._confirm_overwrite(path):
            self._refuse(f"not saved: '{path.name}' exists already")
            return None
        try:
            out = write_text(path, object_table_csv(self.rows), overwrite=overwrite)
        except HistovolError as e:
            self._tell(error_text(e))
            return None
        self._tell(f"saved {out.name}: {len(self.rows)} object(s)")
        return out

    def write_labels(self, *_) -> None:
        """Write the label volume (object k's voxels hold k, the image's scale) through the
        writers ``histovol segment`` uses, on a thread worker."""
        from ..core.io.atomic import check_output
        from ..core.io.detect import detect_format, iter_write_volume, writer_accepts
        from ..core.io.volume import Volume

        path = self._path(self.output)
        if self.session is None or path is None:
            self._tell("segment an object and choose where to write the labels first")
            return
        if self.progress.worker is not None:
            self._tell("wait for the running job to end, then write")
            return
        try:
            fmt = detect_format(path, for_output=True)
        except HistovolError as e:
            self._tell(error_text(e))
            return
        if fmt not in LABEL_FORMATS:
            self._tell("labels are written to .ome.zarr or .tif; name the output so")
            return
        refusal = replaces_an_input(self.viewer, path)
        if refusal:
            self._refuse(refusal)  # the progress line said how the previous write ended
            return
        overwrite = path.exists() or path.is_symlink()
        if overwrite and not self._confirm_overwrite(path):
            self._refuse(f"not written: '{path.name}' exists already")
            return
        meta = label_meta(self.volume.meta.with_planes(self.volume.shape[0]))
        labels = Volume(self.session.labels(), meta)
        opts = {"n_levels": 1} if writer_accepts(fmt, "n_levels") else {}

        def gen():
            check_output(path, overwrite=overwrite)
            return (yield from iter_write_volume(labels, path, overwrite=overwrite, **opts))

        def done(out) -> None:
            self.progress.status.value = f"wrote {Path(out).name}"
            self._tell(f"labels written to {Path(out).name}")

        self.progress.run(
            gen,
            done,
            self.write_button,
            self.update_button,
            before_start=lambda worker: worker.finished.connect(self._finished),
        )

"""Pieces the dock widgets share: a progress row with cancel, and layer <-> volume helpers."""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton

from ..core.progress import Progress
from ._worker import run_progress_generator


def plain_viewer(viewer):
    """The viewer itself when napari hands a dock widget its ``PublicOnlyProxy``.

    A widget docked from the Plugins menu gets the viewer through that proxy, and every layer
    read through it comes wrapped in a new proxy, so ``is`` never matches a layer napari's own
    events carry: the Interpolate tab took its live layer for its input and re-interpolated it
    at every slider move (19 -> 37 -> 145 planes), and the 3D tab removed and re-made its colour
    layers in a loop. The tabs compare layers by identity, so they keep the plain viewer.
    """
    return getattr(viewer, "__wrapped__", viewer)


#: the tabs changing layers right now, innermost last: each one's own image box (None: no box
#: follows, as for a focus map or a colour copy for 3D)
_CHANGING: list = []


@contextmanager
def layers_changed_by_tab(own_picker=None):
    """Add, select or remove a tab's layers inside this.

    napari selects a layer it adds, and the user sees it selected: the other tabs' image boxes
    take it, as the next step's input (after Align, QC and Isotropic work on the aligned stack;
    clicking the already selected layer fires nothing, so a box that waited for a click never
    took it). The tab's own box, ``own_picker``, keeps its input (Align would align the aligned
    stack again, the Interpolate tab would interpolate its own live layer). With no picker, no
    box follows: a display added, or a selection the tab moves (leaving 3D re-selects the
    source of a colour copy; replacing QC masks leaves another layer selected).
    """
    _CHANGING.append(own_picker)
    try:
        yield
    finally:
        _CHANGING.pop()


def image_layer_picker(viewer, label: str, own: Callable[[], list] | None = None):
    """A combo box of the viewer's image layers that follows layers being added or removed,
    starts on the selected image layer, and follows the image layer the user selects in the
    layer list (a user who opened an aligned volume and then the raw sections found the Align
    tab set to the aligned volume, the first layer), or that napari selects on adding it,
    unless its own tab added it (see :func:`layers_changed_by_tab`). ``own`` lists layers
    the box never follows a selection to (the Interpolate tab's live layer, which it cannot
    take as input: selecting it to look at it froze the slider)."""
    import napari
    from magicgui.widgets import create_widget

    picker = create_widget(annotation=napari.layers.Image, label=label)

    def follow_selection(_event=None) -> None:
        active = viewer.layers.selection.active
        if active is None or (_CHANGING and _CHANGING[-1] in (None, picker)):
            return
        if own is not None and any(active is layer for layer in own()):
            return
        if isinstance(active, napari.layers.Image):
            picker.reset_choices()
            if active in picker.choices:
                picker.value = active

    viewer.layers.events.inserted.connect(picker.reset_choices)
    viewer.layers.events.removed.connect(picker.reset_choices)
    viewer.layers.selection.events.active.connect(follow_selection)
    follow_selection()
    return picker


def micrometre_box(label: str, *, value: float, min: float, max: float, step: float):
    """A spin box for a length in µm with five decimals: EM's 4 nm pixels (0.004 µm) and 5 or
    50 nm sections (two decimals made them 0, read as "none given")."""
    from magicgui.widgets import FloatSpinBox

    box = FloatSpinBox(value=value, min=min, max=max, step=step, label=label)
    box.native.setDecimals(5)
    return box


def text_overlay(viewer):
    """The canvas text overlay (napari >= 0.9 keeps it under ``viewer.canvas.overlays``)."""
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None)
    text = getattr(overlays, "text", None) if overlays is not None else None
    return text if text is not None else viewer.text_overlay


def layer_placement(layer, ndim: int = 3) -> dict[str, tuple]:
    """``scale``, ``translate``, ``units`` and ``axis_labels`` of ``layer``'s first ``ndim``
    axes: a layer made from it (masks, labels, prompts) lies on it in the same units (napari
    turns units off for the whole viewer when layers disagree)."""
    return {
        "scale": tuple(layer.scale)[:ndim],
        "translate": tuple(layer.translate)[:ndim],
        "units": tuple(layer.units)[:ndim],
        "axis_labels": tuple(layer.axis_labels)[:ndim],
    }


#: what a tab says when its image box is empty (every tab has one, named by its label)
NO_LAYER_TEXT = "Open an image, then choose it in the '{label}' box of this tab."


def chosen_layer(layer_widget):
    """The layer picked in a layer combo box, or None after telling the user to pick one."""
    layer = layer_widget.value
    if layer is None:
        from napari.utils.notifications import show_warning

        show_warning(NO_LAYER_TEXT.format(label=layer_widget.label or "image"))
    return layer


def wrapping_label(value: str = "", **kwargs) -> Label:
    """A label whose long text wraps instead of widening the panel (magicgui fixes a label's
    height at one line: the layout is let ask the wrapped label for its height at its width)."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value, **kwargs)
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    return label


def replaces_an_input(viewer, path, *inputs) -> str | None:
    """The one-sentence refusal when writing ``path`` would replace one of ``inputs`` or the
    file or folder a layer of ``viewer`` was opened from (napari keeps showing a replaced
    image from memory, so the user would not see it is gone); None when it would not."""
    from ..core.errors import OutputError
    from ..core.io.atomic import check_not_input

    sources = [(str(p), None) for p in inputs if p]
    for layer in viewer.layers:
        src = getattr(getattr(layer, "source", None), "path", None)
        if src:
            sources.append((str(src), layer.name))
    for src, name in sources:
        try:
            check_not_input(path, [src], not_inside=True)
        except OutputError as e:
            return f"{e} (it is open as layer '{name}')" if name else str(e)
    return None


def confirm_overwrite(parent, path) -> bool:
    """Ask (Yes / No, No by default) before an existing output at ``path`` is replaced."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        parent,
        "Replace the output?",
        f"'{path}' exists already. Replace it?",
        QMessageBox.Yes | QMessageBox.No,
        QMessageBox.No,
    )
    return answer == QMessageBox.Yes


#: how long closing napari waits for a cancelled job's thread to end
CLOSE_WAIT_MS = 30_000


def _unless_closed(row, fn):
    """``fn`` as a worker's slot that does nothing once ``row``'s widgets are gone."""

    def slot(*args):
        if row.closed:
            return None
        try:
            return fn(*args)
        except RuntimeError as e:  # a widget deleted under the slot: the window closed
            if "has been deleted" not in str(e):
                raise
            row.closed = True
            return None

    return slot


class ProgressRow(Container):
    """A progress bar, a status line that always says how the last job ended (done, cancelled,
    failed: why), and a Cancel button."""

    def __init__(self) -> None:
        self.bar = ProgressBar(value=0, min=0, max=1, visible=False)
        self.status = wrapping_label()
        self.cancel = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self.bar, self.status, self.cancel], labels=False)
        self.worker = None
        self._ended = False
        #: set when the row's widgets are gone (napari closed while a job ran)
        self.closed = False
        self.cancel.changed.connect(self._cancel)
        self.native.destroyed.connect(self._closing)

    def _closing(self, *_) -> None:
        """The window is closing with a job running: cancel it (as the Cancel button does,
        so a tab's own hooks stop its threads too) and wait for its thread, so that nothing
        touches the deleted widgets and no thread is left running at exit (quitting napari
        mid-fit aborted the process: a helper's journey)."""
        self.closed = True
        worker = self.worker
        if worker is None:
            return
        self.cancel.changed.emit(True)
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(CLOSE_WAIT_MS)

    def run(
        self,
        make_generator: Callable[[], Generator[Progress, None, Any]],
        on_done: Callable[[Any], None],
        *buttons: PushButton,
        before_start: Callable | None = None,
        source=None,
    ):
        """Run a core progress generator on a thread worker shown in this row; ``buttons``
        are disabled until it finishes (done, failed or cancelled). ``before_start(worker)``
        connects further signals before the worker starts (see
        :func:`._worker.run_progress_generator`).

        ``source``, a ``(viewer, layer)`` pair: the job is about that layer. Closing it
        cancels the job, and a result that comes after it was closed is not shown (a QC run
        on a layer closed mid-way raised ValueError selecting it and added a masks layer for
        a layer that was gone; a focus map was added for one; a fit ran on for minutes:
        helpers' journeys)."""
        for b in buttons:
            b.enabled = False
        self._ended = False
        viewer, layer = source if source is not None else (None, None)
        gone: list[str] = []

        def removed(event) -> None:
            if event.value is layer and self.worker is not None:
                gone.append(layer.name)
                self.cancel.changed.emit(True)  # as the Cancel button: a tab's own hooks too

        if viewer is not None:
            viewer.layers.events.removed.connect(removed)

        def done(value) -> None:
            self._ended = True
            if viewer is not None and (gone or layer not in viewer.layers):
                self.status.value = f"'{layer.name}' was closed while the job ran; nothing shown"
                return
            self.status.value = "done"
            on_done(value)  # may put a more telling summary in the status line

        def failed(text: str) -> None:
            self._ended = True
            self.status.value = f"failed: {text}"

        def cancelled() -> None:
            self._ended = True
            self.status.value = f"cancelled: '{gone[0]}' was closed" if gone else "cancelled"

        def finished() -> None:
            if viewer is not None:
                viewer.layers.events.removed.disconnect(removed)
            self.finish()
            for b in buttons:
                b.enabled = True

        worker = run_progress_generator(
            make_generator,
            on_progress=_unless_closed(self, self.update),
            on_done=_unless_closed(self, done),
            on_error=_unless_closed(self, failed),
            on_cancelled=_unless_closed(self, cancelled),
            on_finished=_unless_closed(self, finished),
            before_start=before_start,
        )
        self.start(worker)
        return worker

    def start(self, worker) -> None:
        self.worker = worker
        self.bar.visible = True
        self.bar.value = 0
        self.cancel.enabled = True
        self.status.value = "starting..."

    def update(self, p: Progress) -> None:
        if self._ended or (self.worker is not None and self.worker.abort_requested):
            return  # a progress message still on its way must not hide how the job ended
        self.bar.max = max(1, p.total)
        self.bar.value = min(p.done, self.bar.max)
        self.status.value = f"{p.stage}: {p.message}" if p.stage else p.message

    def finish(self) -> None:
        self.cancel.enabled = False
        self.bar.visible = False
        self.worker = None

    def _cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            if not self.closed:
                self.status.value = "cancelling..."

"""'Isotropic volume' tab: reconstruct planes along z with a network learned from the volume's
own x-y planes (``histovol isotropic``).

Training shows its loss and the PSNR on held-back planes (with the cubic spline's for
comparison) as it goes. *Stop training* ends training early and keeps the best model so far:
the volume is then reconstructed with it. Cancel abandons the whole job.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from magicgui.widgets import Container, FloatSpinBox, PushButton

from .._layers import add_volume_layer, layer_volume
from ..core.errors import HistovolError
from ..core.isotropic import DEFAULT_TIME_BUDGET, MAX_FACTOR
from ..core.progress import Progress
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

#: Results up to this size are computed on the worker and shown in memory; larger ones are
#: shown lazily (each view computes its blocks).
IN_MEMORY_BYTES = 1 << 30


def _reconstruct(volume, factor: float, budget: float, stop: threading.Event):
    from ..core.isotropic import iter_isotropic

    result = yield from iter_isotropic(
        volume, factor=factor, time_budget=budget, should_stop=stop.is_set
    )
    if result.volume.nbytes <= IN_MEMORY_BYTES:
        import dask.array as da

        data = yield from _compute_by_blocks(result.volume.data)
        result.volume = type(result.volume)(da.from_array(data), result.volume.meta)
    return result


def _compute_by_blocks(data):
    """Compute a lazy volume into memory one lateral block (all planes) at a time, with
    progress: Cancel is looked at between two blocks (computed at once, a Cancel waited for
    the whole reconstruction, 42 s in a helper's journey)."""
    import numpy as np

    out = np.empty(data.shape, data.dtype)
    ys = np.cumsum((0,) + data.chunks[1])
    xs = np.cumsum((0,) + data.chunks[2])
    total = (len(ys) - 1) * (len(xs) - 1)
    yield Progress(0, total, "reconstructing the planes", stage="apply")
    k = 0
    for y0, y1 in zip(ys[:-1], ys[1:], strict=True):
        for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
            out[:, y0:y1, x0:x1] = data[:, y0:y1, x0:x1].compute()
            k += 1
            yield Progress(k, total, f"block {k}/{total}", stage="apply")
    return out


#: A held-back gain (dB) below which the tab says training learned next to nothing.
NEXT_TO_NOTHING_DB = 0.05


class IsotropicWidget(Container):
    """Axial reconstruction of a volume layer at a factor, within a time budget."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = plain_viewer(viewer)
        self.layer = image_layer_picker(viewer, "volume")
        self.factor = FloatSpinBox(
            value=4.0, min=1.0, max=float(MAX_FACTOR), step=0.5, label="planes per section"
        )
        self.time_budget = FloatSpinBox(
            value=DEFAULT_TIME_BUDGET, min=5.0, max=86400.0, step=30.0, label="time budget (s)"
        )
        self.run_button = PushButton(text="Reconstruct")
        self.stop_button = PushButton(text="Stop training (keep model)", enabled=False)
        self.progress = ProgressRow()
        self.summary = wrapping_label()
        super().__init__(
            widgets=[
                self.layer,
                self.factor,
                self.time_budget,
                self.run_button,
                self.stop_button,
                self.progress,
                self.summary,
            ]
        )
        self.run_button.changed.connect(self.run)
        self.stop_button.changed.connect(self._stop_training)
        self._stop = threading.Event()
        self.result = None
        self.worker = None

    def run(self) -> None:
        from napari.utils.notifications import show_error

        layer = chosen_layer(self.layer)
        if layer is None:
            return
        try:
            volume = layer_volume(layer)
            if volume.data.ndim < 3 or volume.shape[0] < 2:
                raise HistovolError(
                    f"'{layer.name}' has fewer than two planes: choose a volume of sections."
                )
            from ..core.isotropic import axial_geometry

            axial_geometry(volume.meta.with_planes(volume.shape[0]), self.factor.value)
        except HistovolError as exc:
            # the status line said "done" from the run before (a helper's journey)
            self.progress.status.value = f"not started: {exc}"
            show_error(str(exc))
            return
        self.summary.value = ""
        stop = self._stop = threading.Event()
        self.stop_button.enabled = True
        factor, budget = float(self.factor.value), float(self.time_budget.value)
        self.worker = self.progress.run(
            lambda: _reconstruct(volume, factor, budget, stop),
            lambda result: self._show(layer, result),
            self.run_button,
            before_start=self._connect_training,
        )

    def _connect_training(self, worker) -> None:
        worker.yielded.connect(self._training_state)
        worker.finished.connect(lambda: setattr(self.stop_button, "enabled", False))

    def _training_state(self, p: Progress) -> None:
        if p.stage != "train" and self.stop_button.enabled:
            self.stop_button.enabled = False  # training is over: nothing left to stop

    def _stop_training(self) -> None:
        self._stop.set()
        self.stop_button.enabled = False
        self.progress.status.value = "stopping training; reconstructing with the best model"

    def _show(self, layer, result) -> None:
        self.result = result
        vol = result.volume
        with layers_changed_by_tab(self.layer):
            add_volume_layer(self.viewer, vol, name=f"{layer.name} isotropic", like=layer)
        self.summary.value = (
            f"{vol.shape[0]} planes ({sum(vol.meta.synthetic)} reconstructed), z spacing "
            f"{vol.meta.scale[0]:g} {vol.meta.unit}; {result.model.describe()}"
        )
        gain = (result.model.validation_psnr or 0.0) - (result.model.spline_psnr or 0.0)
        trained = result.model.validation_psnr is not None
        if trained and gain < NEXT_TO_NOTHING_DB:  # 3 steps gained 0.001 dB, read as a success
            self.summary.value += (
                f"; the model gained {max(gain, 0.0):.2f} dB over the cubic spline in that "
                "time, so the planes are (nearly) the spline: give training a longer time budget"
            )
        if result.budget_note:
            self.summary.value += f"; {result.budget_note}"
        self.progress.status.value = "done"

"""The Isotropic tab and the learned method of the Interpolate tab in a real viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

pytestmark = pytest.mark.gui


def _blobs(shape=(5, 48, 56), seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.random(shape), 2) * 60000).astype(np.uint16)


def test_isotropic_tab_reconstructs_and_stop_keeps_the_model(make_napari_viewer, qtbot):
    from napari_histovol._widgets.isotropic_widget import IsotropicWidget

    v = _blobs()
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(v, name="stack", scale=(1.5, 0.5, 0.5))
    w = IsotropicWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    w.factor.value = 3
    w.time_budget.value = 300  # stopped by the user long before
    w.run()
    qtbot.waitUntil(lambda: "step" in w.progress.status.value, timeout=60000)
    assert w.stop_button.enabled
    w.stop_button.changed.emit(True)  # the user presses Stop training
    qtbot.waitUntil(lambda: w.result is not None and w.run_button.enabled, timeout=60000)
    assert 0 < w.result.model.train_seconds < 60  # stopped, not run to the budget
    out = viewer.layers["stack isotropic"]
    assert out.data.shape == (13, 48, 56)
    assert tuple(out.scale) == pytest.approx((0.5, 0.5, 0.5))
    assert out.metadata["histovol"]["synthetic"] == [j % 3 != 0 for j in range(13)]
    np.testing.assert_array_equal(np.asarray(out.data[6]), v[2])
    assert "reconstructed" in w.summary.value and "dB" in w.summary.value
    assert w.progress.status.value == "done"
    # a layer it cannot take: the status says so, not "done" from the run before
    w.layer.value = viewer.add_image(v[:1], name="one plane")
    w.run()
    assert w.progress.status.value.startswith("not started:")
    assert "fewer than two planes" in w.progress.status.value


def test_interpolate_tab_learned_trains_once_for_every_frame_count(make_napari_viewer, qtbot):
    from napari_histovol._widgets.interpolate_widget import InterpolateWidget

    full = _blobs((7, 40, 48))
    v = full[::2]  # the odd planes are the truth of the frames between
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(v, name="sec", scale=(1.0, 0.5, 0.5))
    w = InterpolateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    w.frames.value = 1
    w.method.value = "learned"
    assert not w.learn_budget.native.isHidden()  # its training time is offered
    w.learn_budget.value = 5
    w.update_live()  # starts training
    qtbot.waitUntil(lambda: w._learned is not None and w.result_layer is not None, timeout=60000)
    model = w._learned[1]
    out = w.result_layer
    assert out.data.shape == (7, 40, 48)
    plane = np.asarray(out.data[1]).astype(float)
    np.testing.assert_array_equal(np.asarray(out.data[2]), v[1])
    err = np.abs(plane - full[1]).mean()
    assert err < 0.5 * np.abs(v[0].astype(float) - full[1]).mean()  # far better than a copy
    w.frames.value = 2
    assert w.update_live()  # no retraining: the same model serves N = 2 at once
    assert w._learned[1] is model
    assert w.result_layer.data.shape == (10, 40, 48)
    w._timer.stop()  # the debounced rebuild the frame change scheduled is done above


def test_the_reconstruction_is_computed_block_by_block_so_cancel_can_stop_it():
    """A helper pressed Cancel while the Isotropic tab applied the model: it waited 42 s,
    the whole reconstruction, computed in one call. The tab now computes one lateral block
    (all planes) between two progress steps, where the worker looks for Cancel."""
    import dask.array as da

    from napari_histovol._widgets.isotropic_widget import _compute_by_blocks

    computed = []

    def count(block, block_info=None):
        computed.append(block_info[None]["chunk-location"])
        return block + 1

    base = np.arange(4 * 300 * 260, dtype=np.float32).reshape(4, 300, 260)
    lazy = da.from_array(base, chunks=(4, 128, 128)).map_blocks(count, dtype=np.float32)
    gen = _compute_by_blocks(lazy)
    first = next(gen)
    assert first.total == 9 and not computed  # nothing computed before the first step
    next(gen)
    assert len(computed) == 1  # one block per step: Cancel is looked at in between
    gen.close()
    out = None
    gen = _compute_by_blocks(lazy)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        out = done.value
    np.testing.assert_array_equal(out, base + 1)

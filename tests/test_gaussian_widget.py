"""Cancel in the Gaussian-compression widget stops the fit itself, in a real viewer (Xvfb).

Ground truth is a counter of optimiser steps (each step renders the mixture once) and the
stacks of all live threads: after Cancel, no thread runs fit code and the counter stops.
"""

import sys
import threading
import traceback

import numpy as np
import pytest

pytestmark = pytest.mark.gui

_FIT_FILES = ("gaussians/fit.py", "gaussians/render_torch.py")


def fitting_threads() -> list[str]:
    """Names of the threads whose stack is in the fit's code now."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        files = [f.filename.replace("\\", "/") for f in traceback.extract_stack(frame)]
        if any(f.endswith(_FIT_FILES) for f in files):
            out.append(names.get(ident, str(ident)))
    return out


def helper_alive() -> bool:
    """Whether the thread that drives a colour's block fits is still there."""
    return any(t.name == "histovol-gaussian-fit" for t in threading.enumerate())


@pytest.fixture
def step_counter(monkeypatch):
    """Counts the fit's renders (one per optimiser step) in every thread."""
    from napari_histovol.core.gaussians import fit

    count = [0]
    lock = threading.Lock()
    render = fit.render_torch

    def counting(*args, **kwargs):
        with lock:
            count[0] += 1
        return render(*args, **kwargs)

    monkeypatch.setattr(fit, "render_torch", counting)
    return count


def test_cancel_stops_every_fitting_thread(make_napari_viewer, qtbot, monkeypatch, step_counter):
    from napari_histovol._widgets.gaussian_widget import GaussianWidget
    from napari_histovol.core.gaussians import FitConfig

    rng = np.random.default_rng(0)
    vol = (rng.random((8, 16, 128)) * 1000).astype(np.uint16)
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(vol, name="noise")
    w = GaussianWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    # Eight blocks along x in two colours: four blocks of a colour are fitted at once on dask
    # threads; 20000 steps would take far longer than the test.
    monkeypatch.setattr(
        GaussianWidget,
        "config",
        lambda self: FitConfig(gaussians=400, iterations=20000, block_size=16),
    )
    seen: set[str] = set()

    def parallel_fit_running() -> bool:
        now = fitting_threads()
        seen.update(now)
        return step_counter[0] > 30 and len(now) >= 2

    w.run()
    qtbot.waitUntil(parallel_fit_running, timeout=60000)
    assert not w.run_button.enabled
    w.progress.cancel.native.click()
    qtbot.waitUntil(
        lambda: w.run_button.enabled and not fitting_threads() and not helper_alive(),
        timeout=10000,
    )
    steps = step_counter[0]
    qtbot.wait(1500)
    assert step_counter[0] == steps, "optimiser steps went on after Cancel"
    assert not fitting_threads()
    assert w.progress.status.value == "cancelled"
    assert w.report is None and len(viewer.layers) == 1
    assert len(seen) >= 2  # the fit did run on several threads at once
    # The widget works again after a cancel.
    monkeypatch.setattr(
        GaussianWidget, "config", lambda self: FitConfig(gaussians=8, iterations=30)
    )
    w.run()
    qtbot.waitUntil(lambda: w.report is not None and w.run_button.enabled, timeout=120000)
    assert "noise (Gaussians)" in viewer.layers
    assert w.progress.status.value != "cancelled"


def test_closing_napari_while_a_fit_runs_ends_the_process_cleanly(tmp_path):
    """A helper closed napari while a Gaussian fit ran: a progress message reached a deleted
    label, and the process aborted (status 134). Closing now cancels the job and waits for
    its thread."""
    import subprocess
    import sys

    script = tmp_path / "close_mid_fit.py"
    script.write_text(
        "import time\n"
        "import numpy as np\n"
        "import napari\n"
        "from qtpy.QtWidgets import QApplication\n"
        "from napari_histovol._widgets.gaussian_widget import GaussianWidget\n"
        "rng = np.random.default_rng(0)\n"
        "vol = rng.random((16, 64, 64)).astype(np.float32)\n"
        "viewer = napari.Viewer(show=True)\n"
        "w = GaussianWidget(viewer)\n"
        "viewer.window.add_dock_widget(w)\n"
        "w.layer.value = viewer.add_image(vol, name='v')\n"
        "w.ratio.value, w.iterations.value = 20.0, 20000\n"
        "w.run()\n"
        "t = time.time()\n"
        "while time.time() - t < 3:\n"
        "    QApplication.processEvents(); time.sleep(0.05)\n"
        "assert w.progress.worker is not None, 'the fit ended before the window closed'\n"
        "viewer.close()\n"
        "QApplication.processEvents()\n"
        "print('closed', flush=True)\n"
    )
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "closed" in p.stdout, p.stderr[-2000:]
    assert "has been deleted" not in p.stderr

"""napari benchmark: the live interpolation slider and the 3D clipping plane in a real viewer.

- ``slider``: seconds from a move of the Interpolate tab's 'frames between' slider to the new
  plane drawn on the canvas, for a pair seen for the first time (its flow estimated) and for a
  cached pair, on the bundled sample (five 661x895 RGB lung sections) and on a 20-section
  2048x2048 RGB stack made of the skin H&E slide (mirrored to 2048 px, each section shifted by
  a known (dy, dx) = (6 i, 4 i) px). ``after_debounce_s`` is the work once the controls rest
  (rebuild + slice + draw); ``move_to_shown_s`` adds the 150 ms debounce, with real Qt events.
- ``memory``: peak memory at 5 and 50 frames between, for the live path (build the lazy volume,
  compute the three planes a viewer shows) and the seed's materialising path (the old
  'Interpolate' button: every plane computed into one array), each in its own process (peak
  RSS above the process's baseline, and the tracemalloc peak).
- ``clip_drag``: seconds per frame while the clipping plane is dragged in the 3D canvas
  (Shift+drag) and while its slider is stepped, on the sample and the 2048 px stack shown in
  their stain colours (a software renderer here: ``gl_renderer`` says which).
- ``segment_click``: seconds from a click in the Segment tab to the clicked section's object
  drawn, and to the whole object, on cells3d's nuclei (60 x 256 x 256, opened with the
  plugin's reader, 0.29 x 0.26 x 0.26 µm: segmented in 3D), 8 nuclei, the micro-sam protocol
  of ``segment_bench.py`` (first click at the point farthest inside, then up to 4 corrective
  clicks, each on its own section, a second's pause before each as a user aims).

Prints one JSON object. Needs a display (run under ``xvfb-run`` on a headless machine).

    xvfb-run -a python benchmarks/napari_bench.py [--full] [--only slider,clip_drag,memory,segment_click]

``--full`` also runs the materialising path at 50 frames on the 2048 px stack (about 12 GB).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import dask.array as da
import numpy as np

SHARED = Path(
    os.environ.get("HISTOVOL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SKIN = SHARED / "skin_he_2d" / "skin.tif"
BIG_SECTIONS, BIG_SIDE = 20, 2048


# ------------------------------------------------------------------ data


def sample_volume():
    """The bundled sample: lung lesion 3, sections 1, 3, 4, 5, 7 (RGB, 661 x 895)."""
    from napari_histovol._sample_data import sample_folder
    from napari_histovol.core.io import read_volume

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_volume(sample_folder())


def big_volume(n: int = BIG_SECTIONS, side: int = BIG_SIDE):
    """``n`` RGB sections of ``side`` px cut from the mirrored skin H&E slide, section i
    shifted by (6 i, 4 i) px (known motion for the flow to follow)."""
    import tifffile

    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.io.volume import Volume

    skin = tifffile.imread(SKIN)[..., :3]
    reps = (-(-(side + 6 * n) // skin.shape[0]), -(-(side + 4 * n) // skin.shape[1]))
    rows = [np.concatenate([skin, skin[:, ::-1]] * reps[1], axis=1)]
    mosaic = np.concatenate([rows[0], rows[0][::-1]] * reps[0], axis=0)
    stack = np.stack([mosaic[6 * i : 6 * i + side, 4 * i : 4 * i + side] for i in range(n)])
    meta = VolumeMeta(
        rgb=True, z_numbers=tuple(range(1, n + 1)), scale=(4.0, 0.5, 0.5), unit="micrometer"
    )
    return Volume(da.from_array(stack, chunks=(1,) + stack.shape[1:]), meta.with_planes(n))


# ------------------------------------------------------------------ slider


def _process(app, seconds: float = 0.0, *, deletes: bool = False) -> None:
    """Handle Qt's events for ``seconds``; with ``deletes``, also the deletions posted meanwhile,
    as napari's own event loop would (outside ``exec`` Qt keeps them, and napari's activity
    spinner, left turning after ``viewer.open``, repaints the window 35 times a second)."""
    from qtpy.QtCore import QEvent

    end = time.perf_counter() + seconds
    while True:
        app.processEvents()
        if deletes:
            app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        if time.perf_counter() >= end:
            return
        time.sleep(0.002)


def _draw(viewer, app) -> None:
    """Draw the canvas now (what the next paint event would show)."""
    canvas = viewer.window._qt_viewer.canvas
    scene = getattr(canvas, "_scene_canvas", None)
    (scene.render() if scene is not None else viewer.screenshot(canvas_only=True))
    app.processEvents()


def measure_slider(volume, *, name: str, frames=(5, 50, 20), repeats: int = 3) -> dict:
    """Time slider moves in a real viewer with the HistoVol panel's Interpolate tab.

    Parameters
    ----------
    volume
        The sections (a core Volume), shown as a histovol layer.
    name
        The layer's name.
    frames
        The frame counts the slider visits: the first builds the live layer, then each move
        is timed twice: with an empty flow cache (the pair's flow estimated) and a warm one.
    repeats
        Moves per case; the median and the worst are reported.

    Returns
    -------
    dict
        Seconds per case (median, max), the plane shape and the planes per frame count.
    """
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_histovol._layers import add_volume_layer, world_z
    from napari_histovol._widgets.panel import HistoVolPanel

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    try:
        panel = HistoVolPanel(viewer)
        viewer.window.add_dock_widget(panel, name="HistoVol")
        (layer,) = add_volume_layer(viewer, volume, name=name)
        w = panel.show_tab("Interpolate")
        w.layer.value = layer
        # between the middle pair of sections: a generated plane at every frame count
        mid = volume.shape[0] // 2
        z = 0.5 * (world_z(layer, mid - 1) + world_z(layer, mid)) + 0.01 * float(layer.scale[0])
        viewer.dims.set_point(0, z)
        w.frames.value = frames[0]
        assert w.update_live()
        _draw(viewer, app)
        times = {"first_visit": [], "cached": []}
        debounced = {"first_visit": [], "cached": []}
        counts = {}
        for r in range(repeats):
            for n in frames[1:]:
                for case in ("first_visit", "cached"):
                    if case == "first_visit":
                        w.cache.clear()
                    target = n - (r % 2)  # a new value each time
                    t0 = time.perf_counter()
                    assert w.update_live() if _set(w, target) else False
                    _draw(viewer, app)
                    times[case].append(time.perf_counter() - t0)
                    counts[target] = int(w.result_layer.data.shape[0])
                    # the same move through Qt: value changed, debounce, rebuild, draw
                    if case == "first_visit":
                        w.cache.clear()
                    before = w.result
                    t0 = time.perf_counter()
                    w.frames.value = target - 2
                    while w.result is before:
                        _process(app, 0.001)
                    _draw(viewer, app)
                    debounced[case].append(time.perf_counter() - t0)
                    w.frames.value = target  # back, through the cache, for the next move
                    _process(app, 0.3)
        return {
            "plane_shape": list(volume.shape[1:]),
            "sections": int(volume.shape[0]),
            "planes_per_frame_count": counts,
            **{f"after_debounce_s_{k}": _stats(v) for k, v in times.items()},
            **{f"move_to_shown_s_{k}": _stats(v) for k, v in debounced.items()},
        }
    finally:
        viewer.close()


def _set(w, value: int) -> bool:
    """Set the slider without its debounce timer (the timed call rebuilds at once)."""
    with w.frames.changed.blocked():
        w.frames.value = value
    return True


def _stats(v: list[float]) -> dict:
    return {"median": round(float(np.median(v)), 4), "max": round(float(np.max(v)), 4)}


# ------------------------------------------------------------------ memory


def measure_memory(which: str, frames: int, path: str) -> dict:
    """Peak memory of one interpolation path, measured in a child process of its own (RSS
    polled every 5 ms above the RSS once the sections are in memory).

    Parameters
    ----------
    which
        ``sample`` or ``big`` (see :func:`sample_volume`, :func:`big_volume`).
    frames
        Frames between sections.
    path
        ``live`` (lazy volume, three planes computed as a viewer would) or ``materialise``
        (the seed's button: every plane computed into one array).

    Returns
    -------
    dict
        ``peak_rss_mb`` above the baseline after the data were loaded, ``tracemalloc_peak_mb``,
        seconds, planes.
    """
    cmd = [sys.executable, __file__, "--memory-case", json.dumps([which, frames, path])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_case(which: str, frames: int, path: str) -> dict:
    from napari_histovol.core.interpolate import PairCache, iter_interpolate, live_interpolate
    from napari_histovol.core.progress import drain

    vol = sample_volume() if which == "sample" else big_volume()
    vol = type(vol)(vol.data.persist(), vol.meta)  # sections in memory: the baseline
    import threading

    base = _rss_mb()  # now, with the sections in memory
    peak_rss = [base]
    stop = threading.Event()

    def poll() -> None:  # ru_maxrss would count the imports' peak too
        while not stop.is_set():
            peak_rss[0] = max(peak_rss[0], _rss_mb())
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    tracemalloc.start()
    t0 = time.perf_counter()
    if path == "live":
        res = live_interpolate(vol, frames_between=frames, cache=PairCache())
        data = res.volume.data
        mid = vol.shape[0] // 2
        k = next(i for i, f in enumerate(res.plan.frames) if f.synthetic and f.a == mid - 1)
        for i in (k, k + frames // 2, k - frames - 2):  # two planes of one pair, one of another
            np.asarray(data[i])
        planes = 3
    else:  # the seed's widget: iter_interpolate, then every chunk computed into one array
        res = drain(iter_interpolate(vol, frames_between=frames))
        data = res.volume.data
        out = np.empty(data.shape, data.dtype)
        start = 0
        for c in data.chunks[0]:
            out[start : start + c] = data[start : start + c].compute()
            start += c
        planes = int(out.shape[0])
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    stop.set()
    poller.join()
    peak = max(peak_rss[0], _rss_mb())
    return {
        "peak_rss_mb": round(peak - base, 1),
        "tracemalloc_peak_mb": round(traced / 1e6, 1),
        "seconds": round(seconds, 2),
        "planes_computed": planes,
        "planes_in_volume": int(data.shape[0]),
        "materialised_mb": round(data.nbytes / 1e6, 1),
    }


# ------------------------------------------------------------------ 3D clipping plane


def measure_clip_drag(volume, *, name: str, moves: int = 24, window=(1400, 900)) -> dict:
    """Frame time while the clipping plane is dragged in the 3D canvas (Shift+drag, real Qt
    mouse events through napari's mouse callbacks) and while the 3D tab's position slider is
    stepped, on ``volume`` shown as the plugin shows it (in its stain colours when RGB).

    Each frame is the event, the plane update and a synchronous repaint finished on the GL
    context (``glFinish``), so the figure is what a user waits for, not only the CPU side.
    """
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_histovol._layers import add_volume_layer
    from napari_histovol._widgets._mouse import canvas_centre
    from napari_histovol._widgets._mouse import drag as drag_mouse
    from napari_histovol._widgets.view3d_widget import View3DWidget, gl_renderer

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.window.resize(*window)
    (layer,) = add_volume_layer(viewer, volume, name=name)
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    _process(app, 0.2)
    scene = viewer.window._qt_viewer.canvas._scene_canvas
    native = scene.native

    def frame():
        native.repaint()
        scene.context.finish()

    t0 = time.perf_counter()
    w.show_3d()  # a lazy volume turns colour on a worker: wait for its copy
    while not w.targets() and time.perf_counter() - t0 < 600:
        _process(app, 0.02)
    (target,) = w.targets()
    viewer.reset_view()
    frame()
    enter_s = time.perf_counter() - t0
    viewer.scene.camera.angles = (-20, 30, 70)
    w.axis.value = "y"
    w.position.value = 0.5
    frame()
    cx, cy = canvas_centre(viewer)
    stamps: list[float] = []

    def after_move():  # a frame: the move's event handled, the canvas drawn and finished
        app.processEvents()
        frame()
        stamps.append(time.perf_counter())

    drag_mouse(
        viewer,
        (cx, cy),
        (cx, cy - 6 * moves),
        modifiers=["Shift"],
        steps=moves,
        after_press=lambda: stamps.append(time.perf_counter()),
        after_move=after_move,
    )
    drag = list(np.diff(stamps))
    moved_to = float(w.position.value)
    slider = []
    for k in range(moves):
        t = time.perf_counter()
        w.position.value = round(0.3 + 0.4 * k / moves, 3)
        app.processEvents()
        frame()
        slider.append(time.perf_counter() - t)
    result = {
        "volume": name,
        "rendered_shape_zyx": [int(v) for v in target.data.shape],
        "canvas_px": [int(v) for v in scene.size],
        "gl_renderer": gl_renderer(viewer),
        "enter_3d_s": round(enter_s, 3),
        "drag_frame_s": _stats(drag),
        "slider_step_s": _stats(slider),
        "position_after_drag": moved_to,
    }
    viewer.close()
    return result


# ------------------------------------------------------------------ main


# ------------------------------------------------------------------ segment


def _idle_until(app, cond, timeout: float = 120.0) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        _process(app, 0.005, deletes=True)
        if time.perf_counter() > end:
            raise TimeoutError("the Segment tab did not finish")


def measure_segment_click(objects: int = 8, clicks: int = 5) -> dict:
    """Click to section shown (and to object done) in the Segment tab: see the module doc."""
    import napari
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from segment_bench import dice, farthest_inside, load_nuclei, next_click, pick_objects

    path = SHARED / "cells3d_nuclei_3d" / "nuclei.tif"
    if not path.is_file():
        return {"skipped": f"{path} not found"}
    _, lab, sampling = load_nuclei()
    ids = pick_objects(lab, objects, min_sections=3, min_voxels=200)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    with contextlib.redirect_stdout(sys.stderr):  # the reader's note: stdout is the JSON's
        layer = viewer.open(str(path), plugin="napari-histovol")[0]
    layer.scale = sampling  # what the Sections tab sets
    layer.units = ("micrometer",) * 3
    _, panel = viewer.window.add_plugin_dock_widget("napari-histovol", "HistoVol")
    w = panel.show_tab("Segment")
    w.layer.value = layer
    w.start()
    _process(
        app, 3.0, deletes=True
    )  # the user finds the first nucleus (scikit-learn loads meanwhile)
    drawn: dict[int, float] = {}
    redraw = w._redraw

    def timed_redraw(obj, zs=None):
        redraw(obj, zs)
        _draw(viewer, app)
        drawn.setdefault(obj, time.perf_counter())

    w._redraw = timed_redraw
    rows = []
    for i, k in enumerate(ids):
        gt = lab == k
        click = (*farthest_inside(gt, sampling), True)
        w.object_id.value = i + 1
        for c in range(clicks):
            z, y, x, positive = click
            w.negative.value = not positive
            viewer.dims.set_current_step(0, z)
            _process(app, 1.0, deletes=True)  # the user aims
            drawn.pop(i + 1, None)
            t0 = time.perf_counter()
            w.points.add([[z, y, x]])
            _idle_until(app, lambda i=i: i + 1 in drawn)
            section = drawn[i + 1] - t0
            _idle_until(app, lambda: w.progress.worker is None and not w._dirty)
            whole = time.perf_counter() - t0
            got = np.asarray(w.objects.data) == i + 1
            rows.append(
                {
                    "object": int(k),
                    "click": c + 1,
                    "section_s": round(section, 2),
                    "object_s": round(whole, 2),
                    "dice": round(dice(gt, got), 3),
                }
            )
            click = next_click(gt, got, sampling)
            if click is None:
                break
    viewer.close()
    section = [r["section_s"] for r in rows]
    first = [r["section_s"] for r in rows if r["click"] == 1]
    return {
        "data": "cells3d nuclei 60x256x256, 0.29x0.26x0.26 um, opened with the plugin's reader",
        "clicks": len(rows),
        "section_s_mean": round(float(np.mean(section)), 2),
        "section_s_max": max(section),
        "first_click_section_s_max": max(first),
        "clicks_over_2_s": sum(v >= 2.0 for v in section),
        "object_s_max": max(r["object_s"] for r in rows),
        "per_click": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run every measurement (or those ``--only`` names), print and return one JSON object."""
    argv = sys.argv[1:] if argv is None else argv
    full = "--full" in argv
    names = {"slider", "clip_drag", "memory", "segment_click"}
    only = set(argv[argv.index("--only") + 1].split(",")) if "--only" in argv else names
    if not only <= names:
        raise SystemExit(f"--only takes {', '.join(sorted(names))}, not {', '.join(only - names)}")
    out: dict = {"benchmark": "napari_bench", "cpu_count": os.cpu_count()}
    have_skin = SKIN.is_file()
    sample = sample_volume() if only & {"slider", "clip_drag"} else None
    if "slider" in only:
        out["slider_sample"] = measure_slider(sample, name="lung lesion 3 sections")
        if have_skin:
            out["slider_2048_rgb_20_sections"] = measure_slider(
                big_volume(), name="skin 2048", repeats=2
            )
        else:
            out["slider_2048_rgb_20_sections"] = {"skipped": f"{SKIN} not found"}
    if "clip_drag" in only:
        out["clip_drag_sample"] = measure_clip_drag(sample, name="lung lesion 3 sections")
        if have_skin:
            out["clip_drag_2048_rgb_20_sections"] = measure_clip_drag(
                big_volume(), name="skin 2048"
            )
    if "memory" in only:
        memory = {}
        for which in ("sample", "big") if have_skin else ("sample",):
            for n in (5, 50):
                for path in ("live", "materialise"):
                    key = f"{which}_{n}_frames_{path}"
                    if which == "big" and path == "materialise" and n == 50 and not full:
                        memory[key] = {"skipped": "about 12 GB; run with --full"}
                        continue
                    memory[key] = measure_memory(which, n, path)
        out["memory"] = memory
        for which in ("sample", "big"):
            live = memory.get(f"{which}_50_frames_live", {})
            mat = memory.get(f"{which}_50_frames_materialise", {})
            if "peak_rss_mb" in live and "peak_rss_mb" in mat:
                out[f"{which}_50_frames_rss_ratio_materialise_over_live"] = round(
                    mat["peak_rss_mb"] / max(live["peak_rss_mb"], 1.0), 1
                )
    if "segment_click" in only:
        out["segment_click"] = measure_segment_click()
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--memory-case":
        print(json.dumps(_memory_case(*json.loads(sys.argv[2]))))
    else:
        main()

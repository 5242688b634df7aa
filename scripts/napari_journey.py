"""A pathologist's journey through the HistoVol panel, driven as a user would (real Qt mouse
events for the clipping plane), with a screenshot of the whole window at each step: the bundled
sample -> Sections (a gap named) -> Interpolate slider (3, then 8 frames, no button) -> 3D in
stain colours, clipped -> Shift+drag the plane -> Ctrl+Shift+drag to tilt it -> back to 2D.

    xvfb-run -a -s "-screen 0 1700x1100x24" python scripts/napari_journey.py OUT_DIR

Look at the screenshots: a pathologist must recognise the slide in each.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path


def main(out: Path) -> None:
    import napari
    import npe2
    from qtpy.QtWidgets import QApplication

    from napari_histovol._sample_data import sample_folder
    from napari_histovol._widgets._mouse import canvas_centre
    from napari_histovol._widgets._mouse import drag as drag_mouse
    from napari_histovol._widgets.panel import HistoVolPanel
    from napari_histovol._widgets.view3d_widget import COLOUR_SUFFIX

    out.mkdir(parents=True, exist_ok=True)
    npe2.PluginManager.instance().discover()
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window.resize(1600, 1000)
    panel = HistoVolPanel(viewer)
    viewer.window.add_dock_widget(panel, name="HistoVol")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sections = viewer.open(str(sample_folder()), plugin="napari-histovol")[0]

    def wait(seconds: float = 0.5) -> None:
        end = time.time() + seconds
        while time.time() < end:
            app.processEvents()
            time.sleep(0.02)

    def shot(name: str) -> None:
        wait(0.5)
        viewer.screenshot(str(out / f"{name}.png"), canvas_only=False)
        print("screenshot", name)

    panel.show_tab("Sections")
    z = viewer.dims.range[0]
    viewer.dims.set_point(0, float(z.start + z.step))  # section 2: a gap in the numbering
    shot("01_sections_gap")

    interpolate = panel.show_tab("Interpolate")
    interpolate.layer.value = sections
    interpolate.frames.value = 3  # no button: the live layer follows the slider
    wait(2.5)
    live = viewer.layers[-1]
    print("live layer", live.name, live.data.shape, tuple(live.scale))
    viewer.dims.set_point(0, float(live.translate[0] + 2 * live.scale[0]))
    shot("02_interpolate_3_frames")
    interpolate.frames.value = 8
    wait(3)
    print("after 8 frames", live.data.shape)
    shot("03_interpolate_8_frames")

    view = panel.show_tab("3D")
    view.layer.value = live
    start = time.time()
    view.show_3d()
    shot("04_3d_making_colour")
    while time.time() - start < 300 and live.name + COLOUR_SUFFIX not in viewer.layers:
        wait(0.2)
    print("3D colour after", round(time.time() - start, 1), "s:", view.progress.status.value)
    view.z_exaggeration.value = 4.0
    viewer.reset_view()
    viewer.scene.camera.angles = (-20, 30, 70)
    view.axis.value = "y"
    view.position.value = 0.6
    shot("05_3d_colour_clipped")

    def drag(dx: float, dy: float, modifiers: list[str]) -> None:
        cx, cy = canvas_centre(viewer)
        drag_mouse(
            viewer,
            (cx, cy),
            (cx + dx, cy + dy),
            modifiers=modifiers,
            steps=10,
            after_move=lambda: wait(0.05),
        )

    drag(0, -120, ["Shift"])
    print("position after Shift+drag", view.position.value)
    shot("06_3d_plane_dragged")
    drag(100, 0, ["Shift", "Control"])
    print("after Ctrl+Shift+drag", view.axis.value, view.azimuth.value, view.elevation.value)
    shot("07_3d_plane_tilted")

    viewer.dims.ndisplay = 2
    wait(1)
    print("back in 2D", [(ly.name, ly.visible) for ly in viewer.layers])
    shot("08_back_to_2d")
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "napari-journey"))

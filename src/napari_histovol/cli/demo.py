"""``histovol demo``: build the bundled sample and open it in napari in 3D."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NAME = "demo"


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help="build the bundled sample and open it in napari (--no-gui: write files only)",
        description="Build the bundled ANHIR lung-lesion sections (align, fill the gaps, 2 "
        "frames between sections) into an OME-Zarr volume and open it in napari in 3D with a "
        "clipping plane. With --no-gui (or when there is no display) write the volume and a PNG "
        "of orthogonal views instead.",
    )
    p.add_argument("--no-gui", action="store_true", help="write files only, do not open napari")
    p.add_argument(
        "--out",
        default="histovol-demo",
        metavar="DIR",
        help="folder for the files (default ./histovol-demo)",
    )
    p.add_argument(
        "--screenshot",
        metavar="PNG",
        help="save a screenshot of the napari window and close it (without a display: the "
        "rendered views are written there instead of DIR/lung_lesion3_3d.png)",
    )
    return p


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in (
        "darwin",
        "win32",
    )


def run(args: argparse.Namespace) -> int:
    from .._sample_data import sample_folder

    out_dir = Path(args.out).expanduser()
    volume_path = _build(sample_folder(), out_dir, quiet=False)
    if args.no_gui or not _has_display():
        if not args.no_gui:
            print(
                "histovol: no display found; writing the demo files instead (as with --no-gui).",
                file=sys.stderr,
            )
        target = Path(args.screenshot) if args.screenshot else out_dir / "lung_lesion3_3d.png"
        png = _orthoviews_png(volume_path, target.expanduser())
        print(f"wrote {png}")
        return 0
    return _show(volume_path, args.screenshot)


def _build(folder: Path, out_dir: Path, *, quiet: bool) -> Path:
    """Build the sample (align, 2 frames between sections) unless a finished build is there."""
    import warnings

    from ..core.errors import HistovolWarning
    from ..core.io.ome_zarr import is_ome_zarr
    from ..core.pipeline import iter_build_volume
    from ..core.progress import drain_with_tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    volume_path = out_dir / "lung_lesion3.ome.zarr"
    if is_ome_zarr(volume_path):
        print(f"using the demo volume built before: {volume_path}")
        return volume_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HistovolWarning)
        res = drain_with_tqdm(
            iter_build_volume(folder, volume_path, frames_between=2, align="rigid", resume=True),
            desc="demo",
            disable=True if quiet else None,
        )
    print(
        f"wrote {res.out}: {res.shape[0]} planes ({len(res.synthetic_z)} interpolated) from 5 "
        "sections (z 1, 3, 4, 5, 7; gaps 2 and 6 filled)"
    )
    return volume_path


def _orthoviews_png(volume_path: Path, png: Path) -> Path:
    import imagecodecs
    import numpy as np

    from ..core.io.atomic import write_bytes
    from ..core.io.ome_zarr import read_ome_zarr
    from ..core.preview import to_uint8
    from ..core.render3d import orthoviews

    vol = read_ome_zarr(volume_path)
    data = to_uint8(np.asarray(vol.data.compute()))
    z, y = data.shape[:2]
    view = orthoviews(data, z_scale=max(1.0, 0.3 * y / z))
    return write_bytes(png, imagecodecs.png_encode(view), overwrite=True)


def _show(volume_path: Path, screenshot: str | None) -> int:
    import napari
    from qtpy.QtCore import QTimer

    from .._widgets.view3d_widget import View3DWidget, tilt_camera

    viewer = napari.Viewer(title="napari-histovol demo: lung lesion 3, aligned and interpolated")
    layers = viewer.open(str(volume_path), plugin="napari-histovol")
    view = View3DWidget(viewer)
    viewer.window.add_dock_widget(view, name="3D view", area="right")
    view.layer.value = layers[0]
    view.show_3d()  # in its stain colours, the slide transparent
    view.z_exaggeration.value = 6.0
    view.axis.value = "y"
    view.position.value = 0.6
    viewer.window.resize(1500, 950)

    def frame():  # once the window has its size: fit the clipped volume and tilt the camera
        tilt_camera(viewer)

    QTimer.singleShot(400, frame)
    if screenshot:

        def snap():
            viewer.screenshot(screenshot, canvas_only=False)
            viewer.close()

        QTimer.singleShot(2000, snap)
    napari.run()
    return 0

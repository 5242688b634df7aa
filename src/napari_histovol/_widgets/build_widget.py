"""'Build volume' dock widget: a folder of sections -> an aligned, interpolated OME-Zarr, shown
in 3D with the right scale."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    PushButton,
    Slider,
    SpinBox,
)

from ..core.pipeline import ALIGN_CHOICES, iter_build_volume
from ._common import ProgressRow, confirm_overwrite, micrometre_box, plain_viewer, replaces_an_input

if TYPE_CHECKING:
    import napari


class BuildWidget(Container):
    """Folder chooser, frames-between slider, alignment, canvas size, pixel size, spacing."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = plain_viewer(viewer)
        self.folder = FileEdit(mode="d", label="sections folder", value="")
        self.output = FileEdit(mode="w", label="output .ome.zarr", value="", filter="*.ome.zarr")
        self.frames = Slider(value=0, min=0, max=50, label="frames between")
        self.align = ComboBox(choices=ALIGN_CHOICES, value="rigid", label="alignment")
        self.size = SpinBox(
            value=0, min=0, max=100000, step=256, label="canvas size (px, 0 = full)"
        )
        self.pixel_size = micrometre_box(
            "pixel size (µm, 0 = file's)", value=0.0, min=0.0, max=1000.0, step=0.01
        )
        self.spacing = micrometre_box(
            "section spacing (µm)", value=0.0, min=0.0, max=10000.0, step=0.5
        )
        self.resume = ComboBox(
            choices=("start anew", "resume"), value="start anew", label="if interrupted"
        )
        self.run_button = PushButton(text="Build volume")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.folder,
                self.output,
                self.frames,
                self.align,
                self.size,
                self.pixel_size,
                self.spacing,
                self.resume,
                self.run_button,
                self.progress,
            ]
        )
        self.folder.changed.connect(self._suggest_output)
        self.run_button.changed.connect(self.run)
        self.layers: list = []

    def _suggest_output(self, *_) -> None:
        folder = Path(str(self.folder.value))
        if str(self.folder.value) not in ("", ".") and str(self.output.value) in ("", "."):
            self.output.value = str(folder.parent / f"{folder.name}.ome.zarr")

    def _confirm_overwrite(self, path: Path) -> bool:
        """Ask before an existing output is replaced (the build starts anew)."""
        return confirm_overwrite(self.native, path)

    def run(self) -> None:
        from napari.utils.notifications import show_warning

        folder, out = str(self.folder.value), str(self.output.value)
        if folder in ("", ".") or out in ("", "."):
            show_warning("Choose the sections folder and the output first.")
            return
        refusal = self._shown_already(out) or replaces_an_input(self.viewer, out, folder)
        if refusal:
            self.progress.status.value = refusal
            show_warning(refusal)
            return
        resume = self.resume.value == "resume"
        target = Path(out)
        overwrite = False
        if not resume and (target.exists() or target.is_symlink()):
            if not self._confirm_overwrite(target):
                self.progress.status.value = f"not built: '{target.name}' exists already"
                return
            overwrite = True
        pixel_size = float(self.pixel_size.value) or None
        spacing = float(self.spacing.value) or None
        if pixel_size is None or spacing is None:
            # the scale a user set on these sections in the Sections tab (a helper set 2 µm
            # and 5 µm there, and the build came out in pixels)
            px, sp, name = self._scale_of_open_sections(folder)
            used = []
            if pixel_size is None and px:
                pixel_size = px
                used.append(f"{px:g} µm pixels")
            if spacing is None and sp:
                spacing = sp
                used.append(f"{sp:g} µm section spacing")
            if used:
                from napari.utils.notifications import show_info

                show_info(f"Building with the scale set on '{name}': {' and '.join(used)}.")
        opts = dict(
            frames_between=int(self.frames.value) or None,
            align=self.align.value,
            size=int(self.size.value) or None,
            pixel_size=pixel_size,
            section_spacing=spacing,
            resume=resume,
            overwrite=overwrite,
        )
        self.progress.run(
            lambda: iter_build_volume(folder, out, **opts), self._show, self.run_button
        )

    def _shown_already(self, out: str) -> str | None:
        """The refusal when ``out`` is a volume this tab built and still shows."""
        target = Path(out).expanduser().resolve()
        for layer in self.layers:
            src = getattr(getattr(layer, "source", None), "path", None)
            if layer in self.viewer.layers and src and Path(src).resolve() == target:
                return (
                    f"'{target.name}' is shown as layer '{layer.name}', built before; close "
                    "that layer to build it again, or choose another output name."
                )
        return None

    def _scale_of_open_sections(self, folder: str) -> tuple[float | None, float | None, str]:
        """(pixel size, section spacing, layer name) set in µm on an open layer that holds
        the sections of ``folder`` (the same files), each None where it is not known."""
        from ..core.errors import HistovolError
        from ..core.io.slices import list_section_files
        from .sections_widget import histovol_meta

        try:
            names = {Path(p).name for p in list_section_files(folder)}
        except HistovolError:
            return None, None, ""
        for layer in self.viewer.layers:
            meta = histovol_meta(layer)
            if meta is None or meta.unit != "micrometer":
                continue
            if {f for f in meta.files if f} != names:
                continue
            px = float(meta.scale[1]) if meta.scale_known else None
            sp = float(meta.section_spacing) if meta.spacing_known else None
            return px, sp, layer.name
        return None, None, ""

    def _show(self, result) -> None:
        from napari.layers._source import layer_source

        from .._layers import add_volume_layer
        from ..core.io.ome_zarr import read_ome_zarr
        from .view3d_widget import tilt_camera

        vol = read_ome_zarr(result.out)
        # named apart from the sections (a layer of the same name is replaced: the sections
        # the user had scaled were gone), and opened from its file as the reader would, so
        # that a second build into it is refused while it is shown (replacing the store under
        # the open layer and the live layers made from it crashed napari in its renderer)
        with layer_source(path=str(result.out), reader_plugin="napari-histovol"):
            self.layers = add_volume_layer(
                self.viewer, vol, name=f"{result.out.name.split('.')[0]} volume"
            )
        self.viewer.dims.ndisplay = 3
        tilt_camera(self.viewer)  # from above, a volume looks like one flat section
        self.progress.status.value = (
            f"{result.shape[0]} planes ({len(result.synthetic_z)} generated), voxel "
            + " x ".join(f"{s:g}" for s in result.scale)
        )

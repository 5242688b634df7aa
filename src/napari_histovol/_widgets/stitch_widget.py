"""'Stitch tiles' dock widget: a folder of overlapping tiles -> a mosaic (or a folder of
sections), shown with every tile's outline coloured by its edge QC and a short line across
every seam, so a bad seam is found at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
)

from ..core.stitch import BLENDS, MODELS, iter_stitch
from ._common import ProgressRow, confirm_overwrite, plain_viewer, replaces_an_input

if TYPE_CHECKING:
    import napari

LAYOUTS = ("grid", "positions CSV", "auto")
#: Edge / tile grade -> colour of its outline or seam line.
GRADE_COLOURS = {"accepted": "#2ecc40", "weak": "#ffdc00", "rejected": "#ff4136"}


class StitchWidget(Container):
    """Folder of tiles, layout (grid ROWSxCOLS, positions CSV, or worked out from the
    overlaps), overlap, model, blending, output; runs :func:`iter_stitch` on a thread worker
    and shows the mosaic with '<name> tiles' (outlines by QC) and '<name> seams'."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer = plain_viewer(viewer)
        self.folder = FileEdit(mode="d", label="tiles folder", value="")
        self.layout_choice = ComboBox(choices=LAYOUTS, value="grid", label="layout")
        self.rows = SpinBox(value=2, min=1, max=1000, label="rows")
        self.cols = SpinBox(value=2, min=1, max=1000, label="columns")
        self.positions = FileEdit(mode="r", label="positions (file,x,y)", filter="*.csv")
        self.overlap = FloatSpinBox(value=0.1, min=0.0, max=0.9, step=0.01, label="overlap")
        self.model = ComboBox(choices=MODELS, value="translation", label="model")
        self.blend = ComboBox(choices=BLENDS, value="linear", label="blending")
        self.output = FileEdit(
            mode="w", label="output", value="", filter="*.ome.tif *.ome.zarr *.tif *.png"
        )
        self.overwrite = CheckBox(value=False, text="replace existing output")
        self.run_button = PushButton(text="Stitch")
        self.progress = ProgressRow()
        super().__init__(
            widgets=[
                self.folder,
                self.layout_choice,
                self.rows,
                self.cols,
                self.positions,
                self.overlap,
                self.model,
                self.blend,
                self.output,
                self.overwrite,
                self.run_button,
                self.progress,
            ]
        )
        self.result = None
        self.layers: list = []
        self.folder.changed.connect(self._suggest_output)
        self.layout_choice.changed.connect(self._show_layout_options)
        self.run_button.changed.connect(self.run)
        self._show_layout_options()

    def _show_layout_options(self, *_) -> None:
        grid = self.layout_choice.value == "grid"
        self.rows.visible = self.cols.visible = grid
        self.overlap.visible = grid
        self.positions.visible = self.layout_choice.value == "positions CSV"

    def _suggest_output(self, *_) -> None:
        """Name the output after the tiles folder while the user has not named it: empty, or
        still the name suggested for the folder before (it stayed on the first folder's
        mosaic, which 'replace existing output' would then have overwritten: a helper)."""
        folder = Path(str(self.folder.value))
        current = str(self.output.value)
        if str(self.folder.value) not in ("", ".") and (
            current in ("", ".") or current == getattr(self, "_suggested", None)
        ):
            self._suggested = str(folder.parent / f"{folder.name}_mosaic.ome.tif")
            self.output.value = self._suggested

    def options(self) -> dict:
        """The keyword arguments of :func:`iter_stitch` the controls give."""
        layout = self.layout_choice.value
        opts = dict(model=self.model.value, blend=self.blend.value, overwrite=self.overwrite.value)
        if layout == "grid":
            opts.update(grid=(int(self.rows.value), int(self.cols.value)))
            opts.update(overlap=float(self.overlap.value))
        elif layout == "positions CSV":
            opts.update(positions=str(self.positions.value))
        return opts

    def run(self) -> None:
        from napari.utils.notifications import show_warning

        folder, out = str(self.folder.value), str(self.output.value)
        if folder in ("", ".") or out in ("", "."):
            show_warning("Choose the tiles folder and the output first.")
            return
        if self.layout_choice.value == "positions CSV" and str(self.positions.value) in ("", "."):
            show_warning("Choose the positions file (file,x,y) or another layout.")
            return
        # as the command refuses it: a mosaic written into the tiles folder became a tile of
        # the next run there ("a 3x3 grid holds 9 tiles but there are 10": a helper)
        refusal = replaces_an_input(self.viewer, out, folder)
        if refusal:
            show_warning(refusal)
            self.progress.status.value = refusal
            return
        out_path = Path(out)
        tiles_out = out_path.parent / f"{out_path.name.split('.')[0]}_TILES.json"
        opts = self.options()
        existing = [p for p in (out_path, tiles_out) if p.exists() or p.is_symlink()]
        if existing and not opts["overwrite"]:
            # asked, as the other tabs ask (it failed, naming the box to tick)
            if not self._confirm_overwrite(existing[0]):
                self.progress.status.value = f"not written: '{existing[0].name}' exists already"
                return
            opts["overwrite"] = True
        self.result = None
        self.progress.run(
            lambda: iter_stitch(folder, out, tiles_out=tiles_out, **opts),
            self._show,
            self.run_button,
        )

    def _confirm_overwrite(self, path: Path) -> bool:
        """Ask before an existing mosaic (or its TILES.json) is replaced."""
        return confirm_overwrite(self.native, path)

    def _show(self, result) -> None:
        from .._layers import add_volume_layer
        from ..core.io.detect import read_volume_or_image

        name = result.out.name.split(".")[0]
        # a .png mosaic too (it was written, then refused as "a single image" and never
        # shown: a helper's journey)
        made = add_volume_layer(self.viewer, read_volume_or_image(result.out), name=name)
        image = made[0]
        self.layers = made + self._add_qc_layers(image, result, name)
        self.viewer.dims.ndisplay = 2
        self.viewer.reset_view()
        self.result = result
        tiles = sum(len(p.tiles) for _, p in result.sections)
        edges = [e for _, p in result.sections for e in p.edges]
        acc = sum(e.status == "accepted" for e in edges)
        flagged = result.flagged
        # the red tiles on the canvas: flagged, or most of their edges rejected (a user saw
        # two red tiles the status did not name)
        red = [n for n, g in self._grades.items() if g == "rejected" and n not in flagged]
        self.progress.status.value = (
            f"{tiles} tiles, {acc}/{len(edges)} edges accepted"
            + (f"; flagged: {', '.join(flagged)}" if flagged else "")
            + (f"; most edges rejected: {', '.join(red)}" if red else "")
        )

    def _add_qc_layers(self, image, result, name: str) -> list:
        import numpy as np

        from .._layers import displayed_index
        from ..core.stitch.qc import seam_lines, tile_outline, tile_qc

        outlines, grades, texts, tiles = [], [], [], []
        lines, line_grades, line_texts = [], [], []
        for k, (_z, placement) in enumerate(result.sections):
            plane = float(displayed_index(image, k))
            for t, q in zip(placement.tiles, tile_qc(placement), strict=True):
                xy = tile_outline(t)
                outlines.append(np.column_stack([np.full(len(xy), plane), xy[:, 1], xy[:, 0]]))
                grades.append(q.grade)
                texts.append(q.text)
                tiles.append(t.name)
            for xy, g, label in seam_lines(placement):
                lines.append(np.column_stack([np.full(2, plane), xy[:, 1], xy[:, 0]]))
                line_grades.append(g)
                line_texts.append(label)
        self._grades = dict(zip(tiles, grades, strict=True))
        place = dict(scale=tuple(image.scale)[:3], translate=tuple(image.translate)[:3])
        for n in (f"{name} tiles", f"{name} seams"):
            if n in self.viewer.layers:
                self.viewer.layers.remove(n)
        layers = [
            self.viewer.add_shapes(
                outlines,
                shape_type="polygon",
                name=f"{name} tiles",
                edge_color=[GRADE_COLOURS[g] for g in grades],
                face_color="transparent",
                edge_width=2,
                features={"tile": tiles, "qc": grades, "edges": texts},
                text={"string": "{tile}", "size": 8, "color": "white", "anchor": "upper_left"},
                **place,
            )
        ]
        if lines:
            layers.append(
                self.viewer.add_shapes(
                    lines,
                    shape_type="line",
                    name=f"{name} seams",
                    edge_color=[GRADE_COLOURS[g] for g in line_grades],
                    edge_width=3,
                    features={"seam": line_texts, "qc": line_grades},
                    **place,
                )
            )
        return layers

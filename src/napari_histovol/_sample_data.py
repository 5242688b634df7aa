"""npe2 sample data: five serial lung sections (ANHIR / CIMA lesion 3, BSD-3)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SAMPLE_NAME = "anhir_lung_lesion3"


def sample_folder(name: str = SAMPLE_NAME) -> Path:
    """Folder of a bundled sample: inside the installed package (a wheel carries
    ``sample_data/`` there), else at the repository's top level (an editable install or a
    source checkout, where ``sample_data/`` lives beside ``src/``; no link leads to it)."""
    p = Path(str(files("napari_histovol"))) / "sample_data" / name
    if p.is_dir():
        return p
    here = Path(__file__).resolve().parent  # .../src/napari_histovol
    if here.parent.name == "src":
        p = here.parent.parent / "sample_data" / name
        if p.is_dir():
            return p
    raise FileNotFoundError(f"The sample '{name}' is not installed with napari-histovol.")


def lung_lesion_sections() -> list[tuple]:
    """The five lung-lesion sections as a lazy RGB stack (z numbers 1,3,4,5,7; gaps 2 and 6)."""
    import warnings

    from ._layers import volume_to_layer_data
    from .core.errors import HistovolWarning
    from .core.io.slices import read_slice_folder

    with warnings.catch_warnings():
        # the differing section sizes are expected here; the canvas handles them
        warnings.simplefilter("ignore", HistovolWarning)
        volume = read_slice_folder(sample_folder())
    return volume_to_layer_data(volume, name="lung lesion 3 sections")

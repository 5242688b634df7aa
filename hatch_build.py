"""Hatch build hook: an editable install gets the top-level napari.yaml inside the package.

napari.yaml stays at the top level of the repository (the product's layout), and no symlink
leads to it (git checks symlinks out as small text files on Windows). npe2 looks for a
plugin's manifest before the package is imported: for the ``napari.manifest`` entry point
``napari_histovol:napari.yaml`` it reads ``napari.yaml`` from the folders of
``importlib.util.find_spec("napari_histovol").submodule_search_locations``, and nowhere else
(no lookup code of the package can run first).

* A wheel carries a copy at ``napari_histovol/napari.yaml`` (``force-include`` in
  pyproject.toml); ``sample_data/`` likewise.
* An editable install imports the package from ``src/napari_histovol``, so this hook writes
  ``src/napari_histovol/napari.yaml`` there, generated from the top-level file (git-ignored,
  marked as generated). After editing napari.yaml, run ``pip install -e .`` again;
  tests/test_manifest.py fails with that advice while the two differ. The sample data need
  no copy: ``napari_histovol._sample_data`` finds ``sample_data/`` at the top level.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: First lines of the generated copy (YAML comments: npe2 ignores them).
GENERATED_HEADER = (
    "# GENERATED for an editable install from ../../napari.yaml by hatch_build.py: edit that\n"
    "# file, then run `pip install -e .` again. Not tracked by git.\n"
)


class EditableManifestHook(BuildHookInterface):
    """Write the editable install's copy of napari.yaml into the package folder."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version != "editable":
            return
        root = Path(self.root)
        top = root / "napari.yaml"
        copy = root / "src" / "napari_histovol" / "napari.yaml"
        text = GENERATED_HEADER + top.read_text(encoding="utf-8")
        if copy.is_symlink():
            copy.unlink()  # the link an older checkout had
        if not copy.is_file() or copy.read_text(encoding="utf-8") != text:
            partial = copy.with_name(f".{copy.name}.partial")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, copy)  # never a half-written manifest
        # The editable wheel itself needs no copy of the sample data (1.7 MB in site-packages
        # that nothing reads); it keeps the manifest where the entry point names it.
        build_data["force_include_editable"] = {str(top): "napari_histovol/napari.yaml"}

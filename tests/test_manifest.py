"""npe2: the manifest validates, is the one napari loads, and every command imports."""

from pathlib import Path

import npe2
import pytest

from .conftest import REPO


def test_manifest_validates_and_every_command_imports():
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-histovol")
    assert manifest.display_name == "HistoVol"
    npe2.PluginManifest.from_file(REPO / "napari.yaml").validate_imports()
    for cmd in manifest.contributions.commands:
        func = npe2.manifest.utils.import_python_name(cmd.python_name)
        assert callable(func), cmd.python_name
    assert {w.command for w in manifest.contributions.writers} == {
        "napari-histovol.write_ome_zarr",
        "napari-histovol.write_ome_tiff",
        "napari-histovol.write_npy",
        "napari-histovol.write_hgm",
    }


def npe2_manifest_file() -> Path:
    """The napari.yaml npe2 reads for this plugin, found as npe2 finds it: the entry point's
    file name in the folders of the entry point's package, before the package is imported."""
    import importlib.util
    from importlib.metadata import distribution

    (ep,) = [
        e for e in distribution("napari-histovol").entry_points if e.group == "napari.manifest"
    ]
    module, _, fname = ep.value.partition(":")
    spec = importlib.util.find_spec(module)
    found = [Path(loc) / fname for loc in spec.submodule_search_locations or []]
    return next(p for p in found if p.exists())


def _is_editable() -> bool:
    import json
    from importlib.metadata import distribution

    direct = distribution("napari-histovol").read_text("direct_url.json")
    return bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))


def test_installed_manifest_is_the_top_level_napari_yaml():
    """Wheel or editable, npe2 reads a real file (no symlink) holding the top-level napari.yaml."""
    import napari_histovol

    found = npe2_manifest_file()
    assert found.is_file() and not found.is_symlink()
    text = found.read_text()
    if _is_editable():
        # hatch_build.py generated it at install time: stale after an edit of napari.yaml
        assert found == REPO / "src" / "napari_histovol" / "napari.yaml"
        assert text.startswith("# GENERATED")
        text = "".join(line for line in text.splitlines(True) if not line.startswith("# "))
    assert text == (REPO / "napari.yaml").read_text(), (
        f"{found} differs from the top-level napari.yaml; run `pip install -e .` again"
    )
    # The package folder holds no symlink at all (they break on Windows checkouts).
    pkg = Path(napari_histovol.__file__).parent
    assert not [p for p in pkg.rglob("*") if p.is_symlink()]


def test_repository_holds_no_symlinks():
    """git checks symlinks out as small text files on Windows: none may be tracked."""
    import subprocess

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    staged = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-s"], capture_output=True, text=True, check=True
    ).stdout
    assert not [line for line in staged.splitlines() if line.startswith("120000")]


def test_npe2_read_outside_a_viewer(make_sections):
    folder, _ = make_sections(zs=(2, 3, 6))
    npe2.PluginManager.instance().discover()
    layers = npe2.read([str(folder)], stack=False, plugin_name="napari-histovol")
    data, kwargs, kind = layers[0]
    assert kind == "image" and data.shape[0] == 5  # sections 2..6, the gaps 4, 5 shown empty
    assert kwargs["metadata"]["histovol"]["gaps"] == [4, 5]
    assert kwargs["metadata"]["histovol_display"]["plane"] == [0, 1, -1, -1, 2]


def test_sample_data_is_registered():
    from napari_histovol._sample_data import sample_folder

    pm = npe2.PluginManager.instance()
    pm.discover()
    samples = dict(pm.iter_sample_data())["napari-histovol"]
    assert [s.key for s in samples] == ["lung_lesion3"]
    data, kwargs, kind = samples[0].open()[0]
    assert data.shape == (7, 661, 895, 3) and kwargs["rgb"]
    folder = sample_folder()
    assert folder.is_dir() and not any(p.is_symlink() for p in folder.parents)
    if _is_editable():
        assert folder == REPO / "sample_data" / "anhir_lung_lesion3"


@pytest.mark.parametrize("name", ["v.ome.zarr", "v.ome.tif", "v.npy"])
def test_writers_through_npe2(make_sections, tmp_path, name):
    import numpy as np

    from napari_histovol.core.io import read_volume

    folder, _ = make_sections(zs=(1, 2))
    npe2.PluginManager.instance().discover()
    data, kwargs, _ = npe2.read([str(folder)], stack=False, plugin_name="napari-histovol")[0]
    kwargs["scale"] = (4.0, 0.5, 0.5)
    out = npe2.write(str(tmp_path / name), [(data, kwargs, "image")], plugin_name="napari-histovol")
    back = read_volume(out[0])
    np.testing.assert_array_equal(back.data.compute(), data.compute())
    assert back.meta.scale == (4.0, 0.5, 0.5) and back.meta.z_numbers == (1, 2)


def test_hgm_reader_and_writer_through_npe2(tmp_path):
    import numpy as np

    from napari_histovol.core.gaussians import GaussianMixture, HgmHeader, encode, read_hgm

    rng = np.random.default_rng(0)
    mix = GaussianMixture(
        rng.uniform(2, 14, (20, 3)),
        rng.uniform(1, 2, (20, 3)),
        rng.normal(size=(20, 4)),
        rng.uniform(100, 900, 20),
        50.0,
    )
    src = tmp_path / "m.hgm"
    src.write_bytes(encode(mix, HgmHeader((16, 16, 16), "uint16", (0.0, 4000.0), (2.0, 1.0, 1.0))))
    npe2.PluginManager.instance().discover()
    layers = npe2.read([str(src)], stack=False, plugin_name="napari-histovol")
    (img, ikw, ikind), (pts, pkw, pkind) = layers
    assert ikind == "image" and pkind == "points"
    assert img.shape == (16, 16, 16) and ikw["scale"] == (2.0, 1.0, 1.0)
    assert pts.shape == (20, 3) and len(pkw["size"]) == 20
    out = npe2.write(
        str(tmp_path / "copy.hgm"), [(img, ikw, "image")], plugin_name="napari-histovol"
    )
    assert Path(out[0]).read_bytes() == src.read_bytes()
    back, _ = read_hgm(out[0])
    assert len(back) == 20
    # A plain image (no fit behind it) is refused with a sentence, not fitted silently.
    from napari_histovol.core.errors import InputError

    with pytest.raises(InputError, match="no fitted Gaussian mixture"):
        npe2.write(
            str(tmp_path / "x.hgm"),
            [(img, {"name": "plain"}, "image")],
            plugin_name="napari-histovol",
        )

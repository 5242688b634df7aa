"""The wheel carries napari.yaml and the sample data, and napari's manifest loads from it."""

import subprocess
import sys
import textwrap

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_wheel_install_has_manifest_and_sample(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheel_dir)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (whl,) = wheel_dir.glob("napari_histovol-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(whl),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(target)!r})
        import napari_histovol, npe2
        from pathlib import Path
        pkg = Path(napari_histovol.__file__).parent
        assert str(pkg).startswith({str(target)!r}), pkg
        yaml = pkg / "napari.yaml"
        assert yaml.is_file() and not yaml.is_symlink()
        npe2.PluginManifest.from_file(yaml).validate_imports()
        from napari_histovol._sample_data import sample_folder, lung_lesion_sections
        assert str(sample_folder()).startswith({str(target)!r})
        data, kwargs, kind = lung_lesion_sections()[0]
        assert data.shape == (5, 661, 895, 3), data.shape
        print("ok")
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr

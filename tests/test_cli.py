"""The histovol command: info, convert, demo; exit status 2 and one sentence for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_histovol.cli import main
from napari_histovol.core.io import read_volume


def run_cli(*args):
    """Run histovol in a fresh process (as a user would) and return (code, stdout, stderr)."""
    p = subprocess.run(
        [sys.executable, "-m", "napari_histovol.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return p.returncode, p.stdout, p.stderr


def test_info_reports_gaps_and_json(make_sections, tmp_path, capsys):
    folder, _ = make_sections(zs=(1, 2, 10), width=1)
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "gaps       3-9  (7 missing)" in out
    assert main(["info", str(folder), "--json", str(tmp_path / "i.json")]) == 0
    d = json.loads((tmp_path / "i.json").read_text())
    assert d["z_numbers"] == [1, 2, 10] and d["gaps"] == [3, 4, 5, 6, 7, 8, 9] and d["planes"] == 3
    assert d["files"] == ["sec_1.png", "sec_2.png", "sec_10.png"]


def test_convert_chain_keeps_pixels_and_scale(make_sections, tmp_path):
    folder, _ = make_sections(zs=(1, 3), rgb=True)
    ref = read_volume(folder).data.compute()
    z, t, n, f = (tmp_path / x for x in ("a.ome.zarr", "b.ome.tif", "c.npy", "d"))
    assert (
        main(
            [
                "convert",
                str(folder),
                str(z),
                "--pixel-size",
                "0.5",
                "--section-spacing",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["convert", str(z), str(t), "--quiet"]) == 0
    assert main(["convert", str(t), str(n), "--quiet"]) == 0
    assert main(["convert", str(n), str(f), "--slice-format", "tif", "--quiet"]) == 0
    back = read_volume(f)
    np.testing.assert_array_equal(back.data.compute(), ref)
    assert back.meta.scale == pytest.approx((3, 0.5, 0.5))
    assert back.meta.gaps == (2,)


@pytest.mark.parametrize(
    "setup,args,message",
    [
        ("empty", ["info", "{d}"], "is empty"),
        ("noimages", ["info", "{d}"], "holds no section images"),
        ("corrupt", ["convert", "{d}", "{o}/v.ome.zarr"], "sec_002.png"),
        ("ok", ["convert", "{d}", "{f}/v.ome.zarr"], "Cannot create the folder"),
        ("ok", ["convert", "{d}", "{o}/v.png"], "Cannot write a volume"),
        ("ok", ["convert", "{d}", "{o}/v.npy", "--ngff-version", "0.4"], "does not apply"),
        ("missing", ["info", "{d}/nothing"], "does not exist"),
    ],
)
def test_bad_input_exit_2_one_line_no_partial_output(make_sections, tmp_path, setup, args, message):
    d = tmp_path / "in"
    d.mkdir()
    if setup == "noimages":
        (d / "readme.txt").write_text("x")
    elif setup in ("ok", "corrupt"):
        d, _ = make_sections(zs=(1, 2, 3), folder="in")
        if setup == "corrupt":
            (d / "sec_002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    o = tmp_path / "out"
    o.mkdir()
    f = tmp_path / "file.txt"
    f.write_text("x")
    code, out, err = run_cli(*[a.format(d=d, o=o, f=f) for a in args])
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("histovol: error")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert list(o.iterdir()) == []


def test_existing_output_needs_overwrite(make_sections, tmp_path):
    folder, _ = make_sections()
    out = tmp_path / "v.ome.zarr"
    assert main(["convert", str(folder), str(out), "--quiet"]) == 0
    assert main(["convert", str(folder), str(out), "--quiet"]) == 2
    assert main(["convert", str(folder), str(out), "--quiet", "--overwrite"]) == 0


def test_bad_numbers_are_refused_by_argparse(make_sections, tmp_path):
    folder, _ = make_sections()
    code, _, err = run_cli("convert", folder, tmp_path / "v.ome.zarr", "--pixel-size", "nan")
    assert code == 2 and "finite" in err and len(err.strip().splitlines()) == 1


def test_help_on_every_command():
    for cmd in ("info", "convert", "demo"):
        code, out, _ = run_cli(cmd, "--help")
        assert code == 0 and "usage: histovol " + cmd in out


def test_demo_no_gui_builds_the_sample(tmp_path):
    code, out, err = run_cli("demo", "--no-gui", "--out", tmp_path / "demo")
    assert code == 0, err
    vol = read_volume(tmp_path / "demo" / "lung_lesion3.ome.zarr")
    # z 1, 3, 4, 5, 7 with 2 frames between: 19 planes; the gaps and the frames are synthetic
    assert vol.shape[0] == 19 and len(vol.meta.synthetic_z) == 14 and vol.meta.rgb
    assert vol.meta.extra["alignment"]["method"] == "rigid"
    assert (tmp_path / "demo" / "lung_lesion3.transforms.json").is_file()
    png = (tmp_path / "demo" / "lung_lesion3_3d.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run reuses the finished volume
    shot = tmp_path / "views.png"
    code, out, err = run_cli("demo", "--no-gui", "--out", tmp_path / "demo", "--screenshot", shot)
    assert code == 0 and "built before" in out
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # --screenshot names the PNG


def test_a_reader_that_stops_reading_is_no_error(make_sections, monkeypatch, capsys):
    """`histovol info X | head -5` ended with "histovol: error: Broken pipe." (a helper): a
    pipe whose reader is gone, as stdout."""
    import os

    folder, _ = make_sections()
    read, write = os.pipe()
    os.close(read)  # the reader stopped reading
    pipe = os.fdopen(write, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", pipe)
    try:
        assert main(["info", str(folder), "--json"]) == 0
    finally:
        monkeypatch.undo()
        pipe.close()
    err = capsys.readouterr().err
    assert "error" not in err.lower() and "Traceback" not in err, err

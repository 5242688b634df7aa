"""A corpus of bad and awkward inputs for every subcommand.

Each case must end in one of two ways: the command does the sensible thing (exit 0), or it
prints exactly one line starting ``histovol: error:`` that names the problem, exits with status
2, prints no traceback, and leaves nothing new in the output folder. Cases are generated here
(files written by the test), so the corpus grows by adding a line.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_histovol.cli import main

from .conftest import tissue, write_image


def _sections(d: Path, zs=(1, 2, 3), shape=(40, 48), rgb=False, names=None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    names = names or [f"sec_{z:02d}.png" for z in zs]
    for i, n in enumerate(names):
        write_image(d / n, tissue(shape, seed=i, rgb=rgb))
    return d


def _huge_tiff(path: Path, side: int = 200_000) -> None:
    """A valid little-endian TIFF header that declares side x side 8-bit pixels (no pixels)."""
    entries = [
        (256, 4, 1, side),  # ImageWidth
        (257, 4, 1, side),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression none
        (262, 3, 1, 1),  # BlackIsZero
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, side),  # RowsPerStrip
        (279, 4, 1, side * side % 2**32),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHI", tag, typ, count) + (
            struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        )
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd)


def _volume_npy(path: Path, data: np.ndarray) -> Path:
    np.save(path, data)
    return path


# Every case: (id, setup(tmp) -> dict of names for the arguments, args, expected message or None
# for "must succeed"). {o} is the output folder that must stay empty on errors.
CASES = [
    # --- folders and files that cannot be read
    ("missing-input", lambda t: {}, ["info", "{t}/nothing"], "does not exist"),
    ("empty-folder", lambda t: {"d": (t / "e").mkdir() or t / "e"}, ["info", "{d}"], "is empty"),
    (
        "no-images",
        lambda t: {"d": (t / "n").mkdir() or (t / "n" / "a.txt").write_text("x") and t / "n"},
        ["info", "{d}"],
        "holds no section images",
    ),
    (
        # a command that takes sections, given one of them (info describes a single image and
        # convert converts one: a stitched .png mosaic)
        "single-image-path",
        lambda t: {"d": _sections(t / "s")},
        ["align", "{d}/sec_01.png", "{o}/v.ome.zarr"],
        "single image",
    ),
    (
        "corrupt-png",
        lambda t: (
            {"d": _sections(t / "s")}
            | {"_": (t / "s" / "sec_02.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")}
        ),
        ["convert", "{d}", "{o}/v.ome.zarr"],
        "sec_02.png",
    ),
    (
        "corrupt-png-skip-bad",
        lambda t: (
            {"d": _sections(t / "s")} | {"_": (t / "s" / "sec_02.png").write_bytes(b"garbage")}
        ),
        ["convert", "{d}", "{o}/v.ome.zarr", "--skip-bad", "--quiet"],
        None,
    ),
    (
        "qc-one-section",
        lambda t: {"d": _sections(t / "s", zs=(4,))},
        ["qc", "{d}"],
        "only 1 section",
    ),
    (
        "corrupt-tiff",  # a TIFF header, then garbage: no image directory to read
        lambda t: {"_": (t / "v.ome.tif").write_bytes(b"II*\x00" + b"garbage" * 40)},
        ["info", "{t}/v.ome.tif"],
        "holds no image",
    ),
    (
        "zero-byte-file",
        lambda t: {"d": _sections(t / "s")} | {"_": (t / "s" / "sec_02.png").write_bytes(b"")},
        ["info", "{d}"],
        "empty (0 bytes)",
    ),
    (
        "two-series-one-number",
        lambda t: {"d": _sections(t / "s", names=["a_1.png", "b_1.png"])},
        ["info", "{d}"],
        "both have the z number",
    ),
    (
        "numbered-and-unnumbered",
        lambda t: {"d": _sections(t / "s", names=["s_1.png", "s_2.png", "extra.png"])},
        ["info", "{d}"],
        "extra.png",
    ),
    (
        "23-digit-number",
        lambda t: {"d": _sections(t / "s", names=["s_1.png", "s_12345678901234567890123.png"])},
        ["build", "{d}", "{o}/v.ome.zarr", "--quiet"],
        "too large",
    ),
    (
        "z-1-2-1000000",
        lambda t: {"d": _sections(t / "s", names=["s_1.png", "s_2.png", "s_1000000.png"])},
        ["interpolate", "{d}", "{o}/filled", "--fill-gaps", "--quiet"],
        "numbers missing",
    ),
    (
        "z-1-2-50000-build-fills-gaps",
        lambda t: {"d": _sections(t / "s", names=["s_1.png", "s_2.png", "s_50000.png"])},
        ["build", "{d}", "{o}/v.ome.zarr", "--quiet"],
        "would generate 49997 planes from 3 sections",
    ),
    (
        "tiff-declares-200000-px",
        lambda t: (
            {"d": _sections(t / "s", names=["s_1.tif", "s_2.tif"])}
            | {"_": _huge_tiff(t / "s" / "s_3.tif")}
        ),
        ["convert", "{d}", "{o}/v.npy", "--quiet"],
        "s_3.tif",
    ),
    (
        "tiff-declares-200000-px-skip-bad",
        lambda t: (
            {"d": _sections(t / "s", names=["s_1.tif", "s_2.tif"])}
            | {"_": _huge_tiff(t / "s" / "s_3.tif")}
        ),
        ["convert", "{d}", "{o}/v.npy", "--skip-bad", "--quiet"],
        None,
    ),
    (
        "not-a-zarr",
        lambda t: {
            "d": (t / "x.ome.zarr").mkdir()
            or (t / "x.ome.zarr" / "zarr.json").write_text("{nope")
            and t / "x.ome.zarr"
        },
        ["info", "{d}"],
        "not a readable Zarr group",
    ),
    (
        "npy-of-objects",
        lambda t: (
            {"f": t / "o.npy"}
            | {"_": np.save(t / "o.npy", np.array([{}, {}], dtype=object), allow_pickle=True)}
        ),
        ["info", "{f}"],
        "o.npy",
    ),
    (
        "truncated-npy",
        lambda t: (
            {"f": _volume_npy(t / "v.npy", np.zeros((3, 20, 20), np.uint8))}
            | {"_": (t / "v.npy").write_bytes((t / "v.npy").read_bytes()[:300])}
        ),
        ["convert", "{f}", "{o}/v.ome.zarr", "--quiet"],
        "v.npy",
    ),
    # --- options out of range
    (
        "frames-between-negative",
        lambda t: {"d": _sections(t / "s")},
        ["build", "{d}", "{o}/v.ome.zarr", "--frames-between", "-1"],
        "0 or more",
    ),
    (
        # the range error named no flag (a helper's chain)
        "frames-between-too-many",
        lambda t: {"d": _sections(t / "s")},
        ["interpolate", "{d}", "{o}/v.ome.zarr", "--frames-between", "5000"],
        "(--frames-between N)",
    ),
    (
        "size-zero",
        lambda t: {"d": _sections(t / "s")},
        ["build", "{d}", "{o}/v.ome.zarr", "--size", "0"],
        "at least 1",
    ),
    (
        "size-tiny",
        lambda t: {"d": _sections(t / "s")},
        ["build", "{d}", "{o}/v.ome.zarr", "--size", "4"],
        "at least 16",
    ),
    (
        "pixel-size-nan",
        lambda t: {"d": _sections(t / "s")},
        ["convert", "{d}", "{o}/v.npy", "--pixel-size", "nan"],
        "finite",
    ),
    (
        "pixel-size-negative",
        lambda t: {"d": _sections(t / "s")},
        ["convert", "{d}", "{o}/v.npy", "--pixel-size", "-1"],
        "positive",
    ),
    (
        "unknown-option",
        lambda t: {"d": _sections(t / "s")},
        ["info", "{d}", "--frobnicate"],
        "unrecognized arguments",
    ),
    ("missing-positional", lambda t: {}, ["build"], "required"),
    ("unknown-command", lambda t: {}, ["bogus"], "invalid choice"),
    (
        "bad-choice",
        lambda t: {"d": _sections(t / "s")},
        ["align", "{d}", "{o}/a.npy", "--method", "warp"],
        "invalid choice",
    ),
    (
        "focus-tile-100000",
        lambda t: {"d": _sections(t / "s")},
        ["focus", "{d}", "--tile", "100000", "--quiet"],
        "tile",
    ),
    (
        "scheduler-not-an-address",
        lambda t: {"d": _sections(t / "s")},
        ["build", "{d}", "{o}/v.ome.zarr", "--scheduler", "not an address", "--quiet"],
        "scheduler",
    ),
    (
        "scheduler-unreachable",
        lambda t: {"d": _sections(t / "s")},
        ["build", "{d}", "{o}/v.ome.zarr", "--scheduler", "tcp://127.0.0.1:1", "--quiet"],
        "Cannot reach",
    ),
    (
        "replace-not-numbers",
        lambda t: {"d": _sections(t / "s")},
        ["interpolate", "{d}", "{o}/f", "--replace", "two"],
        "z numbers",
    ),
    (
        "replace-unknown-z",
        lambda t: {"d": _sections(t / "s")},
        ["interpolate", "{d}", "{o}/f", "--replace", "99", "--quiet"],
        "no such section",
    ),
    (
        "model-without-dir",
        lambda t: {"d": _sections(t / "s")},
        ["interpolate", "{d}", "{o}/f", "--method", "model", "--quiet"],
        "--model DIR",
    ),
    # --- outputs
    (
        "output-exists",
        lambda t: (
            {"d": _sections(t / "s")}
            | {"_": (t / "o").mkdir() or (t / "o" / "v.npy").write_bytes(b"mine")}
        ),
        ["convert", "{d}", "{o}/v.npy"],
        "--overwrite",
    ),
    (
        "output-is-a-users-folder",
        lambda t: (
            {"d": _sections(t / "s")}
            | {
                "_": (t / "o").mkdir()
                or (t / "o" / "mine").mkdir()
                or (t / "o" / "mine" / "x.txt").write_text("x")
            }
        ),
        ["convert", "{d}", "{o}/mine", "--overwrite"],
        "did not write",
    ),
    (
        "output-under-a-file",
        lambda t: {"d": _sections(t / "s"), "f": (t / "f.txt").write_text("x") and t / "f.txt"},
        ["convert", "{d}", "{f}/v.ome.zarr"],
        "Cannot create the folder",
    ),
    (
        "output-png",
        lambda t: {"d": _sections(t / "s")},
        ["convert", "{d}", "{o}/v.png"],
        "Cannot write a volume",
    ),
    (
        "output-same-as-input",
        lambda t: {"f": _volume_npy(t / "v.npy", np.zeros((2, 9, 9), np.uint8))},
        ["convert", "{f}", "{f}", "--overwrite"],
        "would replace the input",
    ),
    (
        "info-json-is-a-folder",
        lambda t: {"d": _sections(t / "s")},
        ["info", "{d}", "--json", "{o}"],
        "is a folder",
    ),
    ("info-json-swallows-path", lambda t: {}, ["info", "--json", "."], "required"),
    (
        "focus-json-exists",
        lambda t: (
            {"d": _sections(t / "s")}
            | {"_": (t / "o").mkdir() or (t / "o" / "f.json").write_text("{}")}
        ),
        ["focus", "{d}", "--json", "{o}/f.json", "--quiet"],
        "--overwrite",
    ),
    (
        "ngff-version-for-npy",
        lambda t: {"d": _sections(t / "s")},
        ["convert", "{d}", "{o}/v.npy", "--ngff-version", "0.4"],
        "does not apply",
    ),
    (
        "slice-format-for-zarr",
        lambda t: {"d": _sections(t / "s")},
        ["convert", "{d}", "{o}/v.ome.zarr", "--slice-format", "png"],
        "does not apply",
    ),
    (
        "float-as-jpg-slices",
        lambda t: {
            "f": _volume_npy(t / "v.npy", np.random.default_rng(0).random((2, 9, 9), np.float32))
        },
        ["convert", "{f}", "{o}/slices", "--slice-format", "jpg"],
        "8-bit",
    ),
    # --- text inputs that are not text
    (
        "binary-points-csv",
        lambda t: {
            "tf": (t / "T.json").write_text(
                json.dumps(
                    {
                        "slices": [
                            {"file": "a.png", "z": 1, "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
                        ]
                    }
                )
            )
            and t / "T.json",
            "p": (t / "p.csv").write_bytes(bytes(range(256))) and t / "p.csv",
        },
        ["warp-points", "{tf}", "1", "{p}", "{o}/w.csv"],
        "binary",
    ),
    (
        "latin1-points-csv",
        lambda t: {
            "tf": (t / "T.json").write_text(
                json.dumps(
                    {
                        "slices": [
                            {"file": "a.png", "z": 1, "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
                        ]
                    }
                )
            )
            and t / "T.json",
            "p": (t / "p.csv").write_bytes("x,y,n\n1,2,caf\xe9\n".encode("latin-1"))
            and t / "p.csv",
        },
        ["warp-points", "{tf}", "1", "{p}", "{o}/w.csv"],
        "UTF-8",
    ),
    (
        "points-without-xy",
        lambda t: {
            "tf": (t / "T.json").write_text(
                json.dumps(
                    {
                        "slices": [
                            {"file": "a.png", "z": 1, "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
                        ]
                    }
                )
            )
            and t / "T.json",
            "p": (t / "p.csv").write_text("a,b\n1,2\n") and t / "p.csv",
        },
        ["warp-points", "{tf}", "1", "{p}", "{o}/w.csv"],
        "x and y",
    ),
    (
        "binary-transforms",
        lambda t: {
            "tf": (t / "T.json").write_bytes(b"\x00\xff" * 50) and t / "T.json",
            "p": (t / "p.csv").write_text("x,y\n1,2\n") and t / "p.csv",
        },
        ["warp-points", "{tf}", "1", "{p}", "{o}/w.csv"],
        "T.json",
    ),
    (
        "binary-fit-config",
        lambda t: {
            "f": _volume_npy(t / "v.npy", np.zeros((4, 16, 16), np.uint8)),
            "c": (t / "c.yaml").write_bytes(b"\x00\x01\xfe" * 30) and t / "c.yaml",
        },
        ["compress", "{f}", "{o}/v.hgm", "--config", "{c}"],
        "c.yaml",
    ),
    (
        "yaml-with-a-syntax-error",
        lambda t: {
            "f": _volume_npy(t / "v.npy", np.zeros((4, 16, 16), np.uint8)),
            "c": (t / "c.yaml").write_text("ratio: [1,\n  gaussians: {\n") and t / "c.yaml",
        },
        ["compress", "{f}", "{o}/v.hgm", "--config", "{c}"],
        "not valid YAML",
    ),
    (
        "binary-qc-json",
        lambda t: {
            "d": _sections(t / "s"),
            "q": (t / "q.json").write_bytes(b"\xff\xfe\x00" * 30) and t / "q.json",
        },
        ["interpolate", "{d}", "{o}/f", "--replace-flagged", "{q}"],
        "q.json",
    ),
    (
        "qc-json-of-another-kind",
        lambda t: {
            "d": _sections(t / "s"),
            "q": (t / "q.json").write_text("[1, 2]") and t / "q.json",
        },
        ["interpolate", "{d}", "{o}/f", "--replace-flagged", "{q}"],
        "QC",
    ),
    # --- volumes that are awkward but fine
    (
        "sections-8-px-interpolate",
        lambda t: {"d": _sections(t / "s", zs=(1, 3), shape=(8, 8))},
        ["interpolate", "{d}", "{o}/f", "--quiet"],
        None,
    ),
    (
        "sections-1-px-interpolate",
        lambda t: {"d": _sections(t / "s", zs=(1, 3), shape=(1, 1))},
        ["interpolate", "{d}", "{o}/f.npy", "--quiet"],
        None,
    ),
    (
        "constant-volume-compress",
        lambda t: {"f": _volume_npy(t / "c.npy", np.full((8, 64, 64), 7, np.uint8))},
        ["compress", "{f}", "{o}/c.hgm", "--ratio", "10", "--quiet"],
        None,
    ),
    (
        "rgb-volume-compress",
        lambda t: {"d": _sections(t / "s", rgb=True)},
        ["compress", "{d}", "{o}/c.hgm", "--ratio", "10"],
        "single-channel",
    ),
    (
        "compress-without-target",
        lambda t: {"f": _volume_npy(t / "v.npy", np.zeros((4, 16, 16), np.uint8))},
        ["compress", "{f}", "{o}/v.hgm"],
        "--ratio",
    ),
    (
        "compress-not-hgm",
        lambda t: {"f": _volume_npy(t / "v.npy", np.zeros((4, 16, 16), np.uint8))},
        ["compress", "{f}", "{o}/v.zip", "--ratio", "5"],
        ".hgm",
    ),
    (
        "decompress-not-hgm",
        lambda t: {"f": _volume_npy(t / "v.npy", np.zeros((4, 16, 16), np.uint8))},
        ["decompress", "{f}", "{o}/v.npy"],
        "v.npy",
    ),
    (
        "single-section-build",
        lambda t: {"d": _sections(t / "s", zs=(4,))},
        ["build", "{d}", "{o}/v.ome.zarr", "--quiet"],
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_corpus(tmp_path, capsys, case):
    name, setup, args, expected = case
    names = {k: v for k, v in (setup(tmp_path) or {}).items() if k != "_"}
    out = tmp_path / "o"
    out.mkdir(exist_ok=True)
    before = sorted(p.name for p in out.rglob("*"))
    saved = warnings.showwarning
    try:
        code = main([a.format(t=tmp_path, o=out, **names) for a in args])
    except SystemExit as e:  # pragma: no cover - argparse must not exit on its own
        pytest.fail(f"argparse exited with {e.code} instead of one error line")
    finally:
        warnings.showwarning = saved
    captured = capsys.readouterr()
    err_lines = [ln for ln in captured.err.splitlines() if ln.startswith("histovol: error:")]
    assert "Traceback" not in captured.err
    if expected is None:
        assert code == 0, captured.err
        assert not err_lines
        return
    assert code == 2, (code, captured.err)
    assert len(err_lines) == 1, captured.err
    assert expected in err_lines[0], err_lines[0]
    assert "usage:" not in captured.err
    assert sorted(p.name for p in out.rglob("*")) == before, "left something in the output folder"
    assert not list(tmp_path.rglob("*.partial")), "left a partial output"


def test_an_output_under_a_mistyped_folder_is_refused_not_created(tmp_path, capsys):
    """A user typed a folder that does not exist: nothing is created (a mistyped path once
    made a folder at the filesystem root); one missing level, the output's own folder, is."""
    folder = tmp_path / "sections"
    folder.mkdir()
    for z in range(3):
        write_image(folder / f"s_{z:03d}.png", tissue((64, 64), seed=z))
    wrong = tmp_path / "no_such_dir" / "deeper" / "out.ome.zarr"
    assert main(["convert", str(folder), str(wrong), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "no_such_dir" in err
    assert not (tmp_path / "no_such_dir").exists()
    one_level = tmp_path / "results" / "out.ome.zarr"
    assert main(["convert", str(folder), str(one_level), "--quiet"]) == 0
    assert one_level.is_dir()


@pytest.mark.parametrize(
    "command",
    [
        ["convert", "{v}", "{v}"],
        ["align", "{v}", "{v}"],
        ["interpolate", "{v}", "{v}"],
        ["build", "{v}", "{v}"],
        ["isotropic", "{v}", "{v}", "--factor", "2"],
        ["restore", "{v}", "{v}", "--qc", "{t}/QC.json"],
        ["segment", "{v}", "{v}", "--prompts", "{t}/p.csv"],
        ["stitch", "{d}", "{d}", "--grid", "1x3"],
        ["qc", "{d}", "--masks", "{d}"],
        ["align", "{d}", "{t}"],  # OUT is the folder that holds IN: replacing it deletes IN
        ["convert", "{d}", "{d}/vol.ome.tif"],  # among the sections: the folder stops reading
    ],
)
def test_no_command_writes_over_its_input(tmp_path, capsys, command):
    """`histovol segment vol.ome.zarr vol.ome.zarr --overwrite` replaced the image with its
    labels; every command now refuses an output that is, or holds, its input."""
    d = _sections(tmp_path / "s")
    v = tmp_path / "v.ome.zarr"
    assert main(["convert", str(d), str(v), "--quiet"]) == 0
    before = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*"))
    args = [a.format(v=v, d=d, t=tmp_path) for a in command] + ["--overwrite"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("histovol: error:") and "\n" not in err
    assert "would replace the input" in err or "inside the input folder" in err
    after = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*"))
    assert after == before

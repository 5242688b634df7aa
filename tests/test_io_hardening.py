"""The I/O layer on bad and awkward input (issue 11): pixel sizes of TIFF stacks, section
numbers that vary, bounds checked before work, huge declared images, OME-Zarr integrity, text
inputs, a full disk, and one atomic writer."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_histovol.core.errors import CorruptImageError, InputError
from napari_histovol.core.io import read_volume
from napari_histovol.core.io.imagefile import ImageTooLargeError, probe

from .conftest import tissue, write_image

# ------------------------------------------------------------ 1. multi-page TIFF pixel size


def _stack(n: int = 3, h: int = 24, w: int = 32) -> np.ndarray:
    return np.stack([tissue((h, w), seed=i) for i in range(n)])


@pytest.mark.parametrize(
    ("unit", "px_per_unit", "spacing", "want_xy", "want_z"),
    [
        ("micron", 2.0, 3.0, 0.5, 3.0),
        ("\\u00B5m", 4.0, 2.0, 0.25, 2.0),  # how ImageJ writes µm in its text metadata
        ("nm", 0.01, 500.0, 0.1, 0.5),
        ("mm", 4000.0, 0.004, 0.25, 4.0),
    ],
)
def test_imagej_stack_keeps_its_pixel_size(tmp_path, unit, px_per_unit, spacing, want_xy, want_z):
    data = _stack()
    p = tmp_path / "fiji.tif"
    tifffile.imwrite(
        p,
        data,
        imagej=True,
        resolution=(px_per_unit, px_per_unit),
        metadata={"unit": unit, "spacing": spacing, "axes": "ZYX"},
    )
    vol = read_volume(p)
    np.testing.assert_array_equal(np.asarray(vol.data), data)
    assert vol.meta.unit == "micrometer"
    assert vol.meta.scale == pytest.approx((want_z, want_xy, want_xy))
    assert vol.meta.scale_known and vol.meta.spacing_known


@pytest.mark.parametrize(("unit", "per_unit"), [("CENTIMETER", 1e4), ("INCH", 25400.0)])
def test_plain_multipage_tiff_with_resolution_tags(tmp_path, unit, per_unit):
    data = _stack()
    p = tmp_path / "pages.tif"
    with tifffile.TiffWriter(p) as tw:
        for plane in data:
            tw.write(
                plane,
                resolution=(per_unit / 0.5, per_unit / 0.8),
                resolutionunit=unit,
                metadata=None,
            )
    vol = read_volume(p)
    assert vol.shape == data.shape
    np.testing.assert_array_equal(np.asarray(vol.data), data)
    assert vol.meta.unit == "micrometer"
    assert vol.meta.scale[1:] == pytest.approx((0.8, 0.5))
    assert vol.meta.scale_known and not vol.meta.spacing_known


def test_default_72_dpi_is_not_a_pixel_size(tmp_path):
    p = tmp_path / "pages.tif"
    with tifffile.TiffWriter(p) as tw:
        for plane in _stack():
            tw.write(plane, resolution=(72, 72), resolutionunit="INCH", metadata=None)
    vol = read_volume(p)
    assert vol.meta.unit == "pixel" and not vol.meta.scale_known
    assert vol.meta.scale == (1.0, 1.0, 1.0)


def test_single_section_probe_reads_the_same_pixel_size(tmp_path):
    p = tmp_path / "one.tif"
    tifffile.imwrite(
        p, tissue((20, 20), 1), imagej=True, resolution=(2.0, 2.0), metadata={"unit": "micron"}
    )
    assert probe(p).pixel_size_um == pytest.approx(0.5)


def test_no_import_cycle_between_the_tiff_readers():
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "napari_histovol" / "core" / "io"
    for a, b in (("imagefile", "ome_tiff"), ("ome_tiff", "imagefile")):
        tree = ast.parse((src / f"{a}.py").read_text(encoding="utf-8"))
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert b not in names, f"{a} imports {b}"


# ------------------------------------------------------------------ 4. huge declared images


@pytest.fixture
def little_memory(monkeypatch):
    """Pretend 64 MiB of memory is available."""
    from napari_histovol.core.io import bounds

    monkeypatch.setattr(bounds, "available_memory", lambda: 64 * 2**20)


def _huge_tiff(path: Path, side: int) -> None:
    """A 16x16 TIFF whose header is rewritten to declare ``side`` x ``side`` pixels."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages[0].tags
        tags["ImageWidth"].overwrite(side)
        tags["ImageLength"].overwrite(side)
        tags["RowsPerStrip"].overwrite(side)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _huge_png(path: Path, side: int) -> None:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b""))


def _huge_jpeg(path: Path, side: int) -> None:
    """A real small JPEG whose start-of-frame header is rewritten to ``side`` x ``side``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(tissue((16, 16), 2, rgb=True)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "name", "side"),
    [
        (_huge_tiff, "big.tif", 200_000),
        (_huge_png, "big.png", 200_000),
        (_huge_jpeg, "big.jpg", 60_000),
    ],
)
def test_huge_declared_image_is_refused_at_probe(tmp_path, little_memory, make, name, side):
    p = tmp_path / name
    make(p, side)
    with pytest.raises(ImageTooLargeError, match=rf"{side} x {side} pixel.*available") as e:
        probe(p)
    assert isinstance(e.value, CorruptImageError)
    assert "\n" not in str(e.value)


def test_huge_declared_tiff_against_the_real_memory(tmp_path):
    p = tmp_path / "big.tif"
    _huge_tiff(p, 2**31)  # 4 EiB: more than any machine has
    with pytest.raises(ImageTooLargeError, match="GiB|TiB|PiB"):
        probe(p)


def test_huge_image_in_a_folder_is_skipped_with_on_corrupt_skip(tmp_path, little_memory):
    folder = tmp_path / "secs"
    folder.mkdir()
    for z in (1, 2, 4):
        write_image(folder / f"s_{z}.png", tissue((24, 24), z))
    _huge_png(folder / "s_3.png", 100_000)
    with pytest.raises(InputError, match="s_3.png") as e:
        read_volume(folder)
    assert e.value.option == "on_corrupt"
    with pytest.warns(UserWarning, match="s_3.png"):
        vol = read_volume(folder, on_corrupt="skip")
    assert vol.meta.z_numbers == (1, 2, 4) and vol.meta.gaps == (3,)
    np.testing.assert_array_equal(np.asarray(vol.data[2]), tissue((24, 24), 4))


def test_big_jpeg_within_memory_is_not_refused_by_pillows_bomb_limit(tmp_path, monkeypatch):
    """Pillow refuses > 179 Mpx by itself; whole sections are that big, memory is the guard."""
    from PIL import Image

    p = tmp_path / "s.jpg"
    Image.fromarray(tissue((40, 50), 3, rgb=True)).save(p, quality=95)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40x50 is a 'bomb' now
    info = probe(p)
    assert info.shape == (40, 50) and info.channels == 3
    from napari_histovol.core.io.imagefile import decode

    assert decode(p, info).shape == (40, 50, 3)
    assert Image.MAX_IMAGE_PIXELS == 100


# ------------------------------------------------------------------------------ 7. disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted under tmp_path (root only); unmounted afterwards."""
    import os
    import subprocess

    d = tmp_path / "small_disk"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield d
    finally:
        busy = subprocess.run(["umount", str(d)], capture_output=True).returncode != 0
        if busy:  # a file left open or mapped on it: unmount lazily, then report the leak
            subprocess.run(["umount", "-l", str(d)], check=False)
    assert not busy, "a writer left a file open on the full disk"


def _noise_volume(shape=(12, 512, 512)):
    import dask.array as da

    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.io.volume import Volume

    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, shape, dtype=np.uint8)  # incompressible: 3 MiB in any format
    return Volume(da.from_array(data, chunks=(1, *shape[1:])), VolumeMeta())


@pytest.mark.parametrize(
    "name", ["v.npy", "v.ome.tif", "v.ome.zarr", "v04.ome.zarr", "png_folder", "tif_folder"]
)
def test_full_disk_is_one_output_error_and_leaves_nothing(small_disk, name):
    from napari_histovol.core.errors import OutputError
    from napari_histovol.core.io import write_volume

    vol = _noise_volume()
    opts = {"ngff_version": "0.4"} if name.startswith("v04") else {}
    if name.endswith("_folder"):
        opts = {"ext": "." + name.split("_")[0]}
    with pytest.raises(OutputError, match="disk is full") as e:
        write_volume(vol, small_disk / name, **opts)
    assert "\n" not in str(e.value)
    assert list(small_disk.iterdir()) == []


def test_full_disk_while_saving_transforms_leaves_neither_file(small_disk):
    from napari_histovol.core.align.transforms import SectionTransform, save_transforms
    from napari_histovol.core.errors import OutputError

    field = np.random.default_rng(1).random((2, 400, 400)).astype(np.float32)  # 1.2 MiB each
    ts = [SectionTransform(np.eye(3), field, 1.0) for _ in range(3)]
    with pytest.raises(OutputError, match="disk is full"):
        save_transforms(
            small_disk / "T.json",
            ts,
            files=["a.png", "b.png", "c.png"],
            z_numbers=[1, 2, 3],
            offsets=[(0, 0)] * 3,
            source_shapes=[(400, 400)] * 3,
            canvas=(400, 400),
        )
    assert list(small_disk.iterdir()) == []


# --------------------------------------------------------------------- 5. OME-Zarr integrity


def _zarr_volume(tmp_path, version="0.5", name="v.ome.zarr"):
    """A histovol-written OME-Zarr with an all-zero plane (z index 1) and known content."""
    import dask.array as da

    from napari_histovol.core.io import write_volume
    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.io.volume import Volume

    data = np.stack([tissue((40, 48), z) for z in range(3)])
    data[1] = 0
    out = write_volume(
        Volume(da.from_array(data, chunks=(1, 40, 48)), VolumeMeta()),
        tmp_path / name,
        ngff_version=version,
        n_levels=2,
        xy_chunk=64,
    )
    return out, data


def _chunk_file(root: Path, version: str, level: int, z: int) -> Path:
    return root / str(level) / ("c" if version == "0.5" else "") / str(z) / "0" / "0"


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_writer_stores_every_chunk_and_says_so(tmp_path, version):
    import json

    out, data = _zarr_volume(tmp_path, version)
    for level in (0, 1):
        for z in range(3):
            assert _chunk_file(out, version, level, z).is_file()  # the zero plane too
    meta_file = out / ("zarr.json" if version == "0.5" else ".zattrs")
    attrs = json.loads(meta_file.read_text())
    attrs = attrs.get("attributes", attrs)
    assert attrs["histovol"]["chunks_complete"] is True
    np.testing.assert_array_equal(np.asarray(read_volume(out).data), data)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_missing_chunk_of_a_histovol_volume_is_refused(tmp_path, version):
    out, _ = _zarr_volume(tmp_path, version)
    _chunk_file(out, version, 0, 2).unlink()
    with pytest.raises(InputError) as e:
        read_volume(out)
    msg = str(e.value)
    assert "missing 1 chunk file" in msg and "level 0, plane 2" in msg
    assert "copy the volume again" in msg and str(out) in msg


def test_missing_chunk_of_a_foreign_ome_zarr_opens_with_one_warning(tmp_path):
    import warnings

    import zarr

    root = tmp_path / "foreign.ome.zarr"
    g = zarr.open_group(str(root), mode="w", zarr_format=3)
    a = g.create_array("0", shape=(3, 32, 32), chunks=(1, 32, 32), dtype="uint8", fill_value=0)
    truth = np.zeros((3, 32, 32), np.uint8)
    truth[0] = tissue((32, 32), 1)
    a[0] = truth[0]  # planes 1 and 2 never written: legitimately empty in NGFF
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    ds = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": ds}]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(root)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "no data for 2 chunk(s)" in msgs[0] and "plane 1" in msgs[0]
    np.testing.assert_array_equal(np.asarray(vol.data), truth)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_corrupt_chunk_is_one_input_error_even_inside_a_dask_compute(tmp_path, version):
    out, _ = _zarr_volume(tmp_path, version)
    chunk = _chunk_file(out, version, 0, 2)
    chunk.write_bytes(b"\x02\x01garbage, not blosc" * 4)
    vol = read_volume(out)  # opening decodes nothing, so it succeeds
    with pytest.raises(InputError, match=r"damaged data at level 0, plane 2.*copy the volume"):
        (vol.data.astype(np.float32) * 2).mean().compute()
    # the writers see the same sentence, and leave no output behind
    from napari_histovol.core.io import write_volume

    with pytest.raises(InputError, match="plane 2"):
        write_volume(vol, tmp_path / "copy.npy")
    assert not (tmp_path / "copy.npy").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_corrupt_tile_of_an_ome_tiff_is_one_input_error(tmp_path):
    import dask.array as da

    from napari_histovol.core.io import write_volume
    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.io.volume import Volume

    data = np.stack([tissue((64, 64), z) for z in range(3)])
    out = write_volume(Volume(da.from_array(data), VolumeMeta()), tmp_path / "v.ome.tif", tile=32)
    with tifffile.TiffFile(out) as tif:
        page = tif.series[0].pages[1]
        offset, count = page.dataoffsets[2], page.databytecounts[2]
    with open(out, "r+b") as f:
        f.seek(offset)
        f.write(b"\xffbad" * (count // 4))
    vol = read_volume(out)
    np.testing.assert_array_equal(np.asarray(vol.data[0]), data[0])
    with pytest.raises(InputError, match=r"damaged data at level 0, plane 1"):
        vol.data.sum().compute()


# -------------------------------------------------------------------------- 6. text inputs

BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
LATIN1 = "z,y,x\n1,2,3 # caf\xe9\n".encode("latin-1")


@pytest.mark.parametrize(("content", "word"), [(BINARY, "binary"), (LATIN1, "not UTF-8")])
def test_transforms_file_that_is_not_text(tmp_path, content, word):
    from napari_histovol.core.align.transforms import load_transforms

    p = tmp_path / "T.json"
    p.write_bytes(content)
    with pytest.raises(InputError, match=word) as e:
        load_transforms(p)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="does not exist"):
        load_transforms(tmp_path / "missing.json")


@pytest.mark.parametrize(("content", "word"), [(BINARY, "binary"), (LATIN1, "not UTF-8")])
def test_npy_metadata_that_is_not_text(tmp_path, content, word):
    np.save(tmp_path / "v.npy", np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "v.npy.json").write_bytes(content)
    with pytest.raises(InputError, match=word):
        read_volume(tmp_path / "v.npy")


def test_folder_sidecar_that_is_not_text_is_ignored_with_a_warning(make_sections):
    folder, truth = make_sections(zs=(1, 2))
    (folder / "histovol.json").write_bytes(BINARY)
    with pytest.warns(UserWarning, match="histovol.json"):
        vol = read_volume(folder)
    assert vol.meta.z_numbers == (1, 2)


def test_binary_zarr_metadata_is_not_a_traceback(tmp_path):
    d = tmp_path / "v.ome.zarr"
    d.mkdir()
    (d / "zarr.json").write_bytes(BINARY)
    with pytest.raises(InputError):
        read_volume(d)


def test_histovol_metadata_with_wrong_types_is_ignored_with_a_warning(tmp_path):
    import json

    out, data = _zarr_volume(tmp_path)
    meta_file = out / "zarr.json"
    doc = json.loads(meta_file.read_text())
    doc["attributes"]["histovol"]["z_numbers"] = "not a list of numbers"
    meta_file.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="unreadable napari-histovol metadata"):
        vol = read_volume(out)
    np.testing.assert_array_equal(np.asarray(vol.data), data)


def test_z_numbers_beyond_int64_in_metadata_are_refused(tmp_path):
    import json

    np.save(tmp_path / "v.npy", np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "v.npy.json").write_text(json.dumps({"histovol": {"z_numbers": [1, 10**22]}}))
    with pytest.raises(InputError, match="too large to be a section number"):
        read_volume(tmp_path / "v.npy")


# ------------------------------------------------------------------- 8. one atomic writer


def _transforms(n=2, with_field=True):
    from napari_histovol.core.align.transforms import SectionTransform

    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        m = np.eye(3)
        m[0, 2] = i + 0.5
        f = rng.random((2, 6, 7)).astype(np.float32) if with_field else None
        out.append(SectionTransform(m, f, 0.5))
    return out


def _save(path, ts, **kw):
    from napari_histovol.core.align.transforms import save_transforms

    n = len(ts)
    return save_transforms(
        path,
        ts,
        files=[f"s_{i}.png" for i in range(n)],
        z_numbers=list(range(1, n + 1)),
        offsets=[(0, 0)] * n,
        source_shapes=[(12, 14)] * n,
        canvas=(12, 14),
        **kw,
    )


def test_transforms_and_fields_round_trip_and_replace_together(tmp_path):
    from napari_histovol.core.align.transforms import load_transforms
    from napari_histovol.core.errors import OutputError

    ts = _transforms()
    p = _save(tmp_path / "T.json", ts)
    back = load_transforms(p)
    for a, b in zip(ts, back.transforms, strict=True):
        np.testing.assert_array_equal(a.matrix, b.matrix)
        np.testing.assert_array_equal(a.field, b.field)
    assert (tmp_path / "T.fields").is_dir()
    with pytest.raises(OutputError, match="exists already") as e:
        _save(tmp_path / "T.json", ts, overwrite=False)
    assert e.value.option == "overwrite"
    # replaced by transforms without fields: the old fields go too
    _save(tmp_path / "T.json", _transforms(with_field=False), overwrite=True)
    assert not (tmp_path / "T.fields").exists()
    assert load_transforms(p).transforms[0].field is None
    assert sorted(q.name for q in tmp_path.iterdir()) == ["T.json"]


def test_failed_transforms_write_leaves_the_previous_pair_untouched(tmp_path, monkeypatch):
    from napari_histovol.core.align import transforms as tmod

    old = _transforms()
    p = _save(tmp_path / "T.json", old)
    before = {q.relative_to(tmp_path): q.read_bytes() for q in tmp_path.rglob("*") if q.is_file()}
    calls = []

    def failing(path, arr):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("killed half way")
        return np.save(path, arr)

    monkeypatch.setattr(tmod, "save_array", failing)
    new = _transforms(n=3)
    with pytest.raises(RuntimeError, match="half way"):
        _save(p, new, overwrite=True)
    after = {q.relative_to(tmp_path): q.read_bytes() for q in tmp_path.rglob("*") if q.is_file()}
    assert after == before


def test_write_plane_is_atomic_and_keeps_the_format(tmp_path):
    from napari_histovol.core.io.imagefile import decode
    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.io.slices import write_plane

    img = tissue((20, 24), 5)
    p = write_plane(tmp_path / "sec_01.png", img, VolumeMeta())
    np.testing.assert_array_equal(decode(p), img)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["sec_01.png"]


@pytest.mark.parametrize(
    "multiscales",
    [
        [{"datasets": "0"}],  # not a list of datasets
        [{"axes": ["z", "y", "x"], "datasets": [{"path": "0"}], "coordinateTransformations": 5}],
        [{"axes": ["y", "x"], "datasets": [{"path": "0"}]}],  # 2 axes for a 3D array
        [
            {
                "axes": ["z", "y", "x"],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1]}]}
                ],
            }
        ],
    ],
)
def test_malformed_ngff_metadata_is_one_sentence(tmp_path, multiscales):
    import zarr

    root = tmp_path / "odd.ome.zarr"
    g = zarr.open_group(str(root), mode="w", zarr_format=2)
    a = g.create_array("0", shape=(2, 8, 8), chunks=(1, 8, 8), dtype="uint8")
    a[...] = 1
    g.attrs["multiscales"] = multiscales
    with pytest.raises(InputError, match=str(root)):
        read_volume(root)


def test_transforms_file_with_a_runaway_z_number_is_refused(tmp_path):
    import json

    from napari_histovol.core.align.transforms import load_transforms

    p = _save(tmp_path / "T.json", _transforms(with_field=False))
    doc = json.loads(p.read_text())
    doc["slices"][1]["z"] = 10**25
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="too large"):
        load_transforms(p)


def test_jpeg_with_a_damaged_segment_length_is_a_corrupt_image(tmp_path):
    p = tmp_path / "s_1.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0\x00\x00garbage\xff\xd9")  # length 0 would loop forever
    with pytest.raises(CorruptImageError, match="s_1.jpg"):
        probe(p)


def test_a_failed_ome_tiff_write_closes_its_prefetch_thread_and_leaves_nothing(
    tmp_path, monkeypatch
):
    # a full disk in the middle of the first level: the plane reader that runs a plane ahead
    # is shut down in the writer's own thread (left to the garbage collector, it was once
    # finalised inside a dask worker, waited for a plane only that worker could compute, and
    # the process hung at exit)
    import errno
    import threading

    import dask.array as da

    from napari_histovol.core.errors import HistovolError
    from napari_histovol.core.io import Volume, VolumeMeta
    from napari_histovol.core.io.ome_tiff import PREFETCH_THREAD, write_ome_tiff

    data = np.random.default_rng(0).integers(0, 255, (6, 64, 64), dtype=np.uint8)
    volume = Volume(da.from_array(data, chunks=(1, 64, 64)), VolumeMeta().with_planes(6))
    real = tifffile.TiffWriter.write

    def full_disk(self, data, *args, **kwargs):
        if hasattr(data, "__next__"):
            for _ in range(3):
                next(data)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffWriter, "write", full_disk)
    with pytest.raises((HistovolError, OSError)):
        write_ome_tiff(volume, tmp_path / "v.ome.tif")
    assert not [t.name for t in threading.enumerate() if t.name.startswith(PREFETCH_THREAD)]
    assert not list(tmp_path.iterdir())


def test_a_second_run_writing_the_same_output_is_refused_and_a_dead_runs_lock_taken_over(
    tmp_path,
):
    """Two `histovol isotropic ... iso2.ome.zarr` runs at once: one failed with a raw zarr
    message and left its temporary output behind. A run now holds a lock beside its output."""
    import subprocess
    import sys

    from napari_histovol.core.errors import OutputError
    from napari_histovol.core.io.atomic import atomic_output, lock_name

    out = tmp_path / "v.ome.zarr"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_name(out).write_text(f"{other.pid}\n")
        with pytest.raises(OutputError, match="Another histovol run"):
            with atomic_output(out, is_dir=True):
                pass
        assert not out.exists()
    finally:
        other.kill()
        other.wait()
    # the other run is gone: its lock is stale and taken over, and released after
    with atomic_output(out, is_dir=True) as tmp:
        (tmp / "x").write_text("1")
        assert lock_name(out).read_text().split()[0] == str(os.getpid())
    assert (out / "x").exists() and not lock_name(out).exists()

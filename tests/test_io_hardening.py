"""The I/O layer on bad and awkward input (issue 11): pixel sizes of TIFF stacks, section
numbers that vary, bounds checked before work, huge declared images, OME-Zarr integrity, text
inputs, a full disk, and one atomic writer."""

from __future__ import annotations

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

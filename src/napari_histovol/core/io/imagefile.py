"""One section image on disk: header probe (no pixel decoding), integrity check, decoding.

Supported: TIFF (incl. OME-TIFF and BigTIFF), PNG, JPEG, BMP; gray, gray+alpha, RGB, RGBA,
palette; 1, 8 and 16 bit, and float TIFFs. Alpha is dropped, palettes are expanded.
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptImageError, HistovolWarning, InputError
from .bounds import fits_in_memory, format_bytes
from .tiff_metadata import PLAUSIBLE_PIXEL_UM, tiff_physical_size

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)


@dataclass(frozen=True)
class ImageInfo:
    """What the header of one image says.

    ``shape`` is (height, width); ``channels`` is 1 for gray or 3 for colour after
    dropping alpha; ``pixel_size_um`` is None when the file does not say.
    """

    path: str
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype
    pixel_size_um: float | None = None
    spacing_um: float | None = None


def is_image_file(name: str) -> bool:
    n = os.path.basename(name)
    return not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)


def probe(path: str | os.PathLike) -> ImageInfo:
    """Read an image's header (size, channels, dtype, pixel size) without decoding pixels.

    Raises
    ------
    CorruptImageError
        When the file is not a readable image or is truncated.
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise InputError(f"Cannot open '{path}': {e.strerror}.") from None
    if size == 0:
        raise CorruptImageError(f"'{path}' is empty (0 bytes); remove or replace it.")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".tif", ".tiff"):
            info = _probe_tiff(path, size)
        elif ext == ".png":
            info = _probe_png(path, size)
        else:
            info = _probe_pillow(path, size, ext)
    except (CorruptImageError, InputError):
        raise
    except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
        raise CorruptImageError(
            f"'{path}' is not a readable image ({type(e).__name__}: {e}); remove or replace it."
        ) from None
    if info.shape[0] < 1 or info.shape[1] < 1:
        raise CorruptImageError(f"'{path}' has no pixels ({info.shape}).")
    return info


def _probe_tiff(path: str, size: int) -> ImageInfo:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        page = series.pages[0] if series.pages else tif.pages[0]
        level_shape = series.shape
        axes = series.axes
        dtype = np.dtype(series.dtype)
        # Truncation check: every strip/tile of the first page must lie inside the file.
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
        if ends and max(ends) > size:
            raise CorruptImageError(
                f"'{path}' is truncated ({size} bytes, image data ends at {max(ends)}); "
                "copy it again or remove it."
            )
        squeezed = [(a, n) for a, n in zip(axes, level_shape, strict=True) if n > 1 or a in "YX"]
        sq_axes = "".join(a for a, _ in squeezed)
        dims = dict(squeezed)
        extra = [a for a in sq_axes if a not in "YXSC"]
        if extra:
            raise InputError(
                f"'{path}' holds a stack ({axes} {level_shape}), not one section; "
                "open it as a volume instead of as part of a slice folder."
            )
        channels = dims.get("S", dims.get("C", 1))
        size_um = tiff_physical_size(tif)
    _check_fits(path, (int(dims["Y"]), int(dims["X"])), int(channels), dtype)
    channels = _visible_channels(channels, path)
    return ImageInfo(path, (int(dims["Y"]), int(dims["X"])), channels, dtype, size_um.x, size_um.z)


class ImageTooLargeError(CorruptImageError):
    """An image whose decoded pixels would not fit in the memory available.

    A :class:`CorruptImageError`, so a folder reader that skips unusable files skips it too.
    """


def _check_fits(path: str, shape: tuple[int, int], samples: int, dtype: np.dtype) -> None:
    """Refuse an image whose decoded plane would not fit in the memory available."""
    h, w = int(shape[0]), int(shape[1])
    need = h * w * max(1, int(samples)) * np.dtype(dtype).itemsize
    ok, avail = fits_in_memory(need)
    if not ok:
        raise ImageTooLargeError(
            f"'{path}' declares a {w} x {h} pixel image that needs {format_bytes(need)} of "
            f"memory once decoded, but only {format_bytes(avail)} is available; save a "
            "downsampled copy or leave the file out."
        )


_PIL_LOCK = threading.Lock()


@contextmanager
def _pillow_open(path: str) -> Iterator[Any]:
    """``PIL.Image.open`` without Pillow's decompression-bomb limit (179 Mpx, too small for
    whole sections): the memory check above is the guard. The limit is lifted only while
    the header is parsed, under a lock."""
    from PIL import Image

    with _PIL_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = old
    with im:
        yield im


def _probe_png(path: str, size: int) -> ImageInfo:
    with open(path, "rb") as f:
        head = f.read(33)
        f.seek(max(0, size - 12))
        tail = f.read(12)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise CorruptImageError(f"'{path}' is not a PNG file although it is named .png.")
    width, height, depth, ctype = struct.unpack(">IIBB", head[16:26])
    if tail[4:8] != b"IEND":
        raise CorruptImageError(
            f"'{path}' is truncated (no PNG end marker); copy it again or remove it."
        )
    channels = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}.get(ctype)
    if channels is None:
        raise CorruptImageError(f"'{path}' has an unknown PNG colour type {ctype}.")
    dtype = np.dtype(np.uint16) if depth == 16 and ctype != 3 else np.dtype(np.uint8)
    # samples decoded before alpha is dropped (a palette may expand to RGBA)
    samples = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}[ctype]
    _check_fits(path, (height, width), samples, dtype)
    px = _png_pixel_size(path, size)
    return ImageInfo(path, (int(height), int(width)), channels, dtype, px)


def _png_pixel_size(path: str, size: int) -> float | None:
    """µm per pixel from the PNG ``pHYs`` chunk (unit metre), read before the image data."""
    with open(path, "rb") as f:
        pos = 8
        while pos + 8 <= size:
            f.seek(pos)
            length, kind = struct.unpack(">I4s", f.read(8))
            if kind == b"pHYs" and length >= 9:
                ppx, _ppy, unit = struct.unpack(">IIB", f.read(9))
                if unit != 1 or not ppx:
                    return None
                um = 1e6 / ppx
                lo, hi = PLAUSIBLE_PIXEL_UM
                return um if lo <= um <= hi else None
            if kind in (b"IDAT", b"IEND"):
                return None
            pos += 12 + length
    return None


# JPEG start-of-frame markers (not DHT C4, JPG C8, DAC CC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_frame(path: str) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's start-of-frame header, or None when the file
    does not look like a JPEG (then Pillow is asked)."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return None
        while True:
            b = f.read(1)
            if not b:
                return None
            if b != b"\xff":
                continue
            m = f.read(1)
            while m == b"\xff":  # fill bytes
                m = f.read(1)
            if not m:
                return None
            marker = m[0]
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
                continue
            if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame
                return None
            raw = f.read(2)
            if len(raw) < 2:
                return None
            length = struct.unpack(">H", raw)[0]
            if length < 2:  # a damaged segment length: let the decoder judge the file
                return None
            if marker in _JPEG_SOF:
                frame = f.read(6)
                if len(frame) < 6:
                    return None
                _precision, h, w, n = struct.unpack(">BHHB", frame)
                return (h, w, n) if h and w else None
            f.seek(length - 2, 1)


def _probe_pillow(path: str, size: int, ext: str) -> ImageInfo:
    if ext in (".jpg", ".jpeg"):
        with open(path, "rb") as f:
            f.seek(max(0, size - 64))
            tail = f.read()
        if b"\xff\xd9" not in tail:
            raise CorruptImageError(
                f"'{path}' is truncated (no JPEG end marker); copy it again or remove it."
            )
        frame = _jpeg_frame(path)
        if frame is not None:
            _check_fits(path, frame[:2], frame[2], np.dtype(np.uint8))
    with _pillow_open(path) as im:
        w, h = im.size
        mode = im.mode
        bands = len(im.getbands())
        if ext == ".bmp":
            with open(path, "rb") as f:
                declared = struct.unpack("<I", f.read(6)[2:6])[0]
            if declared > size:
                raise CorruptImageError(f"'{path}' is truncated ({size} of {declared} bytes).")
    channels = 1 if mode in ("1", "L", "LA", "I;16", "I", "F") else 3
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}.get(mode, np.uint8)
    _check_fits(path, (h, w), bands, np.dtype(dtype))
    return ImageInfo(path, (int(h), int(w)), channels, np.dtype(dtype), None)


def _visible_channels(channels: int, path: str) -> int:
    if channels in (1, 3):
        return channels
    if channels == 2:  # gray + alpha
        return 1
    if channels == 4:  # RGBA
        return 3
    raise InputError(
        f"'{path}' has {channels} channels; sections must be gray, RGB or RGBA images."
    )


def decode(path: str | os.PathLike, info: ImageInfo | None = None) -> np.ndarray:
    """Decode an image to (Y, X) or (Y, X, 3), dropping alpha and expanding palettes.

    NaNs in float images are replaced by 0 with a warning.
    """
    path = str(path)
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path, series=0, level=0)
        else:
            arr = _decode_other(path, ext)
    except Exception as e:  # noqa: BLE001
        raise CorruptImageError(
            f"'{path}' could not be decoded ({type(e).__name__}: {e}); remove or replace it."
        ) from None
    arr = np.asarray(arr)
    arr = _to_section_layout(arr, path)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        warnings.warn(
            f"'{os.path.basename(path)}' contains NaN or infinite values; they were set to 0.",
            HistovolWarning,
            stacklevel=2,
        )
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    if arr.dtype.kind not in "uif":
        raise InputError(f"'{path}' has pixel type {arr.dtype}, which is not an image type.")
    if info is not None and arr.shape[:2] != tuple(info.shape):
        raise CorruptImageError(
            f"'{path}' decodes to {arr.shape[:2]} but its header says {info.shape}; the file is damaged."
        )
    return arr


def _decode_other(path: str, ext: str) -> np.ndarray:
    if ext == ".png":
        import imagecodecs

        with open(path, "rb") as f:
            data = f.read()
        try:
            return imagecodecs.png_decode(data)
        except Exception:  # palette PNGs and odd variants: fall back to Pillow
            pass
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with _pillow_open(path) as im:
        im.load()
        if im.mode == "P" or im.mode == "PA":
            im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif im.mode == "1":
            im = im.convert("L")
        return np.asarray(im)


def _to_section_layout(arr: np.ndarray, path: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3:
        if arr.shape[-1] in (1, 2, 3, 4):
            c = arr.shape[-1]
        elif arr.shape[0] in (1, 2, 3, 4) and arr.shape[0] < min(arr.shape[1:]):
            arr = np.moveaxis(arr, 0, -1)  # planar (C, Y, X) TIFF
            c = arr.shape[-1]
        else:
            raise InputError(f"'{path}' holds a stack of {arr.shape[0]} planes, not one section.")
        if c == 1:
            return arr[..., 0]
        if c == 2:
            return arr[..., 0]
        return np.ascontiguousarray(arr[..., :3])
    raise InputError(f"'{path}' has {arr.ndim} dimensions {arr.shape}; expected one 2D section.")


def as_path(p: str | os.PathLike) -> Path:
    return Path(os.fspath(p)).expanduser()

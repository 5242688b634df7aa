"""One section image on disk: header probe (no pixel decoding), integrity check, decoding.

Supported: TIFF (incl. OME-TIFF and BigTIFF), PNG, JPEG, BMP; gray, gray+alpha, RGB, RGBA,
palette; 1, 8 and 16 bit, and float TIFFs. Alpha is dropped, palettes are expanded.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptImageError, HistovolWarning, InputError
from .meta import unit_to_micrometer

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64)
# Resolution tags above this many µm per pixel are not microscopy (72 dpi defaults etc.): ignored.
_MAX_PLAUSIBLE_UM_PER_PX = 100.0


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
        px, spacing = _tiff_pixel_size(tif, page)
    channels = _visible_channels(channels, path)
    return ImageInfo(path, (int(dims["Y"]), int(dims["X"])), channels, dtype, px, spacing)


def _tiff_pixel_size(tif, page) -> tuple[float | None, float | None]:
    """µm per pixel (x) and z spacing from OME-XML, ImageJ metadata or resolution tags."""
    if tif.is_ome and tif.ome_metadata:
        from .ome_tiff import parse_ome_physical_size

        px, _, sz = parse_ome_physical_size(tif.ome_metadata)
        if px:
            return px, sz
    spacing = None
    ij = tif.imagej_metadata or {}
    factor = unit_to_micrometer(ij.get("unit")) if ij else None
    if ij and factor and ij.get("spacing"):
        spacing = float(ij["spacing"]) * factor
    tags = page.tags
    if "XResolution" not in tags:
        return None, spacing
    num, den = tags["XResolution"].value
    if not num or not den:
        return None, spacing
    px_per_unit = num / den
    unit_tag = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    if factor:  # ImageJ: resolution is pixels per `unit`
        um = factor / px_per_unit
    elif unit_tag == 3:  # centimetre
        um = 1e4 / px_per_unit
    elif unit_tag == 2:  # inch
        um = 25400.0 / px_per_unit
    else:
        return None, spacing
    if not (0 < um <= _MAX_PLAUSIBLE_UM_PER_PX):
        return None, spacing
    return um, spacing


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
    px = _png_pixel_size(path)
    return ImageInfo(path, (int(height), int(width)), channels, dtype, px)


def _png_pixel_size(path: str) -> float | None:
    from PIL import Image

    with Image.open(path) as im:
        # Pillow reports pHYs in metres as 'dpi' only when the unit is metre.
        dpi = im.info.get("dpi")
    if not dpi or not dpi[0]:
        return None
    um = 25400.0 / float(dpi[0])
    return um if 0 < um <= _MAX_PLAUSIBLE_UM_PER_PX else None


def _probe_pillow(path: str, size: int, ext: str) -> ImageInfo:
    from PIL import Image

    if ext in (".jpg", ".jpeg"):
        with open(path, "rb") as f:
            f.seek(max(0, size - 64))
            tail = f.read()
        if b"\xff\xd9" not in tail:
            raise CorruptImageError(
                f"'{path}' is truncated (no JPEG end marker); copy it again or remove it."
            )
    with Image.open(path) as im:
        w, h = im.size
        mode = im.mode
        if ext == ".bmp":
            declared = struct.unpack("<I", open(path, "rb").read(6)[2:6])[0]
            if declared > size:
                raise CorruptImageError(f"'{path}' is truncated ({size} of {declared} bytes).")
    channels = 1 if mode in ("1", "L", "LA", "I;16", "I", "F") else 3
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}.get(mode, np.uint8)
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
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(path) as im:
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

"""Folders of section images: lazy reading onto a common canvas, and writing.

Reading touches only file headers; pixels are decoded per section when a dask chunk is
computed, so a folder of thousands of large sections opens in seconds.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np

from ..errors import CorruptImageError, HistovolWarning, InputError
from ..image import background_value
from ..progress import Progress, ProgressGenerator
from .atomic import atomic_output, write_json, write_text
from .imagefile import ImageInfo, decode, is_image_file, probe
from .meta import META_KEY, VolumeMeta, meta_from_block
from .naming import (
    NamePattern,
    check_z_numbers,
    find_gaps,
    infer_pattern,
    number_in_pattern,
    order_slices,
    section_numbers,
    split_stem,
)
from .text import read_text
from .volume import Volume

SIDECAR = "histovol.json"
SYNTHETIC_LIST = "synthetic.txt"


def list_section_files(folder: str | os.PathLike) -> list[str]:
    """Image files directly inside ``folder`` (hidden files and sidecars excluded)."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"'{folder}' does not exist.")
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder.")
    names = [n for n in os.listdir(folder) if is_image_file(n) and (folder / n).is_file()]
    if not names:
        others = [n for n in os.listdir(folder) if not n.startswith(".")]
        if not others:
            raise InputError(f"The folder '{folder}' is empty; put the section images in it.")
        raise InputError(
            f"The folder '{folder}' holds no section images (.tif, .png, .jpg, .bmp); "
            f"found e.g. '{others[0]}'."
        )
    return [str(folder / n) for n in names]


def place_on_canvas(
    img: np.ndarray, canvas_hw: tuple[int, int], fill: np.ndarray | None = None
) -> np.ndarray:
    """Centre ``img`` on a canvas of ``canvas_hw``, padding with ``fill`` (its background).

    An image larger than the canvas along an axis is centre-cropped along it.
    """
    H, W = canvas_hw
    h, w = img.shape[:2]
    if (h, w) == (H, W):
        return img
    if fill is None:
        fill = background_value(img)
    out = np.empty((H, W) + img.shape[2:], dtype=img.dtype)
    out[...] = fill
    # source and destination windows (crop when larger, pad when smaller)
    sy0 = max(0, (h - H) // 2)
    sx0 = max(0, (w - W) // 2)
    dy0 = max(0, (H - h) // 2)
    dx0 = max(0, (W - w) // 2)
    ch, cw = min(h, H), min(w, W)
    out[dy0 : dy0 + ch, dx0 : dx0 + cw] = img[sy0 : sy0 + ch, sx0 : sx0 + cw]
    return out


def _probe_all(paths: Sequence[str], on_corrupt: str) -> tuple[list[ImageInfo], list[str]]:
    """Probe headers in parallel (I/O bound); return infos and the skipped files."""

    def safe(p: str):
        try:
            return probe(p)
        except CorruptImageError as e:
            return e

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(paths)))) as ex:
        results = list(ex.map(safe, paths))
    infos, skipped = [], []
    for p, r in zip(paths, results, strict=True):
        if isinstance(r, Exception):
            if on_corrupt == "error":
                raise InputError(str(r), option="on_corrupt") from None
            warnings.warn(f"Skipped an unreadable section: {r}", HistovolWarning, stacklevel=3)
            skipped.append(p)
        else:
            infos.append(r)
    return infos, skipped


def read_slice_folder(
    folder: str | os.PathLike,
    *,
    on_corrupt: str = "error",
    pixel_size: float | None = None,
    section_spacing: float | None = None,
) -> Volume:
    """Open a folder of section images as a lazy (Z, Y, X[, 3]) volume.

    Files are ordered by the last number in their names; that number is the section's z
    number, and numbers missing in between are reported as gaps. Sections of different sizes
    are centred on a common canvas padded with their background (with a warning).

    Parameters
    ----------
    folder
        Folder with .tif/.tiff/.png/.jpg/.jpeg/.bmp sections (gray, RGB or RGBA; 8/16 bit).
    on_corrupt
        ``"error"`` (default): a corrupt or truncated file stops with an error naming it;
        ``"skip"``: it is left out with a warning, and its z number becomes a gap.
    pixel_size, section_spacing
        Physical scale in µm, overriding what the files say.

    Returns
    -------
    Volume
        Lazy data and :class:`VolumeMeta` (scale, z numbers, gaps, files, pattern).
    """
    if on_corrupt not in ("error", "skip"):
        raise ValueError("on_corrupt must be 'error' or 'skip'")
    folder = Path(os.fspath(folder)).expanduser()
    paths = list_section_files(folder)
    ordered, zs = order_slices(paths)
    find_gaps(zs, source=str(folder))  # refuses a runaway numbering before any file is probed
    if not any(z is not None for z in section_numbers(ordered)):
        warnings.warn(
            f"No file name in '{folder}' has a number; sections are in natural name order.",
            HistovolWarning,
            stacklevel=2,
        )
    infos, skipped = _probe_all(ordered, on_corrupt)
    if skipped:
        keep = [i for i, p in enumerate(ordered) if p not in set(skipped)]
        ordered = [ordered[i] for i in keep]
        zs = [zs[i] for i in keep]
    if not infos:
        raise InputError(f"No readable section image in '{folder}'.")

    dtypes = Counter(str(i.dtype) for i in infos)
    if len(dtypes) > 1:
        odd = next(i for i in infos if str(i.dtype) != dtypes.most_common(1)[0][0])
        raise InputError(
            f"The folder mixes pixel types ({', '.join(sorted(dtypes))}), e.g. "
            f"'{os.path.basename(odd.path)}' is {odd.dtype}; convert the sections to one bit depth."
        )
    dtype = infos[0].dtype
    channels = max(i.channels for i in infos)
    if channels == 3 and any(i.channels == 1 for i in infos):
        n_gray = sum(i.channels == 1 for i in infos)
        warnings.warn(
            f"{n_gray} of {len(infos)} sections are gray among RGB sections; they are shown as gray RGB.",
            HistovolWarning,
            stacklevel=2,
        )
    sizes = Counter(i.shape for i in infos)
    canvas = (max(i.shape[0] for i in infos), max(i.shape[1] for i in infos))
    if len(sizes) > 1:
        warnings.warn(
            f"The sections have {len(sizes)} different sizes; they are centred on a common "
            f"{canvas[1]}x{canvas[0]} canvas padded with their background.",
            HistovolWarning,
            stacklevel=2,
        )
    if len(infos) == 1:
        warnings.warn(
            f"'{folder}' holds a single section; the volume has one plane.",
            HistovolWarning,
            stacklevel=2,
        )

    sidecar = _read_sidecar(folder)
    meta = _folder_meta(infos, zs, sidecar, rgb=channels == 3)
    meta = meta.with_scale(pixel_size=pixel_size, section_spacing=section_spacing)
    # where each file's pixel (0, 0) lands on the canvas, and the files' own sizes: the
    # transforms file maps aligned pixels to file pixels with these
    offsets = [[(canvas[0] - i.shape[0]) // 2, (canvas[1] - i.shape[1]) // 2] for i in infos]
    meta = replace(
        meta,
        extra={
            **meta.extra,
            "canvas_offsets": offsets,
            "source_shapes": [list(i.shape) for i in infos],
        },
    )

    data = _lazy_stack(infos, canvas, channels, dtype)
    return Volume(data=data, meta=meta)


def read_single_image(path: str | os.PathLike) -> Volume:
    """One image file (.png, .jpg, .bmp, as ``histovol stitch`` writes a mosaic) as a lazy
    one-plane volume, numbered and scaled as it would be in a folder of sections."""
    path = Path(os.fspath(path)).expanduser()
    ordered, zs = order_slices([str(path)])
    infos, _ = _probe_all(ordered, "error")
    channels = infos[0].channels
    meta = _folder_meta(infos, zs, None, rgb=channels == 3)
    return Volume(data=_lazy_stack(infos, infos[0].shape, channels, infos[0].dtype), meta=meta)


def _folder_meta(
    infos: list[ImageInfo], zs: list[int], sidecar: VolumeMeta | None, *, rgb: bool
) -> VolumeMeta:
    names = [os.path.basename(i.path) for i in infos]
    try:
        pattern = infer_pattern(names)
    except InputError:
        pattern = None
    px_sizes = {round(i.pixel_size_um, 9) for i in infos if i.pixel_size_um}
    px = infos[0].pixel_size_um
    if len(px_sizes) > 1:
        warnings.warn(
            f"The sections disagree on the pixel size ({sorted(px_sizes)} µm); using {px} µm "
            f"from '{names[0]}'.",
            HistovolWarning,
            stacklevel=3,
        )
    spacing = next((i.spacing_um for i in infos if i.spacing_um), None)
    synthetic = (False,) * len(infos)
    meta = VolumeMeta(
        rgb=rgb,
        z_numbers=tuple(zs),
        synthetic=synthetic,
        gaps=find_gaps(zs),
        files=tuple(names),
        pattern=pattern,
        channel_names=("red", "green", "blue") if rgb else (),
    )
    if sidecar is not None:
        # A folder we wrote: its scale and synthetic flags (matched by z number) come back.
        syn_by_z = dict(zip(sidecar.z_numbers, sidecar.synthetic, strict=False))
        meta = replace(
            meta,
            scale=sidecar.scale,
            unit=sidecar.unit,
            scale_known=sidecar.scale_known,
            spacing_known=sidecar.spacing_known,
            synthetic=tuple(bool(syn_by_z.get(z, False)) for z in zs),
            extra=sidecar.extra,
        )
        return meta
    z_spacing = spacing if spacing else (px if px else 1.0)
    return replace(
        meta,
        scale=(float(z_spacing), float(px or 1.0), float(px or 1.0)),
        unit="micrometer" if px else "pixel",
        scale_known=bool(px),
        spacing_known=bool(spacing),
    )


def _read_sidecar(folder: Path) -> VolumeMeta | None:
    p = folder / SIDECAR
    if not p.is_file():
        return None
    try:
        d = json.loads(read_text(p, what="the folder's napari-histovol metadata"))
    except (InputError, ValueError) as e:
        warnings.warn(f"Ignoring unreadable '{p}': {e}", HistovolWarning, stacklevel=3)
        return None
    meta = meta_from_block(d.get(META_KEY, d) if isinstance(d, dict) else d, source=str(p))
    if meta is not None:
        try:
            check_z_numbers(meta.z_numbers, source=str(p))
        except InputError as e:
            warnings.warn(f"Ignoring unreadable '{p}': {e}", HistovolWarning, stacklevel=3)
            return None
    return meta


def _lazy_stack(
    infos: list[ImageInfo], canvas: tuple[int, int], channels: int, dtype: np.dtype
) -> da.Array:
    """One dask chunk per section; a single graph layer, so opening is O(1) in graph size."""
    H, W = canvas
    n = len(infos)
    chunks: tuple = ((1,) * n, (H,), (W,))
    if channels == 3:
        chunks = chunks + ((3,),)

    def load(block_info=None):
        z = block_info[None]["chunk-location"][0]
        info = infos[z]
        img = decode(info.path, info)
        if channels == 3 and img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        img = img.astype(dtype, copy=False)
        return place_on_canvas(img, canvas)[None]

    return da.map_blocks(load, dtype=dtype, chunks=chunks, meta=np.empty((0,) * len(chunks), dtype))


# ---------------------------------------------------------------------------------------------
# writing


def write_slice_folder(
    volume: Volume,
    out: str | os.PathLike,
    *,
    pattern: NamePattern | None = None,
    ext: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a volume as one image per plane (drains :func:`iter_write_slice_folder`)."""
    from ..progress import drain

    return drain(
        iter_write_slice_folder(volume, out, pattern=pattern, ext=ext, overwrite=overwrite)
    )


def iter_write_slice_folder(
    volume: Volume,
    out: str | os.PathLike,
    *,
    pattern: NamePattern | None = None,
    ext: str | None = None,
    overwrite: bool = False,
) -> ProgressGenerator[Path]:
    """Write one image per plane, named by the source pattern and z numbers.

    The folder also gets ``histovol.json`` (scale, z numbers, synthetic flags) and
    ``synthetic.txt`` (the generated files, one per line). It is written under a temporary
    name and renamed when complete.
    """
    meta = volume.meta.with_planes(volume.shape[0])
    pattern, names = plane_names(meta, volume.dtype, pattern=pattern, ext=ext)
    n = volume.shape[0]
    with atomic_output(out, overwrite=overwrite, is_dir=True) as tmp:
        for i in range(n):
            plane = np.asarray(volume.data[i].compute())
            _write_image(tmp / names[i], plane, meta)
            yield Progress(i + 1, n, names[i], stage="write")
        write_folder_sidecars(tmp, meta, names, pattern)
    return Path(out)


def plane_names(
    meta: VolumeMeta, dtype, *, pattern: NamePattern | None = None, ext: str | None = None
):
    """The folder pattern (the source's unless given; ``ext`` swaps the image format) and one
    file name per plane; refuses formats that cannot hold the dtype and repeated names."""
    pattern = pattern or meta.pattern or NamePattern("slice_", 4, "", ".tif")
    if ext:
        pattern = replace(pattern, ext=ext if ext.startswith(".") else "." + ext)
    dtype = np.dtype(dtype)
    if pattern.ext.lower() in (".jpg", ".jpeg", ".bmp") and dtype != np.uint8:
        raise InputError(
            f"{pattern.ext} holds only 8-bit images but the volume is {dtype}; write .tif or .png slices instead."
        )
    if pattern.ext.lower() == ".png" and dtype not in (np.uint8, np.uint16):
        raise InputError(f".png holds 8 or 16-bit images but the volume is {dtype}; write .tif.")
    names = _plane_names(meta, pattern)
    if len(set(names)) != len(names):
        raise InputError("The z numbers of the volume repeat; cannot name one file per plane.")
    return pattern, names


def write_folder_sidecars(
    folder: Path, meta: VolumeMeta, names: list[str], pattern: NamePattern
) -> None:
    """``histovol.json`` (scale, z numbers, flags, names) and ``synthetic.txt`` (generated
    files), each written atomically (replacing a previous run's)."""
    side = replace(meta, files=tuple(names), pattern=pattern)
    write_json(folder / SIDECAR, {META_KEY: side.to_dict()}, overwrite=True)
    syn = [nm for nm, s in zip(names, meta.synthetic, strict=True) if s]
    write_text(folder / SYNTHETIC_LIST, "".join(f"{s}\n" for s in syn), overwrite=True)


def write_plane(
    path: str | os.PathLike, plane: np.ndarray, meta: VolumeMeta, *, overwrite: bool = False
) -> Path:
    """Write one plane as an image file (format by suffix) atomically: a file under ``path``
    is always complete. The temporary name keeps the suffix (``.partial-NAME``)."""
    with atomic_output(path, overwrite=overwrite, keep_suffix=True) as tmp:
        _write_image(tmp, plane, meta)
    return Path(os.fspath(path)).expanduser()


def _plane_names(meta: VolumeMeta, pattern: NamePattern) -> list[str]:
    """A measured plane keeps its source file's name (extension swapped if needed) when that
    name's section number is the plane's z number; a generated one, or one whose z number
    changed, takes the folder pattern with its z number.

    Source names are numbered by the same rule as when they were read: with the source
    folder's pattern as the shared start and end, else by what varies across them.
    """
    sources = [f for f in meta.files if f]
    by_group = dict(zip(sources, section_numbers(sources), strict=True))
    names = []
    for f, z in zip(meta.files, meta.z_numbers, strict=True):
        number = None
        if f:
            number = number_in_pattern(f, meta.pattern) if meta.pattern else None
            if number is None:
                number = by_group.get(f)
        names.append(split_stem(f)[0] + pattern.ext if f and number == z else pattern.format(z))
    return names


def _write_image(path: Path, plane: np.ndarray, meta: VolumeMeta) -> None:
    ext = path.suffix.lower()
    if ext in (".tif", ".tiff"):
        import tifffile

        kw = {}
        if meta.scale_known:
            kw["resolution"] = (1e4 / meta.scale[2], 1e4 / meta.scale[1])
            kw["resolutionunit"] = "CENTIMETER"
        tifffile.imwrite(
            path,
            plane,
            photometric="rgb" if plane.ndim == 3 else "minisblack",
            compression="zlib",
            compressionargs={"level": 4},
            **kw,
        )
    elif ext == ".png":
        import imagecodecs

        path.write_bytes(imagecodecs.png_encode(plane, level=4))
    else:
        from PIL import Image

        kw = {"quality": 95} if ext in (".jpg", ".jpeg") else {}
        Image.fromarray(plane).save(path, **kw)


__all__ = [
    "background_value",
    "iter_write_slice_folder",
    "list_section_files",
    "place_on_canvas",
    "read_slice_folder",
    "write_plane",
    "write_slice_folder",
]

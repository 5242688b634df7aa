"""The ``.hgm`` file: a Gaussian mixture stored as quantised parameters, entropy coded.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89HGM\\r\\n\\x1a\\n"  (PNG-style: catches text-mode damage)
    8       2     format version (uint16, currently 1)
    10      2     flags (uint16, 0)
    12      4     header length H (uint32)
    16      H     header: UTF-8 JSON (see below)
    16+H    P     parameter stream, compressed with the header's ``codec``
    16+H+P  4     CRC-32 of bytes 0 .. 16+H+P

The JSON header holds ``shape`` (z, y, x), ``dtype``, ``value_range`` [min, max] of the original,
``background``, ``voxel_size`` (z, y, x) and ``unit``, the ``blocks`` layout of the fit,
``count`` (Gaussians), ``quant`` (the quantisation below), ``codec`` and ``payload_bytes``.

Each Gaussian is quantised to 15 bytes before entropy coding (the limit is 22):

* centre: three uint16, ``round((c + 0.5) / position_step)`` per axis (Gaussians sorted by
  z, y, x; z stored as the difference to the previous Gaussian's);
* scales: three uint8, log-uniform between ``scale_min`` and ``scale_max``;
* rotation: unit quaternion, "smallest three": the index of its largest component (uint8, made
  positive and dropped) and the other three as uint8 on [-1/sqrt 2, 1/sqrt 2];
* amplitude: uint16, linear on [0, ``amplitude_max``], ``amplitude_bits`` significant bits.

The stream stores each field's byte planes one after another (high bytes, then low bytes) so
that the lossless coder (LZMA or Brotli, whichever is smaller) sees similar bytes together.
"""

from __future__ import annotations

import json
import lzma
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_output
from .mixture import GaussianMixture

MAGIC = b"\x89HGM\r\n\x1a\n"
VERSION = 1
_PREFIX = struct.Struct("<8sHHI")
#: Stored bytes per Gaussian before entropy coding (see the module docstring).
_BYTES_PER_GAUSSIAN = 15


@dataclass(frozen=True)
class Quantisation:
    """How parameters map to integers (all stored in the header)."""

    position_step: float = 0.125
    scale_min: float = 0.35
    scale_max: float = 8.0
    scale_bits: int = 8
    rotation_bits: int = 8
    amplitude_max: float = 1.0
    amplitude_bits: int = 12

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class HgmHeader:
    """What an ``.hgm`` file says about the volume it encodes."""

    shape: tuple[int, int, int]
    dtype: str
    value_range: tuple[float, float]
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unit: str = "pixel"
    blocks: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def raw_bytes(self) -> int:
        """Bytes of the original volume uncompressed."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def _quant_for(mix: GaussianMixture, shape, q: Quantisation) -> Quantisation:
    """Fit the quantiser's ranges to a mixture (amplitude maximum, position step, scales)."""
    amax = float(mix.amplitudes.max()) if len(mix) else 1.0
    step = max(q.position_step, (max(shape) + 1) / 65535.0)
    smin = min(q.scale_min, float(mix.scales.min())) if len(mix) else q.scale_min
    smax = max(q.scale_max, float(mix.scales.max())) if len(mix) else q.scale_max
    return Quantisation(
        step, smin, smax, q.scale_bits, q.rotation_bits, max(amax, 1e-12), q.amplitude_bits
    )


def _to_ints(mix: GaussianMixture, shape, q: Quantisation) -> dict[str, np.ndarray]:
    hi = np.asarray(shape, dtype=np.float64) - 0.5
    c = np.clip(mix.centres, -0.5, hi)
    pos = np.round((c + 0.5) / q.position_step).astype(np.int64)
    ls = (np.log(mix.scales) - np.log(q.scale_min)) / (np.log(q.scale_max) - np.log(q.scale_min))
    sc = np.clip(np.round(ls * (2**q.scale_bits - 1)), 0, 2**q.scale_bits - 1).astype(np.int64)
    rot = mix.rotations / np.maximum(np.linalg.norm(mix.rotations, axis=1, keepdims=True), 1e-12)
    # "Smallest three": drop the largest component (made positive), keep the other three,
    # which lie in [-1/sqrt2, 1/sqrt2]; the dropped one is recomputed well-conditioned.
    big = np.argmax(np.abs(rot), axis=1)
    rot = rot * np.where(rot[np.arange(len(rot)), big] < 0, -1.0, 1.0)[:, None]
    keep = np.array([[j for j in range(4) if j != k] for k in range(4)])[big]
    three = np.take_along_axis(rot, keep, axis=1) * np.sqrt(2)
    rmax = 2**q.rotation_bits - 1
    ro = np.clip(np.round((three + 1) / 2 * rmax), 0, rmax).astype(np.int64)
    amax = 2**q.amplitude_bits - 1
    am = np.clip(np.round(mix.amplitudes / q.amplitude_max * amax), 0, amax).astype(np.int64)
    return {"pos": pos, "scale": sc, "rot": ro, "rot_index": big.astype(np.int64), "amp": am}


def _from_ints(ints: dict[str, np.ndarray], q: Quantisation, background: float) -> GaussianMixture:
    centres = ints["pos"].astype(np.float64) * q.position_step - 0.5
    t = ints["scale"].astype(np.float64) / (2**q.scale_bits - 1)
    scales = np.exp(np.log(q.scale_min) + t * (np.log(q.scale_max) - np.log(q.scale_min)))
    three = (ints["rot"].astype(np.float64) / (2**q.rotation_bits - 1) * 2 - 1) / np.sqrt(2)
    big = ints["rot_index"]
    rot = np.zeros((len(big), 4))
    keep = np.array([[j for j in range(4) if j != k] for k in range(4)])[big]
    np.put_along_axis(rot, keep, three, axis=1)
    rot[np.arange(len(big)), big] = np.sqrt(np.clip(1 - (three**2).sum(1), 0, None))
    rot /= np.maximum(np.linalg.norm(rot, axis=1, keepdims=True), 1e-12)
    amps = ints["amp"].astype(np.float64) / (2**q.amplitude_bits - 1) * q.amplitude_max
    return GaussianMixture(centres, scales, rot, amps, background)


def quantise(
    mix: GaussianMixture, shape, q: Quantisation = Quantisation()
) -> tuple[GaussianMixture, Quantisation]:
    """The mixture exactly as it will read back from a file, and the quantiser used."""
    q = _quant_for(mix, shape, q)
    return _from_ints(_to_ints(mix, shape, q), q, mix.background), q


def _sort_key(pos: np.ndarray) -> np.ndarray:
    return np.lexsort((pos[:, 2], pos[:, 1], pos[:, 0]))


def _pack(ints: dict[str, np.ndarray]) -> bytes:
    """Serialise the integer fields as byte planes (see the module docstring)."""
    pos = ints["pos"]
    dz = np.diff(pos[:, 0], prepend=0)
    planes = []
    for col in (dz, pos[:, 1], pos[:, 2], ints["amp"]):
        v = col.astype("<u2")
        planes += [(v >> 8).astype(np.uint8), (v & 0xFF).astype(np.uint8)]
    for arr in (ints["scale"], ints["rot"]):
        for j in range(3):
            planes.append(arr[:, j].astype(np.uint8))
    planes.append(ints["rot_index"].astype(np.uint8))
    return b"".join(p.tobytes() for p in planes)


def _unpack(raw: bytes, n: int) -> dict[str, np.ndarray]:
    if len(raw) != n * _BYTES_PER_GAUSSIAN:
        raise ValueError("parameter stream has the wrong length")
    b = np.frombuffer(raw, dtype=np.uint8)
    planes = [b[i * n : (i + 1) * n].astype(np.int64) for i in range(_BYTES_PER_GAUSSIAN)]
    words = [(planes[2 * k] << 8) | planes[2 * k + 1] for k in range(4)]
    z = np.cumsum(words[0])
    return {
        "pos": np.stack([z, words[1], words[2]], 1),
        "amp": words[3],
        "scale": np.stack(planes[8:11], 1),
        "rot": np.stack(planes[11:14], 1),
        "rot_index": planes[14],
    }


def _compress(raw: bytes) -> tuple[str, bytes]:
    """The smaller of LZMA (raw, no container) and Brotli."""
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0}]
    best = ("lzma", lzma.compress(raw, format=lzma.FORMAT_RAW, filters=filters))
    try:
        import imagecodecs

        br = imagecodecs.brotli_encode(raw, level=11)
        if len(br) < len(best[1]):
            best = ("brotli", bytes(br))
    except (ImportError, AttributeError):  # pragma: no cover - imagecodecs is a dependency
        pass
    return best


def _decompress(codec: str, data: bytes) -> bytes:
    if codec == "lzma":
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0}]
        return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=filters)
    if codec == "brotli":
        import imagecodecs

        return bytes(imagecodecs.brotli_decode(data))
    raise ValueError(f"unknown codec {codec!r}")


def encode(mix: GaussianMixture, header: HgmHeader, quant: Quantisation = Quantisation()) -> bytes:
    """The bytes of an ``.hgm`` file holding ``mix`` (quantised) for the volume in ``header``."""
    q = _quant_for(mix, header.shape, quant)
    ints = _to_ints(mix, header.shape, q)
    order = _sort_key(ints["pos"])
    ints = {k: v[order] for k, v in ints.items()}
    codec, payload = _compress(_pack(ints))
    meta = {
        "shape": list(header.shape),
        "dtype": header.dtype,
        "value_range": list(header.value_range),
        "background": mix.background,
        "voxel_size": list(header.voxel_size),
        "unit": header.unit,
        "blocks": header.blocks,
        "count": len(mix),
        "quant": q.to_dict(),
        "codec": codec,
        "payload_bytes": len(payload),
    }
    if header.extra:
        meta["extra"] = header.extra
    head = json.dumps(meta, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, VERSION, 0, len(head)) + head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def decode(data: bytes, source: str = "the data") -> tuple[GaussianMixture, HgmHeader]:
    """Read an ``.hgm`` file's bytes; raise :class:`InputError` for anything not one."""
    if len(data) < _PREFIX.size or not data.startswith(MAGIC):
        raise InputError(f"{source} is not a histovol Gaussian-mixture (.hgm) file.")
    _, version, _flags, hlen = _PREFIX.unpack_from(data)
    if version > VERSION:
        raise InputError(
            f"{source} is .hgm format version {version}; this napari-histovol reads up to "
            f"{VERSION}. Update napari-histovol."
        )
    try:
        meta = json.loads(data[_PREFIX.size : _PREFIX.size + hlen])
        plen = int(meta["payload_bytes"])
    except (ValueError, KeyError, UnicodeDecodeError):
        raise InputError(f"{source} is truncated or damaged (unreadable header).") from None
    end = _PREFIX.size + hlen + plen
    if len(data) < end + 4:
        raise InputError(f"{source} is truncated: {len(data)} of {end + 4} bytes are there.")
    if len(data) > end + 4:
        raise InputError(f"{source} has {len(data) - end - 4} unexpected bytes at its end.")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) != crc:
        raise InputError(f"{source} is damaged (checksum mismatch).")
    try:
        q = Quantisation(**meta["quant"])
        raw = _decompress(meta["codec"], data[_PREFIX.size + hlen : end])
        ints = _unpack(raw, int(meta["count"]))
        mix = _from_ints(ints, q, float(meta["background"]))
        shape = tuple(int(s) for s in meta["shape"])
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"its volume shape {list(shape)} holds no voxels")
        header = HgmHeader(
            shape,
            str(meta["dtype"]),
            tuple(float(v) for v in meta["value_range"]),
            tuple(float(v) for v in meta["voxel_size"]),
            str(meta["unit"]),
            dict(meta.get("blocks", {})),
            dict(meta.get("extra", {})),
        )
    except (ValueError, KeyError, TypeError, lzma.LZMAError) as exc:
        raise InputError(f"{source} is damaged: {exc}.") from None
    return mix, header


def read_hgm(path: str | os.PathLike) -> tuple[GaussianMixture, HgmHeader]:
    """Read an ``.hgm`` file (see :func:`decode`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"'{p}' does not exist.") from None
    except IsADirectoryError:
        raise InputError(f"'{p}' is a folder, not an .hgm file.") from None
    return decode(data, f"'{p.name}'")


def write_hgm(
    path: str | os.PathLike,
    mix: GaussianMixture,
    header: HgmHeader,
    quant: Quantisation = Quantisation(),
    *,
    overwrite: bool = False,
) -> int:
    """Write an ``.hgm`` file atomically; return its size in bytes."""
    data = encode(mix, header, quant)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return len(data)

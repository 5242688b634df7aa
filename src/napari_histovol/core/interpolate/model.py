"""A TensorFlow SavedModel with the InterpolAI / FILM signature, run in a spawned child process.

The model is called as ``model({'time': [[t]], 'x0': a[None], 'x1': b[None]})['image']`` with
float32 RGB inputs in [0, 1]. TensorFlow's bundled LLVM crashes in a process that also runs
napari's OpenGL canvas, so the model lives in its own process (multiprocessing "spawn") and
tiles go back and forth through a pipe. Large sections are cut into overlapping tiles (padded
to multiples of 64, as FILM needs) and put back with feathered (linear ramp) weights, so there
are no seams and memory stays bounded; gray and 16-bit sections are converted to what the
model expects and back.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import InputError

TILE = 512
OVERLAP = 64
PAD_MULTIPLE = 64


def _child_main(conn, model_dir: str) -> None:  # pragma: no cover - runs in the child
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf

        model = tf.saved_model.load(model_dir)
        conn.send(("ready", None))
    except Exception as e:  # noqa: BLE001
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            return
        x0, x1, t = msg
        try:
            out = model({"time": np.array([[t]], np.float32), "x0": x0[None], "x1": x1[None]})[
                "image"
            ]
            conn.send(("ok", np.asarray(out)[0].astype(np.float32)))
        except Exception as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"))


class ModelRunner:
    """A FILM-signature SavedModel in a child process; thread-safe, one call at a time."""

    def __init__(self, model_dir: str | os.PathLike) -> None:
        d = Path(model_dir).expanduser()
        if not (d / "saved_model.pb").is_file():
            raise InputError(f"'{d}' is not a TensorFlow SavedModel folder (no saved_model.pb).")
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child, str(d)), daemon=True)
        self._proc.start()
        self._lock = threading.Lock()
        status, info = self._conn.recv()
        if status != "ready":
            self.close()
            raise InputError(f"The model in '{d}' could not be loaded ({info}).")

    def __call__(self, x0: np.ndarray, x1: np.ndarray, t: float) -> np.ndarray:
        with self._lock:
            self._conn.send((x0, x1, float(t)))
            status, out = self._conn.recv()
        if status != "ok":
            raise InputError(
                f"The model failed: {out}. Is it an InterpolAI/FILM model "
                "(inputs 'time', 'x0', 'x1'; output 'image')?"
            )
        return out

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()

    def __enter__(self) -> ModelRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_model_space(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W[, 3]) any dtype -> float32 RGB in [0, 1]."""
    f = (img.astype(np.float32) - lo) / (hi - lo if hi > lo else 1.0)
    f = np.clip(f, 0, 1)
    return np.repeat(f[..., None], 3, axis=-1) if f.ndim == 2 else f


def from_model_space(out: np.ndarray, lo: float, hi: float, gray: bool) -> np.ndarray:
    f = out.mean(axis=-1) if gray else out
    return f * (hi - lo) + lo


def _ramp(n: int, overlap: int, start_inner: bool, end_inner: bool) -> np.ndarray:
    """1D blending weight of a tile: 0 over the outer quarter of an overlap that borders
    another tile (where the model saw padding), then rising linearly to 1; 1 at image edges."""
    w = np.ones(n, np.float32)
    if overlap <= 0:
        return w
    margin = max(1, overlap // 4)
    ramp = np.clip((np.arange(n, dtype=np.float32) - margin + 1) / (overlap - margin + 1), 0, 1)
    if start_inner:
        w = np.minimum(w, ramp)
    if end_inner:
        w = np.minimum(w, ramp[::-1])
    return w


def _starts(n: int, tile: int, step: int) -> list[int]:
    """Tile starts covering 0..n with tiles of ``tile`` every ``step`` (last one flush)."""
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile, step))
    return starts + [n - tile]


def run_tiled(
    runner, a: np.ndarray, b: np.ndarray, t: float, *, tile: int = TILE, overlap: int = OVERLAP
) -> np.ndarray:
    """The model's frame at t for sections of any size, tile by tile with feathered overlaps."""
    lo = float(min(a.min(), b.min())) if a.dtype.kind == "f" else 0.0
    hi = float(max(a.max(), b.max())) if a.dtype.kind == "f" else float(np.iinfo(a.dtype).max)
    gray = a.ndim == 2
    x0, x1 = to_model_space(a, lo, hi), to_model_space(b, lo, hi)
    h, w = x0.shape[:2]
    acc = np.zeros((h, w, 3), np.float32)
    wsum = np.zeros((h, w, 1), np.float32)
    overlap = min(overlap, tile // 2)
    step = tile - overlap
    ys = _starts(h, tile, step)
    xs = _starts(w, tile, step)
    for y0 in ys:
        for x0_ in xs:
            y1, x1_ = min(h, y0 + tile), min(w, x0_ + tile)
            ta, tb = x0[y0:y1, x0_:x1_], x1[y0:y1, x0_:x1_]
            th, tw = ta.shape[:2]
            ph, pw = (-th) % PAD_MULTIPLE, (-tw) % PAD_MULTIPLE
            pad = ((0, ph), (0, pw), (0, 0))
            out = runner(np.pad(ta, pad, mode="reflect"), np.pad(tb, pad, mode="reflect"), t)[
                :th, :tw
            ]
            wy = _ramp(th, overlap, y0 > 0, y1 < h)
            wx = _ramp(tw, overlap, x0_ > 0, x1_ < w)
            wgt = np.outer(wy, wx)[..., None]
            acc[y0:y1, x0_:x1_] += out * wgt
            wsum[y0:y1, x0_:x1_] += wgt
    return from_model_space(acc / wsum, lo, hi, gray)

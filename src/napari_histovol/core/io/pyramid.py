"""Multiscale pyramids and the block-wise streaming writer shared by all volume writers.

Levels halve y and x (sections are far apart in z, so z is never downsampled). A volume is
written block by block: each block is computed once from the lazy source, written to level
0, then halved in memory and written to every coarser level, so the source is read once and
memory stays bounded by (workers + 1) blocks, whatever the size of the volume.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import dask.array as da
import numpy as np

from ..progress import Progress, ProgressGenerator, cancellable_by

DEFAULT_BLOCK_BYTES = 96 * 2**20


def level_shapes(shape: tuple[int, ...], n_levels: int) -> list[tuple[int, ...]]:
    """Shapes of the pyramid levels of a (Z, Y, X[, C]) volume (y and x halved, rounded up)."""
    out = [tuple(shape)]
    for _ in range(1, n_levels):
        z, y, x, *c = out[-1]
        out.append((z, math.ceil(y / 2), math.ceil(x / 2), *c))
    return out


def default_levels(shape: tuple[int, ...], *, smallest: int = 256, max_levels: int = 8) -> int:
    """Number of levels until the larger of y and x is at most ``smallest`` pixels."""
    y, x = shape[1], shape[2]
    n = 1
    while max(y, x) > smallest and n < max_levels:
        y, x = math.ceil(y / 2), math.ceil(x / 2)
        n += 1
    return n


def halve(block: np.ndarray, *, labels: bool = False) -> np.ndarray:
    """2x2 mean over the y and x axes (1, 2) of a (Z, Y, X[, C]) block, rounded for integers;
    for a label volume (``labels``) every other pixel instead (a mean of ids is no id).

    Odd sizes are handled by repeating the last row/column, so that ``ceil(n/2)`` pixels
    come out and block-wise halving equals halving the whole image. uint8, uint16 and
    float32 planes go through OpenCV's area resampling (exactly the rounded 2x2 mean,
    ~50x faster than numpy); other types through numpy.
    """
    if labels:
        return np.ascontiguousarray(block[:, ::2, ::2])
    z, y, x = block.shape[:3]
    if y % 2 or x % 2:
        pad = [(0, 0), (0, y % 2), (0, x % 2)] + [(0, 0)] * (block.ndim - 3)
        block = np.pad(block, pad, mode="edge")
    y2, x2 = block.shape[1] // 2, block.shape[2] // 2
    channels = block.shape[3] if block.ndim == 4 else 1
    if block.dtype in (np.uint8, np.uint16, np.float32) and channels <= 4 and block.ndim <= 4:
        import cv2

        out = np.empty((z, y2, x2) + block.shape[3:], block.dtype)
        for i in range(z):
            out[i] = cv2.resize(block[i], (x2, y2), interpolation=cv2.INTER_AREA).reshape(
                out.shape[1:]
            )
        return out
    if block.dtype.kind in "ui" and block.dtype.itemsize <= 2:
        acc_t = np.int32 if block.dtype.kind == "i" else np.uint32
        rows = block[:, 0::2].astype(acc_t)
        rows += block[:, 1::2]
        s = rows[:, :, 0::2] + rows[:, :, 1::2]
        s += 2
        s //= 4
        return s.astype(block.dtype)
    r = block.reshape((z, y2, 2, x2, 2) + block.shape[3:])
    m = r.mean(axis=(2, 4), dtype=np.float64)
    return np.rint(m).astype(block.dtype) if block.dtype.kind in "ui" else m.astype(block.dtype)


@dataclass(frozen=True)
class Block:
    """One block of level 0: ``z``, ``y``, ``x`` are (start, stop) pairs."""

    z: tuple[int, int]
    y: tuple[int, int]
    x: tuple[int, int]

    def at_level(self, k: int, shape_k: tuple[int, ...]) -> tuple[slice, slice, slice]:
        f = 2**k
        ys = slice(self.y[0] // f, min(math.ceil(self.y[1] / f), shape_k[1]))
        xs = slice(self.x[0] // f, min(math.ceil(self.x[1] / f), shape_k[2]))
        return slice(*self.z), ys, xs


def plan_blocks(
    src: da.Array,
    *,
    n_levels: int,
    xy_chunk: int,
    z_chunk: int = 1,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> list[Block]:
    """Cut level 0 into blocks aligned to the output chunks at every level and to the source's
    z chunks (so that no source chunk is computed twice when it fits the memory budget)."""
    Z, Y, X = src.shape[:3]
    per_voxel = src.dtype.itemsize * (int(np.prod(src.shape[3:])) if src.ndim > 3 else 1)
    unit = xy_chunk * 2 ** (n_levels - 1)  # block xy sizes: multiples of this
    plane = Y * X * per_voxel
    # z: the source's chunk boundaries, each chunk cut further into slabs within the budget
    planes_per_block = max(1, block_bytes // max(plane, 1))
    step = max(z_chunk, planes_per_block // z_chunk * z_chunk)
    zs = []
    start = 0
    for c in src.chunks[0]:
        zs += [(s, min(s + step, start + c)) for s in range(start, start + c, step)]
        start += c
    depth = max(b - a for a, b in zs)
    if depth * plane <= block_bytes or (Y <= unit and X <= unit):
        tile_y, tile_x = Y, X
    else:  # planes too large for the budget: square tiles, multiples of the chunk unit
        side = int(math.sqrt(block_bytes / max(depth * per_voxel, 1))) // unit * unit
        tile_y = tile_x = max(unit, side)
        tile_y, tile_x = min(Y, tile_y), min(X, tile_x)
    blocks = []
    for z0, z1 in zs:
        for y0 in range(0, Y, tile_y):
            for x0 in range(0, X, tile_x):
                blocks.append(Block((z0, z1), (y0, min(Y, y0 + tile_y)), (x0, min(X, x0 + tile_x))))
    return blocks


Sink = Callable[[int, tuple[slice, slice, slice], np.ndarray], None]


def iter_write_pyramid(
    src: da.Array,
    sink: Sink,
    *,
    n_levels: int,
    xy_chunk: int,
    z_chunk: int = 1,
    workers: int = 2,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    skip: Callable[[Block], bool] | None = None,
    on_block_done: Callable[[Block], None] | None = None,
    client=None,
    labels: bool = False,
) -> ProgressGenerator[None]:
    """Compute ``src`` block by block and hand every pyramid level of each block to ``sink``.

    ``sink(level, (zslice, yslice, xslice), array)`` must be safe to call from several
    threads for disjoint, chunk-aligned regions. ``skip`` lets a resumed run pass over blocks
    that are already written (``labels``: levels of a label volume, by nearest pixel). With a
    ``dask.distributed`` ``client`` the blocks are computed
    on the cluster (a bounded window of them at a time) and written here. Yields
    :class:`Progress` per finished block.
    """
    shapes = level_shapes(src.shape, n_levels)
    blocks = plan_blocks(
        src, n_levels=n_levels, xy_chunk=xy_chunk, z_chunk=z_chunk, block_bytes=block_bytes
    )
    todo = [b for b in blocks if not (skip and skip(b))]
    total = len(blocks)
    done = total - len(todo)

    cancel = threading.Event()

    def work(b: Block) -> Block:
        with cancellable_by(cancel):
            arr = np.asarray(src[slice(*b.z), slice(*b.y), slice(*b.x)].compute(scheduler="sync"))
        for k in range(n_levels):
            if k:
                arr = halve(arr, labels=labels)
            sink(k, b.at_level(k, shapes[k]), arr)
        return b

    def store(b: Block, arr: np.ndarray) -> None:
        for k in range(n_levels):
            if k:
                arr = halve(arr, labels=labels)
            sink(k, b.at_level(k, shapes[k]), arr)

    yield Progress(done, total, "writing", stage="write")
    if client is not None:
        from distributed import as_completed

        window = max(2, 2 * len(client.scheduler_info().get("workers", {})) or 2)
        it_c = iter(todo)
        futures = {}
        for b in it_c:
            futures[client.compute(src[slice(*b.z), slice(*b.y), slice(*b.x)])] = b
            if len(futures) >= window:
                break
        ac = as_completed(list(futures))
        for fut in ac:
            b = futures.pop(fut)
            store(b, np.asarray(fut.result()))
            if on_block_done:
                on_block_done(b)
            done += 1
            nxt = next(it_c, None)
            if nxt is not None:
                f2 = client.compute(src[slice(*nxt.z), slice(*nxt.y), slice(*nxt.x)])
                futures[f2] = nxt
                ac.add(f2)
            yield Progress(done, total, f"block {done}/{total}", stage="write")
        return
    if workers <= 1:
        for b in todo:
            work(b)
            if on_block_done:
                on_block_done(b)
            done += 1
            yield Progress(done, total, f"block {done}/{total}", stage="write")
        return
    it: Iterator[Block] = iter(todo)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        pending = set()
        try:
            for b in it:
                pending.add(ex.submit(work, b))
                if len(pending) >= workers + 1:
                    break
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    b = f.result()
                    if on_block_done:
                        on_block_done(b)
                    done += 1
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.add(ex.submit(work, nxt))
                yield Progress(done, total, f"block {done}/{total}", stage="write")
        except BaseException:
            cancel.set()  # running blocks stop at their next step (Ctrl-C, Cancel, an error)
            raise
        finally:
            for f in pending:
                f.cancel()

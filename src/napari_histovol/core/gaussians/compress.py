"""Compress a volume into a Gaussian mixture and decompress it again.

Big volumes are fitted block by block. Blocks are coloured by the parity of their index along
each axis; blocks of one colour never touch, so they are fitted in parallel (dask), and colours
run one after another. Each block is fitted on its core plus ``block_overlap`` voxels of its
neighbours, with the Gaussians that earlier colours already placed nearby rendered as a fixed
context, and keeps the Gaussians whose centre lies in its core. A block thus fits what its
neighbours left over, across the seam, which is what blends the seams.

Degenerate volumes need no fit: a constant one (all zeros included) is stored as zero
Gaussians over its constant and decodes back exactly. Fitting needs torch (imported when a fit
starts); a cancel signal stops every fitting thread between two optimiser steps.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from ..cluster import dask_client
from ..errors import HistovolWarning, InputError
from ..progress import Progress, ProgressGenerator, drain
from ._torch import require_torch
from .cancel import AnySignal, CancelSignal, ClusterSignal, FitCancelled, check_cancel
from .config import FitConfig
from .hgm import HgmHeader, Quantisation, encode, quantise
from .mixture import GaussianMixture
from .normalise import Normalisation, estimate_normalisation, occupancy
from .render import render_region

if TYPE_CHECKING:
    from .fit import BlockFit

#: Bytes one Gaussian takes in a file after entropy coding, a prior for the first budget (the
#: final count is trimmed to the real size).
_BYTES_PER_GAUSSIAN_PRIOR = 7.8
#: Bytes of the header and checksum, a prior.
_HEADER_PRIOR = 500


@dataclass(frozen=True)
class Block:
    """One block of the fit: its core (owned Gaussians) and its fit region (core + overlap)."""

    index: tuple[int, int, int]
    core: tuple[slice, slice, slice]
    region: tuple[slice, slice, slice]

    @property
    def colour(self) -> tuple[int, int, int]:
        return tuple(i % 2 for i in self.index)

    @property
    def origin(self) -> tuple[int, int, int]:
        return tuple(s.start for s in self.region)


def plan_blocks(shape, block_size: int, overlap: int) -> list[Block]:
    """Split ``shape`` into blocks of about ``block_size`` voxels a side.

    A volume of at most ``block_size**3`` voxels is one block, whatever its shape.
    """
    if int(np.prod(shape)) <= block_size**3:
        counts = [1, 1, 1]
    else:
        counts = [max(1, math.ceil(n / block_size)) for n in shape]
    edges = [
        np.linspace(0, n, c + 1).round().astype(int) for n, c in zip(shape, counts, strict=True)
    ]
    blocks = []
    for index in itertools.product(*[range(c) for c in counts]):
        core, region = [], []
        for ax, i in enumerate(index):
            a, b = int(edges[ax][i]), int(edges[ax][i + 1])
            core.append(slice(a, b))
            region.append(slice(max(0, a - overlap), min(shape[ax], b + overlap)))
        blocks.append(Block(tuple(index), tuple(core), tuple(region)))
    return blocks


@dataclass
class CompressResult:
    """A fitted mixture, its file bytes and how it was made."""

    mixture: GaussianMixture  # as stored (quantised)
    header: HgmHeader
    data: bytes
    config: FitConfig
    seconds: float
    history: list[dict] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.header.raw_bytes / len(self.data)

    @property
    def bits_per_voxel(self) -> float:
        return 8 * len(self.data) / float(np.prod(self.header.shape))

    @property
    def budget_note(self) -> str | None:
        """A sentence when the file misses the budget asked by more than a fifth: fewer
        Gaussians than asked, or a file well under the ratio's size (a helper asked a ratio of
        200 and got 320, and a count of 1500 and got 1050, without a word); None otherwise."""
        cfg, n = self.config, len(self.mixture)
        if cfg.gaussians is not None and n < 0.8 * cfg.gaussians:
            return (
                f"the fit kept {n} of the {cfg.gaussians} Gaussians asked (the others added "
                "nothing where they were placed); ask more for more detail"
            )
        if cfg.ratio is not None and self.ratio > 1.2 * cfg.ratio:
            return (
                f"the file came out smaller than a ratio of {cfg.ratio:g} allows (ratio "
                f"{self.ratio:.0f}): its {n} Gaussians were planned at an estimated size and "
                "packed smaller; ask a lower ratio, or a number of Gaussians, for more detail"
            )
        return None


def _target_count(cfg: FitConfig, raw_bytes: int, voxels: int) -> int:
    """Gaussians to fit for the budget (never more than the volume has voxels)."""
    if cfg.gaussians is not None:
        return min(int(cfg.gaussians), voxels)
    budget = raw_bytes / cfg.ratio - _HEADER_PRIOR
    if budget < 4 * _BYTES_PER_GAUSSIAN_PRIOR:
        best = raw_bytes / (_HEADER_PRIOR + 4 * _BYTES_PER_GAUSSIAN_PRIOR)
        if best <= 1.5:
            raise InputError(
                f"The volume holds only {raw_bytes} bytes, less than a Gaussian-mixture file "
                "needs, so no compression ratio can be met; give a number of Gaussians instead.",
                option="gaussians",
            )
        raise InputError(
            f"A ratio of {cfg.ratio:g} leaves {raw_bytes / cfg.ratio:.0f} bytes for a "
            f"{raw_bytes}-byte volume, too few for any Gaussian; choose a ratio of at most "
            f"{math.floor(best)}.",
            option="ratio",
        )
    return min(voxels, max(1, int(budget / _BYTES_PER_GAUSSIAN_PRIOR)))


def _warn_if_ratio_missed(cfg: FitConfig, header: HgmHeader, data: bytes) -> None:
    """Say so when the file is larger than the ratio asked (its header alone, a constant
    volume's whole file, can be more than a small volume's share)."""
    if cfg.ratio is not None and header.raw_bytes / len(data) < cfg.ratio:
        warnings.warn(
            f"The file takes {len(data)} bytes (ratio {header.raw_bytes / len(data):.1f}), more "
            f"than a ratio of {cfg.ratio:g} allows: the volume is too small for that ratio.",
            HistovolWarning,
            stacklevel=2,
        )


def _importance(mix: GaussianMixture) -> np.ndarray:
    """Order in which to drop Gaussians: by energy (amplitude^2 x volume), computed as its
    square root so that amplitudes near the float64 limit do not overflow."""
    return np.abs(mix.amplitudes) * np.sqrt(np.prod(mix.scales, axis=1))


def _fit_one(
    volume,
    block: Block,
    n: int,
    cfg: FitConfig,
    norm: Normalisation,
    context,
    budget,
    report,
    cancel: CancelSignal | None = None,
) -> BlockFit:
    """Fit one block (a dask task): its region normalised, earlier Gaussians as context."""
    check_cancel(cancel)
    from .fit import iter_fit_block  # torch, imported where a fit starts

    x = norm.forward(np.asarray(volume[block.region]))
    ctx = None
    if context is not None and len(context):
        shape = x.shape
        ctx_vals = render_region(context, shape, start=block.origin)
        ctx = ((ctx_vals - context.background) / norm.value_range).astype(np.float32)
    gen = iter_fit_block(
        x,
        n,
        cfg,
        norm,
        context=ctx,
        time_budget=budget,
        label=f"block {block.index}",
        cancel=cancel,
    )
    return drain(gen, report)


def _keep_zone(blocks: list[Block], rank: list[int], i: int, shape) -> np.ndarray:
    """Voxels of block ``i``'s region where it keeps Gaussians: its core, and the cores of
    blocks fitted before it (their residual is what it fitted there)."""
    b = blocks[i]
    zone = np.zeros(tuple(s.stop - s.start for s in b.region), bool)
    for j, other in enumerate(blocks):
        if j != i and rank[j] >= rank[i]:
            continue
        inter = []
        for r, c in zip(b.region, other.core, strict=True):
            lo, hi = max(r.start, c.start), min(r.stop, c.stop)
            if lo >= hi:
                break
            inter.append(slice(lo - r.start, hi - r.start))
        else:
            zone[tuple(inter)] = True
    return zone


def _owned(fit: BlockFit, block: Block, zone: np.ndarray, norm: Normalisation) -> GaussianMixture:
    """The Gaussians of a block fit whose centre lies in its keep zone."""
    mix = fit.mixture(norm, block.origin)
    local = np.round(mix.centres - np.asarray(block.origin)).astype(int)
    local = np.clip(local, 0, np.asarray(zone.shape) - 1)
    return mix.subset(zone[tuple(local.T)])


def _check_volume(volume) -> np.dtype:
    """Refuse what cannot be compressed, from the shape and type alone (nothing read yet)."""
    shape = tuple(getattr(volume, "shape", ()))
    if getattr(volume, "ndim", 0) != 3:
        raise InputError(
            f"Gaussian-mixture compression takes a single-channel 3D volume, not shape "
            f"{shape or None}."
        )
    if 0 in shape:
        raise InputError(f"The volume {shape} is empty: it has no voxels to compress.")
    dtype = np.dtype(volume.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputError(f"Cannot compress a volume of type {dtype}; give numbers.")
    return dtype


def _check_values(arr: np.ndarray) -> tuple[float, float]:
    """The volume's minimum and maximum; refuse NaN, infinities and ranges beyond float64."""
    if np.issubdtype(arr.dtype, np.floating):
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(
                f"The volume holds {bad} NaN or infinite value{'s' if bad > 1 else ''}; "
                "replace them with numbers (for example the background) before compressing."
            )
    vmin, vmax = float(arr.min()), float(arr.max())
    if not math.isfinite(vmax - vmin):
        raise InputError(
            f"The volume's values span {vmin:g} to {vmax:g}, beyond what can be encoded; "
            "rescale them first."
        )
    return vmin, vmax


def _quantisation(config: FitConfig) -> Quantisation:
    return Quantisation(
        position_step=config.position_step,
        scale_min=config.min_sigma,
        scale_max=config.max_sigma,
        scale_bits=config.scale_bits,
        rotation_bits=config.rotation_bits,
        amplitude_bits=config.amplitude_bits,
    )


def iter_compress(
    volume,
    config: FitConfig,
    *,
    voxel_size=(1.0, 1.0, 1.0),
    unit: str = "pixel",
    planes: dict | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    cancel: CancelSignal | None = None,
) -> ProgressGenerator[CompressResult]:
    """Fit a Gaussian mixture to a 3D volume and encode it; yields progress.

    A constant volume (all zeros included) needs no Gaussian: it is stored as zero Gaussians
    over its constant, decodes back exactly, and needs no torch. Any other volume is fitted
    (torch), also a tiny one or a single plane.

    Parameters
    ----------
    volume
        A ``(Z, Y, X)`` numpy or dask array, integer or float, finite, at least one voxel.
    config
        Budget and fit settings (see :class:`FitConfig`).
    voxel_size, unit
        Physical voxel size stored in the file.
    planes
        The volume's planes as :func:`.decompress.plane_record` describes them (z numbers,
        generated planes, which sizes are known), stored in the file so that the decoded
        volume keeps them; None: planes numbered from 0, all measured.
    workers
        Blocks fitted at the same time (default: the number of cores, at most the blocks).
    scheduler
        A ``dask.distributed`` scheduler address or Client to fit the blocks on.
    cancel
        A cancel signal (a :class:`threading.Event`): once set, every fitting thread stops
        after the optimiser step it is in and this generator raises
        :class:`.cancel.FitCancelled`.

    Raises
    ------
    InputError
        For volumes that cannot be compressed (not 3D, empty, not numbers, NaN or infinite
        values), budgets no file can meet, and a missing torch when a fit is needed.
    """
    t0 = time.perf_counter()
    dtype = _check_volume(volume)
    yield Progress(0, 1, "reading the volume", "fit")
    arr = np.asarray(volume)
    vmin, vmax = _check_values(arr)
    check_cancel(cancel)
    shape = tuple(int(s) for s in arr.shape)
    voxels = int(np.prod(shape))
    raw_bytes = voxels * dtype.itemsize
    quant = _quantisation(config)

    def header(blocks: list[Block]) -> HgmHeader:
        return HgmHeader(
            shape,
            dtype.name,
            (vmin, vmax),
            tuple(float(v) for v in voxel_size),
            unit,
            {
                "size": config.block_size,
                "overlap": config.block_overlap,
                "grid": [len({b.index[ax] for b in blocks}) for ax in range(3)],
            },
            {"planes": planes} if planes else {},
        )

    if vmin == vmax:
        # Nothing but the background: zero Gaussians over the constant, exact on decoding.
        empty = GaussianMixture.empty(vmin)
        head = header(plan_blocks(shape, config.block_size, config.block_overlap))
        yield Progress(1, 1, "constant volume: no Gaussians needed", "fit")
        data = encode(empty, head, quant)
        _warn_if_ratio_missed(config, head, data)
        stored, _ = quantise(empty, shape, quant)
        return CompressResult(stored, head, data, config, time.perf_counter() - t0, [])
    torch = require_torch()
    norm = estimate_normalisation(arr)
    n_total = _target_count(config, raw_bytes, voxels)
    blocks = plan_blocks(arr.shape, config.block_size, config.block_overlap)
    colours = sorted({b.colour for b in blocks})
    rank = [colours.index(b.colour) for b in blocks]
    zones = [_keep_zone(blocks, rank, i, shape) for i in range(len(blocks))]
    # Budget per block from its share of occupied voxels in its keep zone; it fits more, in
    # proportion, where its region reaches into blocks still to come (those are dropped).
    kept_occ, fit_factor = [], []
    for b, zone in zip(blocks, zones, strict=True):
        check_cancel(cancel)
        occ = occupancy(norm.forward(arr[b.region]), norm, config.occupancy_threshold)
        k = float(occ[zone].sum()) + 1.0
        kept_occ.append(k)
        fit_factor.append((float(occ.sum()) + 1.0) / k)
    share = np.asarray(kept_occ) / np.sum(kept_occ)
    counts = np.maximum(1, np.round(share * n_total * np.asarray(fit_factor))).astype(int)
    n_workers = max(1, min(workers or torch.get_num_threads(), len(blocks)))
    client = dask_client(scheduler)
    placed: list[GaussianMixture] = []
    history: list[dict] = []
    done = 0
    for colour in colours:
        check_cancel(cancel)
        members = [i for i, b in enumerate(blocks) if b.colour == colour]
        context = GaussianMixture.concatenate(placed, norm.background) if placed else None
        budget = None
        if config.time_budget is not None:
            # Share the time left by the Gaussians still to fit; parallel blocks share a slot.
            left = config.time_budget - (time.perf_counter() - t0)
            later = [k for k, b in enumerate(blocks) if b.colour >= colour]
            share = counts[members].sum() / counts[later].sum()
            budget = max(1.0, left * share * min(n_workers, len(members)) / len(members))
        fits = yield from _run_parallel(
            arr,
            [blocks[i] for i in members],
            [int(counts[i]) for i in members],
            config,
            norm,
            context,
            budget,
            n_workers,
            client,
            (done, len(blocks)),
            cancel,
        )
        for i, fit in zip(members, fits, strict=True):
            placed.append(_owned(fit, blocks[i], zones[i], norm))
            history.extend({"block": list(blocks[i].index), **h} for h in fit.history)
        done += len(members)
    mix = GaussianMixture.concatenate(placed, norm.background)
    head = header(blocks)
    yield Progress(len(blocks), len(blocks), "encoding", "fit")
    # Meet the budget exactly: drop the least energetic Gaussians (overlapping keep zones of
    # corner blocks can place a few more than asked, and the bytes per Gaussian were a guess).
    order = np.argsort(-_importance(mix), kind="stable")
    if config.gaussians is not None:
        order = order[: config.gaussians]
    data = encode(mix.subset(np.sort(order)), head, quant)
    if config.ratio is not None:
        target = head.raw_bytes / config.ratio
        while len(data) > target and len(order) > 1:
            check_cancel(cancel)
            per = len(data) / len(order)
            drop = max(1, int(math.ceil((len(data) - target) / per)))
            order = order[: max(1, len(order) - drop)]
            data = encode(mix.subset(np.sort(order)), head, quant)
    mix = mix.subset(np.sort(order))
    _warn_if_ratio_missed(config, head, data)
    stored, _ = quantise(mix, head.shape, quant)
    return CompressResult(stored, head, data, config, time.perf_counter() - t0, history)


def _run_parallel(
    arr, blocks, counts, cfg, norm, context, budget, n_workers, client, position, cancel=None
):
    """Fit blocks of one colour in parallel through dask, relaying their progress.

    Fits run on a helper thread (local dask threads or a distributed cluster); their per-step
    progress comes back through a queue. Every local fit checks a stop signal between two
    optimiser steps: it is set by ``cancel``, by closing this generator, and by a failed
    block (its siblings stop too). The helper thread returns only when no local fit is still
    running, so once this generator has ended nothing computes on.
    """
    torch = require_torch()
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    signal = AnySignal(stop, cancel)
    done_blocks, total_blocks = position
    steps: dict[str, int] = {}
    running = [0]
    idle = threading.Condition()

    def tracked(*args):
        with idle:
            running[0] += 1
        try:
            return _fit_one(*args, signal)
        finally:
            with idle:
                running[0] -= 1
                idle.notify_all()

    out: dict = {}

    def run_local() -> list:
        tasks = [
            dask.delayed(tracked, pure=False)(arr, b, n, cfg, norm, context, budget, q.put)
            for b, n in zip(blocks, counts, strict=True)
        ]
        if len(tasks) == 1:
            return [tasks[0].compute(scheduler="sync")]
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // min(n_workers, len(tasks))))
        try:
            return list(dask.compute(*tasks, scheduler="threads", num_workers=n_workers))
        finally:
            torch.set_num_threads(threads)

    def run_cluster() -> list:
        # Remote fits check a cluster-wide event (a local one cannot travel); cancelling sets
        # it, so running fits stop at their next check, and cancels the futures not started.
        from distributed import Event

        name = f"histovol-cancel-{uuid.uuid4().hex}"
        event = Event(name, client=client)
        remote = ClusterSignal(name)
        tasks = [
            dask.delayed(_fit_one, pure=False)(arr, b, n, cfg, norm, context, budget, None, remote)
            for b, n in zip(blocks, counts, strict=True)
        ]
        futures = client.compute(tasks)
        try:
            while not all(f.done() for f in futures):
                if signal.is_set():
                    raise FitCancelled
                time.sleep(0.2)
            return client.gather(futures)
        except BaseException:
            event.set()
            client.cancel(futures)
            raise

    def run() -> None:
        try:
            out["fits"] = run_cluster() if client is not None else run_local()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc
            stop.set()  # the other blocks of this colour stop at their next step
        finally:
            with idle:
                idle.wait_for(lambda: running[0] == 0)
            q.put(None)

    worker = threading.Thread(target=run, name="histovol-gaussian-fit", daemon=True)
    worker.start()
    total = total_blocks * cfg.iterations
    try:
        while True:
            p = q.get()
            if p is None:
                break
            label = p.message.split(":")[0]
            steps[label] = p.done
            done = done_blocks * cfg.iterations + sum(steps.values())
            yield Progress(min(done, total), total, p.message, "fit")
    finally:
        stop.set()
        worker.join()
    if "error" in out:
        raise out["error"]
    return out["fits"]


def fit_report(result: CompressResult, original, decoded=None) -> dict:
    """Figures of a fit: size, ratio, bits per voxel, PSNR (whole and foreground), SSIM, time.

    ``decoded`` is the decompressed volume when the caller has it already.
    """
    from .. import metrics
    from .decompress import decompress_array

    original = np.asarray(original)
    if decoded is None:
        decoded = decompress_array(result.mixture, result.header).compute()
    lo, hi = result.header.value_range
    if hi - lo > 1e150:
        # PSNR and SSIM are relative to the value range; measured in units of it, values
        # near the float64 limit do not overflow when squared.
        original = (original.astype(np.float64) - lo) / (hi - lo)
        decoded = (np.asarray(decoded, dtype=np.float64) - lo) / (hi - lo)
    fg = None
    if original.min() < original.max():
        with warnings.catch_warnings():
            # a tiny volume (2 x 3 x 4) "looks like RGB" to scikit-image's threshold
            warnings.simplefilter("ignore", UserWarning)
            fg = metrics.foreground(original)
        if not fg.any():
            fg = None  # no foreground to single out: measure the whole volume
    return {
        "shape": list(result.header.shape),
        "dtype": result.header.dtype,
        "gaussians": len(result.mixture),
        "file_bytes": len(result.data),
        "ratio": result.ratio,
        "bits_per_voxel": result.bits_per_voxel,
        "psnr_db": metrics.psnr(original, decoded),
        "psnr_foreground_db": metrics.psnr(original, decoded, fg),
        "ssim": metrics.ssim(original, decoded),
        "fit_seconds": result.seconds,
    }


def compress(volume, config: FitConfig, **kwargs) -> CompressResult:
    """Fit and encode (see :func:`iter_compress`)."""
    return drain(iter_compress(volume, config, **kwargs))

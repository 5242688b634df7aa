"""The self-supervised axial network and its training on the volume's own x-y planes.

The network refines a cubic-spline interpolation along z: on a 2D slice through z (rows along
z on the model grid, columns along x or y) it takes the spline and, as a second channel, how
far each row lies from a measured one, and adds a learned residual. It is trained on x-y
planes where a lateral axis stands in for z: rows ``row_step`` pixels apart are the truth,
every ``model_factor``-th of them is kept, the spline through the kept rows is the input
(Weigert et al.'s isotropic restoration idea, trained here on the stack itself, within a time
budget, with no pretrained weights). Planes held back from training give an honest
validation PSNR, and the model kept is the one that scored best on them.

torch is imported here only: nothing else in the package needs it to read or interpolate.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..metrics import psnr
from ..progress import Progress, ProgressGenerator
from .geometry import AxialGeometry, gap_weight, linear_matrix, spline_matrix

WIDTH = 32
DEPTH = 8
PATCH_COLS = 64
PATCH_INTERVALS = 8  # kept rows per training patch, less one
BATCH = 16
LEARNING_RATE = 1e-3
#: Applying the model is budgeted at this many times one timed network pass per pixel (the
#: pass alone; the spline, the orientations' averaging and the writing come on top: 1.25
#: overran a 150 s budget by up to 8 s in axial_bench), plus SAFETY_S.
APPLY_MARGIN = 1.6
SAFETY_S = 2.0
VALIDATE_EVERY_S = 3.0


class AxialNet(nn.Module):
    """A plain residual CNN over (spline, distance-to-measured) 2-channel slices."""

    def __init__(self, width: int = WIDTH, depth: int = DEPTH) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(2, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        with torch.no_grad():  # starts close to the spline itself, but not on a plateau
            layers[-1].weight.mul_(0.1)
            layers[-1].bias.zero_()
        self.width, self.depth = width, depth

    @property
    def radius(self) -> int:
        """Receptive-field radius in pixels (block overlaps must be at least this)."""
        return self.depth

    def forward(self, spline: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
        return spline + self.body(torch.cat([spline, gap], dim=1))


@dataclass
class AxialModel:
    """A trained axial network with what is needed to apply it."""

    net: AxialNet
    lo: float
    hi: float
    model_factor: float
    row_step: float
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    orientations: tuple[str, ...] = ("zy", "zx")
    #: seconds that applying the model to the whole volume was estimated to take when its
    #: training time was set (not saved with the weights)
    apply_estimate_s: float = 0.0

    def state(self) -> dict:
        buf = io.BytesIO()
        torch.save(self.net.state_dict(), buf)
        return {
            "weights": buf.getvalue(),
            "width": self.net.width,
            "depth": self.net.depth,
            "lo": self.lo,
            "hi": self.hi,
            "model_factor": self.model_factor,
            "row_step": self.row_step,
            "history": self.history,
            "steps": self.steps,
            "train_seconds": self.train_seconds,
            "orientations": list(self.orientations),
        }

    @classmethod
    def from_state(cls, state: dict) -> AxialModel:
        net = AxialNet(state["width"], state["depth"])
        net.load_state_dict(torch.load(io.BytesIO(state["weights"]), weights_only=True))
        net.eval()
        return cls(
            net,
            state["lo"],
            state["hi"],
            state["model_factor"],
            state["row_step"],
            list(state.get("history", [])),
            int(state.get("steps", 0)),
            float(state.get("train_seconds", 0.0)),
            tuple(state.get("orientations", ("zy", "zx"))),
        )

    @property
    def validation_psnr(self) -> float | None:
        """PSNR (dB) of the kept weights on the held-back planes (None: not trained)."""
        return self._summary("best_val_psnr")

    @property
    def spline_psnr(self) -> float | None:
        """PSNR (dB) of the cubic spline alone on the same held-back planes."""
        return self._summary("spline_psnr")

    def describe(self) -> str:
        """One line on what was learned, for a user: the steps, the time and the held-back
        planes' PSNR against the cubic spline's, or why nothing was trained."""
        if self.validation_psnr is None:
            # a summary read "0 steps in 0 s, held-back validation None dB" (a helper's chain)
            return (
                "no model trained: the sections are no farther apart than the pixels, so the "
                "cubic spline fills z (and --steps has nothing to train)"
            )
        return (
            f"model: {self.steps} steps in {self.train_seconds:.0f} s, held-back planes "
            f"{self.validation_psnr:.2f} dB against {self.spline_psnr:.2f} dB for the cubic spline"
        )

    def _summary(self, key: str) -> float | None:
        # training ends its history with {"best_val_psnr", "spline_psnr"}
        return next((h[key] for h in reversed(self.history) if key in h), None)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) - self.lo) / np.float32(self.hi - self.lo)

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        return x * np.float32(self.hi - self.lo) + np.float32(self.lo)


def spline_only_model(geometry: AxialGeometry) -> AxialModel:
    """A model that adds nothing to the cubic spline (its last layer is zero)."""
    net = AxialNet()
    with torch.no_grad():
        net.body[-1].weight.zero_()
    net.eval()
    return AxialModel(
        net, 0.0, 1.0, geometry.model_factor, geometry.row_step, orientations=geometry.orientations
    )


def pick_device(device: str | None = None) -> torch.device:
    """The torch device to use: the one asked for, else CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class PatchSampler:
    """Training patches cut from x-y planes, a lateral axis standing in for z.

    Each patch is a window of the model grid along the stand-in axis that starts on a
    measured section; the rows kept are where the volume's own sections lie in such a window
    (every ``model_factor``-th row for an evenly numbered stack; missing sections missing), so
    the network learns the very sampling it will undo.

    Parameters
    ----------
    planes
        Normalised single-channel planes (each (Y, X) float32).
    geometry
        Gives the model grid (``row_step``, ``model_factor``), the sections' positions and
        which orientations to learn.
    rng
        The random generator (seeded for reproducibility).
    """

    def __init__(self, planes: list[np.ndarray], geometry: AxialGeometry, rng) -> None:
        self.rng = rng
        self.orient = geometry.orientations
        f, step = geometry.model_factor, geometry.row_step
        self.f, self.step = f, step
        sides = [min(_stand_in_len(p, o) for o in self.orient) for p in planes]
        longest = max(sides)
        rows_fit = int(np.floor((longest - 2) / step)) + 1  # model rows along the stand-in axis
        pos = np.asarray(geometry.positions) * f  # sections on the model grid
        self.n_rows = int(min(PATCH_INTERVALS * f + 1, rows_fit, np.floor(pos[-1]) + 1))
        # windows start on a section and must hold another one
        self.starts = [p for p in pos if np.any((pos > p) & (pos <= p + self.n_rows - 1))]
        if self.n_rows < 3 or not self.starts:
            from ..errors import InputError

            raise InputError(
                f"The sections ({longest} px along the axis that stands in for z) are too small "
                f"to learn from at {f:g} planes per section spacing; use a smaller factor.",
                option="factor",
            )
        self.pos = pos
        self.strip = int(np.ceil((self.n_rows - 1) * step)) + 2
        self.planes = [p for p, s in zip(planes, sides, strict=True) if s >= self.strip]
        rows = np.arange(self.strip, dtype=float)
        self.targets = np.arange(self.n_rows, dtype=float)
        self.take_targets = linear_matrix(rows, self.targets * step).astype(np.float32)
        self._patterns: dict = {}

    def pattern(self, start: float):
        """(spline matrix, gap channel, loss mask) for the window starting at section ``start``."""
        rel = tuple(
            np.round(
                self.pos[(self.pos >= start) & (self.pos <= start + self.n_rows - 1)] - start, 6
            )
        )
        if rel not in self._patterns:
            rows = np.arange(self.strip, dtype=float)
            s = np.asarray(rel)
            spline = spline_matrix(s, self.targets) @ linear_matrix(rows, s * self.step)
            gap = gap_weight(s, self.targets, unit=self.f)
            inside = (self.targets >= s[0]) & (self.targets <= s[-1]) & (gap > 0)
            self._patterns[rel] = (spline.astype(np.float32), gap.astype(np.float32), inside)
        return self._patterns[rel]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(spline, gap, truth, mask), each (size, 1, rows, cols) float32."""
        cols = min(PATCH_COLS, min(_cols_len(p, o) for p in self.planes for o in self.orient))
        shape = (size, 1, self.n_rows, cols)
        spline, gap, truth, mask = (np.empty(shape, np.float32) for _ in range(4))
        for k in range(size):
            p = self.planes[self.rng.integers(len(self.planes))]
            o = self.orient[self.rng.integers(len(self.orient))]
            img = p.T if o == "zy" else p  # rows along the stand-in axis
            r0 = self.rng.integers(img.shape[0] - self.strip + 1)
            c0 = self.rng.integers(img.shape[1] - cols + 1)
            s = img[r0 : r0 + self.strip, c0 : c0 + cols]
            if self.rng.random() < 0.5:
                s = s[::-1]
            if self.rng.random() < 0.5:
                s = s[:, ::-1]
            m_spline, m_gap, m_inside = self.pattern(
                self.starts[self.rng.integers(len(self.starts))]
            )
            spline[k, 0] = m_spline @ s
            truth[k, 0] = self.take_targets @ s
            gap[k, 0] = m_gap[:, None]
            mask[k, 0] = m_inside[:, None]
        return spline, gap, truth, mask


def _stand_in_len(p: np.ndarray, orientation: str) -> int:
    return p.shape[1] if orientation == "zy" else p.shape[0]


def _cols_len(p: np.ndarray, orientation: str) -> int:
    return p.shape[0] if orientation == "zy" else p.shape[1]


def iter_train(
    train_planes: list[np.ndarray],
    val_planes: list[np.ndarray],
    geometry: AxialGeometry,
    *,
    lo: float,
    hi: float,
    peak: float = 1.0,
    seconds: float,
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    should_stop=None,
) -> ProgressGenerator[AxialModel]:
    """Train the axial network on normalised planes, for ``seconds`` or exactly ``steps``.

    Yields :class:`Progress` with the loss and the validation PSNR (model, and the spline
    alone) in the message; returns the model that scored best on the held-back planes. A
    fixed ``seed`` and ``steps`` give the same weights on the same device. ``should_stop``
    (a callable) ends training early, keeping the best model so far.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = pick_device(device)
    train = PatchSampler(train_planes, geometry, rng)
    val = PatchSampler(val_planes or train_planes, geometry, np.random.default_rng(seed + 1))
    vs, vg, vt, vm = val.batch(4 * BATCH)
    vmask = vm > 0

    def val_psnr_of(pred: np.ndarray) -> float:  # no row to score: nothing to compare
        return psnr(vt, pred, vmask, peak=peak) if vmask.any() else float("inf")

    spline_psnr = val_psnr_of(vs)
    net = AxialNet().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    model = AxialModel(
        net, lo, hi, geometry.model_factor, geometry.row_step, orientations=geometry.orientations
    )
    best_psnr, best_state = spline_psnr, {k: v.clone() for k, v in net.state_dict().items()}
    vs_t, vg_t = torch.from_numpy(vs).to(dev), torch.from_numpy(vg).to(dev)

    def validate() -> float:
        net.eval()
        with torch.no_grad():
            out = net(vs_t, vg_t).cpu().numpy()
        net.train()
        return val_psnr_of(out)

    total = steps if steps else max(1, int(seconds))
    t0 = time.perf_counter()
    last_val = t0
    step = 0
    val_psnr = spline_psnr
    yield Progress(0, total, f"training; spline alone {spline_psnr:.2f} dB", stage="train")
    while True:
        elapsed = time.perf_counter() - t0
        if steps is not None and step >= steps:
            break
        if steps is None and elapsed >= seconds:
            break
        if should_stop is not None and should_stop():
            break
        frac = step / steps if steps else elapsed / max(seconds, 1e-9)
        for g in opt.param_groups:
            g["lr"] = LEARNING_RATE * 0.5 * (1 + np.cos(np.pi * min(1.0, frac)))
        s, g, t, mask = (torch.from_numpy(x).to(dev) for x in train.batch(BATCH))
        loss = (((net(s, g) - t) ** 2) * mask).sum() / mask.sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        now = time.perf_counter()
        last = steps is not None and step >= steps
        if now - last_val >= VALIDATE_EVERY_S or last:
            last_val = now
            val_psnr = validate()
            if val_psnr > best_psnr:
                best_psnr = val_psnr
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            model.history.append(
                {
                    "step": step,
                    "seconds": round(now - t0, 2),
                    "loss": float(loss.item()),
                    "val_psnr": round(val_psnr, 3),
                    "spline_psnr": round(spline_psnr, 3),
                }
            )
            done = step if steps else int(now - t0)
            yield Progress(
                min(done, total),
                total,
                f"step {step}: loss {loss.item():.2e}, validation {val_psnr:.2f} dB "
                f"(spline {spline_psnr:.2f} dB)",
                stage="train",
            )
    net.load_state_dict(best_state)
    net.eval()
    model.net = net.cpu() if dev.type != "cpu" else net
    model.steps = step
    model.train_seconds = time.perf_counter() - t0
    model.history.append(
        {"best_val_psnr": round(best_psnr, 3), "spline_psnr": round(spline_psnr, 3)}
    )
    return model


#: Timed passes behind the cost estimate (their median): one pass on a machine shared with
#: other work once read 6 times slow, and training got 7 steps of a 60 s budget
TIMED_PASSES = 5


def forward_seconds_per_pixel(
    device: str | None = None, *, rows: int = 256, length: int = 256, pixels: int = 65536
) -> float:
    """Measured cost of applying a fresh network, in seconds per output pixel (the median of
    :data:`TIMED_PASSES` passes after a warm-up pass), on a batch shaped as the reconstruction
    runs it: as many ``rows`` x ``length`` slices as make up ``pixels``. One square slice per
    pass cost 2.8 times what the batched slices of the reconstruction did, so training was
    cut to a few steps of a budget that would have held hundreds (a helper's journey)."""
    dev = pick_device(device)
    net = AxialNet().to(dev).eval()
    length = max(1, int(length))
    rows = max(1, min(int(rows), max(16, int(pixels) // length)))  # a pass of about `pixels`
    batch = max(1, int(pixels) // (rows * length))
    x = torch.zeros((batch, 1, rows, length), device=dev)
    times = []
    with torch.no_grad():
        net(x, x)
        for _ in range(TIMED_PASSES):
            t0 = time.perf_counter()
            net(x, x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) / (batch * rows * length)

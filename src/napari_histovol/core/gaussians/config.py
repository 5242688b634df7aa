"""Settings of a Gaussian-mixture fit, kept in a YAML file as the seed pipeline did.

``FitConfig.from_yaml(path, **overrides)`` reads a file and lets arguments win;
``to_yaml`` writes the settings actually used beside the result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from ..errors import InputError
from ..io.text import read_text


@dataclass(frozen=True)
class FitConfig:
    """Everything that steers a fit. Budgets: give ``ratio`` or ``gaussians`` (not both).

    Attributes
    ----------
    ratio
        Target compression ratio: raw bytes of the volume / bytes of the ``.hgm`` file.
    gaussians
        Target number of Gaussians (used when ``ratio`` is None).
    time_budget
        Stop optimising after this many seconds (None: run all iterations).
    iterations
        Optimiser steps of the main fit.
    densify_every, densify_until
        Clone / split / prune every so many steps, up to this fraction of the iterations.
    coarse_fraction
        Share of the iterations that evaluate the loss on a random half-resolution lattice
        (an unbiased estimate at an eighth of the cost); the rest use every voxel.
    init_fraction
        Share of the Gaussian budget placed at initialisation; densification grows the rest.
    init_sigma
        Initial sigma as a fraction of the mean distance to the three nearest Gaussians.
    lr_position, lr_scale, lr_rotation, lr_amplitude
        Adam learning rates (voxels, log-voxels, quaternion units, log-amplitude).
    l1_weight, l2_weight, ssim_weight
        Loss = l1 * mean(w |e|) + l2 * mean(w e^2) / mean(e_0^2) + ssim * (1 - SSIM).
    edge_weight
        Per-voxel weight ``w = 1 + edge_weight * |grad| / mean |grad|`` (edge-aware loss).
    min_sigma, max_sigma
        Allowed standard deviations in voxels.
    prune_amplitude
        Gaussians fainter than this fraction of the value range are pruned.
    max_anisotropy
        Gaussians whose largest / smallest sigma exceeds this are pruned as degenerate.
    occupancy_threshold
        Voxels whose smoothed value exceeds background + this x noise are occupied; only those
        receive Gaussians.
    block_size, block_overlap
        Volumes with more voxels than ``block_size**3`` are fitted in blocks of about this edge
        length, each seeing ``block_overlap`` voxels of its neighbours.
    position_step, amplitude_bits, scale_bits, rotation_bits
        Quantisation of the stored parameters (voxels; bits per value).
    seed
        Random seed (initial sampling).
    """

    ratio: float | None = None
    gaussians: int | None = None
    time_budget: float | None = None
    iterations: int = 300
    densify_every: int = 40
    densify_until: float = 0.6
    coarse_fraction: float = 0.9
    init_fraction: float = 0.7
    init_sigma: float = 0.45
    lr_position: float = 0.05
    lr_scale: float = 0.02
    lr_rotation: float = 0.02
    lr_amplitude: float = 0.05
    l1_weight: float = 0.2
    l2_weight: float = 0.8
    ssim_weight: float = 0.1
    edge_weight: float = 0.3
    min_sigma: float = 0.35
    max_sigma: float = 8.0
    prune_amplitude: float = 0.004
    max_anisotropy: float = 12.0
    occupancy_threshold: float = 2.0
    block_size: int = 192
    block_overlap: int = 8
    position_step: float = 0.25
    amplitude_bits: int = 9
    scale_bits: int = 6
    rotation_bits: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ratio is not None and self.gaussians is not None:
            raise InputError("Give a target compression ratio or a Gaussian count, not both.")
        if self.ratio is None and self.gaussians is None:
            raise InputError("Give a target compression ratio or a Gaussian count.", option="ratio")
        if self.ratio is not None and not self.ratio > 1:
            raise InputError(f"The target ratio must be above 1, not {self.ratio}.")
        if self.gaussians is not None and self.gaussians < 1:
            raise InputError(f"The Gaussian count must be at least 1, not {self.gaussians}.")
        if self.time_budget is not None and not self.time_budget > 0:
            raise InputError(f"The time budget must be positive, not {self.time_budget} s.")
        if not 0 < self.min_sigma < self.max_sigma:
            raise InputError("min_sigma must be positive and below max_sigma.")
        if self.iterations < 1:
            raise InputError("iterations must be at least 1.")
        if not 0 < self.position_step <= 1:
            raise InputError("position_step must be in (0, 1] voxels.")
        for name in ("amplitude_bits", "scale_bits", "rotation_bits"):
            if not 4 <= getattr(self, name) <= 16:
                raise InputError(f"{name} must be between 4 and 16.")

    def replace(self, **changes) -> FitConfig:
        """A copy with some settings changed (budgets swap cleanly)."""
        if "ratio" in changes and changes["ratio"] is not None:
            changes.setdefault("gaussians", None)
        if "gaussians" in changes and changes["gaussians"] is not None:
            changes.setdefault("ratio", None)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def yaml_text(self) -> str:
        """The settings as YAML text (what :meth:`to_yaml` writes)."""
        return "# napari-histovol Gaussian-mixture fit settings\n" + yaml.safe_dump(
            self.to_dict(), sort_keys=False
        )

    def to_yaml(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the settings as YAML (atomically; an existing file only with ``overwrite``)."""
        from ..io.atomic import write_text

        return write_text(path, self.yaml_text(), overwrite=overwrite)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, **overrides) -> FitConfig:
        """Settings from a YAML file (optional) with keyword arguments taking precedence.

        Overrides that are None are ignored, so CLI options left unset keep the file's value.
        """
        data: dict = {}
        if path is not None:
            try:
                loaded = yaml.safe_load(read_text(path, what="the fit configuration"))
            except yaml.YAMLError as exc:
                raise InputError(f"{path} is not valid YAML: {exc}.") from exc
            if not isinstance(loaded, dict):
                raise InputError(f"{path} must hold a mapping of settings.")
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(loaded) - known)
            if unknown:
                raise InputError(f"{path} has unknown settings: {', '.join(unknown)}.")
            data.update(loaded)
        given = {k: v for k, v in overrides.items() if v is not None}
        if "ratio" in given:
            data.pop("gaussians", None)
        if "gaussians" in given:
            data.pop("ratio", None)
        data.update(given)
        return cls(**data)

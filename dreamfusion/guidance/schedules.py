"""Timestep (noise level) schedules, shared by every prior.

``t`` is a fraction of the diffusion's training steps; each schedule gives the range
``[lo, hi]`` to draw from at a fraction ``p`` of the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from ..choices import SCHEDULES


@dataclass(frozen=True)
class TimestepSchedule:
    """``uniform``: ``[t_min, t_max]`` throughout (DreamFusion).

    ``anneal_linear`` / ``anneal_sqrt``: both ends move, ``t_max -> t_max_end`` and
    ``t_min -> t_min_end``, as ``f = p`` or ``f = sqrt(p)``: high noise first for structure,
    lower noise later for detail.

    ``time_prioritized``: a single ``t`` that falls monotonically from ``t_max`` to ``t_min``,
    lingering where ``W(t) = exp(-(t - tp_mu)^2 / (2 tp_sigma^2))`` is large: ``t(p)``
    solves ``int_t^t_max W = p int_t_min^t_max W`` (DreamTime, Huang et al. 2023).
    """
    name: str
    t_min: float
    t_max: float
    t_max_end: float
    t_min_end: float | None = None
    tp_mu: float = 0.5
    tp_sigma: float = 0.25
    anneal_end: float = 1.0     # the share of the run over which t moves, then stays at its end

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown timestep schedule {self.name!r} ({', '.join(SCHEDULES)})")

    def range_at(self, progress: float) -> tuple[float, float]:
        p = min(max(progress / self.anneal_end, 0.0), 1.0)
        if self.name == "uniform":
            return self.t_min, self.t_max
        if self.name == "time_prioritized":
            t = self._prioritized(p)
            return t, t
        f = p if self.name == "anneal_linear" else math.sqrt(p)
        bottom_end = self.t_min if self.t_min_end is None else self.t_min_end
        top = self.t_max + (self.t_max_end - self.t_max) * f
        bottom = self.t_min + (bottom_end - self.t_min) * f
        return min(bottom, top), top

    @cached_property
    def _prioritized_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``t`` from ``t_max`` down to ``t_min`` on 2048 points, and the normalised
        trapezoidal integral of ``W`` from ``t_max`` to each: computed once, read every step."""
        ts = torch.linspace(self.t_max, self.t_min, 2048, dtype=torch.float64)
        w = torch.exp(-(ts - self.tp_mu) ** 2 / (2.0 * self.tp_sigma ** 2))
        steps = 0.5 * (w[1:] + w[:-1]) * (ts[:-1] - ts[1:])
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])
        return ts, cdf / cdf[-1]

    def _prioritized(self, p: float) -> float:
        ts, cdf = self._prioritized_table
        n = ts.shape[0]
        i = int(torch.searchsorted(cdf, torch.tensor([p], dtype=torch.float64)).clamp(1, n - 1))
        frac = float((p - cdf[i - 1]) / (cdf[i] - cdf[i - 1]).clamp_min(1e-12))
        return float(ts[i - 1] + frac * (ts[i] - ts[i - 1]))

    def sample(self, progress: float, n_train_steps: int, batch: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Integer timesteps (batch,) in ``[lo, hi] * n_train_steps``."""
        lo, hi = self.range_at(progress)
        u = torch.rand(batch, generator=generator)
        t = lo + (hi - lo) * u
        return (t * n_train_steps).long().clamp(1, n_train_steps - 1)

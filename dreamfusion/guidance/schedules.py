"""Timestep (noise level) schedules, shared by every prior.

``t`` is a fraction of the diffusion's training steps; each schedule gives the range
``[t_min, t_max]`` to draw from at a fraction ``p`` of the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("uniform", "anneal_linear", "anneal_sqrt")


@dataclass(frozen=True)
class TimestepSchedule:
    """``uniform``: ``[t_min, t_max]`` throughout (DreamFusion).

    ``anneal_linear`` / ``anneal_sqrt``: the top of the range falls from ``t_max`` to
    ``t_max_end`` as ``p`` or ``sqrt(p)``: high noise first for structure, lower noise later
    for detail.
    """
    name: str
    t_min: float
    t_max: float
    t_max_end: float

    def range_at(self, progress: float) -> tuple[float, float]:
        p = min(max(progress, 0.0), 1.0)
        if self.name == "uniform":
            return self.t_min, self.t_max
        f = p if self.name == "anneal_linear" else math.sqrt(p)
        top = self.t_max + (self.t_max_end - self.t_max) * f
        return self.t_min, max(top, self.t_min)

    def sample(self, progress: float, n_train_steps: int, batch: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Integer timesteps (batch,) in ``[t_min, t_max] * n_train_steps``."""
        lo, hi = self.range_at(progress)
        u = torch.rand(batch, generator=generator)
        t = lo + (hi - lo) * u
        return (t * n_train_steps).long().clamp(1, n_train_steps - 1)

"""Binary occupancy grid over ``[-bound, bound]^3``, refreshed from the field's density."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class OccupancyGrid(nn.Module):
    """A ``res^3`` grid of density EMAs and the binary mask derived from them.

    Each update evaluates the density at a random point of every cell (all cells: the grid is
    small enough on the CPU, and it keeps updates deterministic given the seed) and keeps
    ``ema = max(decay * ema, sigma)``. A cell is occupied while
    ``ema * step_size > min(threshold, mean(ema * step_size))``: the mean term keeps a field
    that is faint everywhere, as at the start, from being culled entirely.
    """

    def __init__(self, bound: float, resolution: int, step_size: float, threshold: float,
                 ema_decay: float) -> None:
        super().__init__()
        self.bound, self.resolution, self.step_size = bound, resolution, step_size
        self.threshold, self.ema_decay = threshold, ema_decay
        self.register_buffer("density_ema", torch.zeros(resolution ** 3))
        self.register_buffer("binary", torch.ones(resolution ** 3, dtype=torch.bool))
        idx = torch.arange(resolution)
        cells = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), dim=-1).reshape(-1, 3)
        self.register_buffer("_cells", cells, persistent=False)

    @property
    def cell_size(self) -> float:
        return 2.0 * self.bound / self.resolution

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor],
               chunk: int = 1 << 16) -> None:
        jitter = torch.rand(self._cells.shape, device=self._cells.device)
        points = (self._cells + jitter) * self.cell_size - self.bound
        sigma = torch.cat([density_fn(p) for p in points.split(chunk)])
        self.density_ema.copy_(torch.maximum(self.density_ema * self.ema_decay, sigma))
        opacity = self.density_ema * self.step_size
        self.binary.copy_(opacity > torch.clamp(opacity.mean(), max=self.threshold))

    def cell_index(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell index of each point, and whether the point lies inside the grid."""
        unit = (points + self.bound) / (2.0 * self.bound)
        inside = ((unit >= 0) & (unit < 1)).all(dim=-1)
        ijk = (unit * self.resolution).long().clamp(0, self.resolution - 1)
        flat = (ijk[..., 0] * self.resolution + ijk[..., 1]) * self.resolution + ijk[..., 2]
        return flat, inside

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        flat, inside = self.cell_index(points)
        return self.binary[flat] & inside

"""Ray marching through an occupancy grid: packed samples in occupied cells only.

Two backends give the same samples from the same grid state: nerfacc's ``traverse_grids`` on
CUDA (where nerfacc imports) and the PyTorch marcher below, which runs everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from .occupancy import OccupancyGrid


@dataclass
class RaySamples:
    """Packed samples: sample ``i`` lies on ray ``ray_indices[i]`` over ``[t_starts, t_ends]``."""
    ray_indices: torch.Tensor
    t_starts: torch.Tensor
    t_ends: torch.Tensor

    def points(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        mid = 0.5 * (self.t_starts + self.t_ends)
        return origins[self.ray_indices] + mid.unsqueeze(-1) * dirs[self.ray_indices]

    def select(self, keep: torch.Tensor) -> "RaySamples":
        return RaySamples(self.ray_indices[keep], self.t_starts[keep], self.t_ends[keep])


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, bound: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through ``[-bound, bound]^3`` (far < near: a miss)."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far


@lru_cache(maxsize=None)
def load_nerfacc() -> Any | None:
    """The ``nerfacc`` module where it imports with its CUDA kernels, else None."""
    if not torch.cuda.is_available():
        return None
    try:
        import nerfacc
    except Exception:               # not installed, or built for another torch
        return None
    return nerfacc


def marcher_for(backend: str, device: torch.device, grid: OccupancyGrid | None) -> str:
    """``nerfacc`` for CUDA rays through a grid where nerfacc imports (and ``backend`` allows
    it), else ``torch``."""
    if backend == "torch" or grid is None or device.type != "cuda":
        return "torch"
    return "nerfacc" if load_nerfacc() is not None else "torch"


def march_rays(origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid | None,
               bound: float, step_size: float, backend: str = "auto") -> RaySamples:
    """Samples every ``step_size`` from the box entry, kept only where the grid is occupied.

    Steps are aligned to each ray's entry point, as nerfacc's marcher does, so a dense
    marcher (``grid=None``), the occupancy marcher and nerfacc produce the same sample
    positions.
    """
    if marcher_for(backend, origins.device, grid) == "nerfacc":
        return _march_nerfacc(origins, dirs, grid, bound, step_size)
    near, far = ray_aabb(origins, dirs, bound)
    span = (far - near).clamp_min(0.0)
    n_steps = int(torch.ceil(span.max() / step_size).item()) if span.numel() else 0
    k = torch.arange(n_steps, device=origins.device, dtype=origins.dtype)
    starts = near.unsqueeze(-1) + k * step_size                                  # (R, S)
    ends = starts + step_size
    valid = ends <= far.unsqueeze(-1) + 1e-6
    if grid is not None:
        mid = origins.unsqueeze(1) + (starts + 0.5 * step_size).unsqueeze(-1) * dirs.unsqueeze(1)
        valid &= grid.occupied(mid)
    ray_idx, step_idx = valid.nonzero(as_tuple=True)
    return RaySamples(ray_idx, starts[ray_idx, step_idx], ends[ray_idx, step_idx])


def _march_nerfacc(origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid, bound: float,
                   step_size: float) -> RaySamples:
    """nerfacc's traversal of our binary grid (same cell order: x major, then y, then z), with
    our box entry and exit as its near and far planes so that both clip rays alike."""
    nerfacc = load_nerfacc()
    r = grid.resolution
    near, far = ray_aabb(origins, dirs, bound)
    aabb = torch.tensor([[-bound] * 3 + [bound] * 3], device=origins.device, dtype=origins.dtype)
    intervals, samples, _ = nerfacc.traverse_grids(
        origins.contiguous(), dirs.contiguous(), grid.binary.view(1, r, r, r), aabb,
        near_planes=near, far_planes=far, step_size=step_size, cone_angle=0.0)
    return RaySamples(samples.ray_indices.long(), intervals.vals[intervals.is_left],
                      intervals.vals[intervals.is_right])

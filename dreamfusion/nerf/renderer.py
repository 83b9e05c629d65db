"""Render images of a field through the occupancy-grid marcher."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rendering.cameras import Cameras
from ..rendering.rendered import Rendered
from ..rendering.shading import Background, shade
from ..rendering.volrend import (accumulate_along_rays, orientation_loss,
                                 render_transmittance, render_weights)
from .field import NeRFField
from .marcher import RaySamples, march_rays
from .occupancy import OccupancyGrid


@dataclass
class RenderSettings:
    step_size: float
    early_stop_eps: float = 1e-4
    ambient: float = 0.3
    diffuse: float = 0.7
    marcher: str = "auto"


def _cull_terminated(field: NeRFField, origins: torch.Tensor, dirs: torch.Tensor,
                     samples: RaySamples, n_rays: int, eps: float) -> RaySamples:
    """Drop samples behind the point where transmittance falls under ``eps``.

    A cheap density-only pass without gradients finds them, so the expensive pass with
    gradients and normals runs on the samples that matter (early ray termination).
    """
    if samples.ray_indices.numel() == 0:
        return samples
    with torch.no_grad():
        sigmas = field.density(samples.points(origins, dirs))
        trans, _ = render_transmittance(sigmas, samples.t_ends - samples.t_starts,
                                        samples.ray_indices, n_rays)
    return samples.select(trans > eps)


# rays per pass where no gradient is kept (validation, turntables, scores): a 96 px
# turntable frame in one pass held 200 MB of samples on a CPU, more than a training step
NO_GRAD_RAYS = 1 << 12


def render(field: NeRFField, grid: OccupancyGrid | None, background: Background,
           cameras: Cameras, height: int, width: int, settings: RenderSettings,
           mode: str = "albedo", light_dirs: torch.Tensor | None = None,
           with_normals: bool = False) -> Rendered:
    """Render ``cameras`` with one shading ``mode``; ``light_dirs`` (B, 3) for shaded modes.

    Shaded modes take normals; ``with_normals`` takes them in albedo mode too. Where normals
    are taken, ``Rendered.orientation`` holds their orientation penalty. Without gradients
    the rays go in passes of ``NO_GRAD_RAYS`` (each ray's result does not depend on the
    others), with the penalty then left out: nothing trains on such a render."""
    device = next(field.parameters()).device
    origins, dirs = cameras.rays(height, width)
    b = len(cameras)
    origins, dirs = origins.reshape(-1, 3).to(device), dirs.reshape(-1, 3).to(device)
    lights = None
    if light_dirs is not None:
        lights = light_dirs.to(device).repeat_interleave(height * width, dim=0)
    chunk = max(1, origins.shape[0]) if torch.is_grad_enabled() else NO_GRAD_RAYS
    parts = [_render_rays(field, grid, background, settings, mode, with_normals,
                          origins[i:i + chunk], dirs[i:i + chunk],
                          None if lights is None else lights[i:i + chunk])
             for i in range(0, origins.shape[0], chunk)]
    rgb, opacity, depth = (torch.cat([p[k] for p in parts]) for k in range(3))
    orientation = parts[0][4] if len(parts) == 1 else None
    return Rendered(rgb.view(b, height, width, 3), opacity.view(b, height, width),
                    depth.view(b, height, width), sum(p[3] for p in parts), orientation)


def _render_rays(field: NeRFField, grid: OccupancyGrid | None, background: Background,
                 settings: RenderSettings, mode: str, with_normals: bool,
                 origins: torch.Tensor, dirs: torch.Tensor, lights: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
    """(N, 3) rays and their (N, 3) light directions -> rgb (N, 3), opacity (N,), depth
    (N,), the sample count and the orientation penalty (None without normals)."""
    n_rays = origins.shape[0]
    samples = march_rays(origins, dirs, grid, field.bound, settings.step_size, settings.marcher)
    samples = _cull_terminated(field, origins, dirs, samples, n_rays, settings.early_stop_eps)
    idx = samples.ray_indices
    sigmas, albedo, normals = field(samples.points(origins, dirs),
                                    with_normals=with_normals or mode != "albedo")
    weights = render_weights(sigmas, samples.t_ends - samples.t_starts, idx, n_rays)
    colors = shade(albedo, normals, None if lights is None else lights[idx], mode,
                   settings.ambient, settings.diffuse)
    rgb = accumulate_along_rays(weights, colors, idx, n_rays)
    opacity = accumulate_along_rays(weights, None, idx, n_rays)
    mid = 0.5 * (samples.t_starts + samples.t_ends)
    depth = accumulate_along_rays(weights, mid.unsqueeze(-1), idx, n_rays).squeeze(-1)
    rgb = rgb + (1.0 - opacity).unsqueeze(-1) * background(dirs)
    orientation = None
    if normals is not None:
        orientation = orientation_loss(weights, normals, dirs[idx], idx, n_rays)
    return rgb, opacity, depth, int(idx.numel()), orientation

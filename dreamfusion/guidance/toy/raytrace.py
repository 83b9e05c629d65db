"""Sphere tracing of toy objects: the ground-truth renderer of the toy world."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...rendering.cameras import Cameras
from ...rendering.shading import shade
from .world import SHAPES, Caption, part_colors


@dataclass
class TracedImages:
    rgb: torch.Tensor     # (B, H, W, 3) on the background
    mask: torch.Tensor    # (B, H, W) coverage in [0, 1]


def _scene_sdf(caption: Caption, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return SHAPES[caption.shape].nearest_part(p)


def _normals(caption: Caption, p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    offsets = torch.eye(3) * eps
    grad = torch.stack([_scene_sdf(caption, p + o)[0] - _scene_sdf(caption, p - o)[0]
                        for o in offsets], dim=-1)
    return F.normalize(grad, dim=-1)


@torch.no_grad()
def trace(caption: Caption, cameras: Cameras, size: int, light_dirs: torch.Tensor,
          background: tuple[float, float, float], ambient: float, diffuse: float,
          supersample: int = 2, iterations: int = 96) -> TracedImages:
    """Lambertian images of ``caption`` (anti-aliased by ``supersample``^2 rays per pixel)."""
    hi = size * supersample
    origins, dirs = cameras.rays(hi, hi)
    b = len(cameras)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    t = torch.zeros(o.shape[0])
    hit = torch.zeros(o.shape[0], dtype=torch.bool)
    far = cameras.distance.max().item() + 2.0
    active = torch.ones_like(hit)
    for _ in range(iterations):
        idx = active.nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            break
        dist, _ = _scene_sdf(caption, o[idx] + t[idx, None] * d[idx])
        t[idx] += 0.8 * dist          # under-relax: the ellipsoid distance is only a bound
        done = dist < 1e-3
        hit[idx[done]] = True
        active[idx[done | (t[idx] > far)]] = False
    points = o + t.unsqueeze(-1) * d
    _, part = _scene_sdf(caption, points)
    colors = torch.tensor(part_colors(caption))[part]
    lights = light_dirs.repeat_interleave(hi * hi, dim=0)
    rgb = shade(colors, _normals(caption, points), lights, "lambertian", ambient, diffuse)
    rgb = torch.where(hit.unsqueeze(-1), rgb, torch.tensor(background))
    mask = hit.float()

    def pool(x: torch.Tensor) -> torch.Tensor:
        x = x.view(b, hi, hi, -1).permute(0, 3, 1, 2)
        return F.avg_pool2d(x, supersample).permute(0, 2, 3, 1)

    return TracedImages(pool(rgb), pool(mask.unsqueeze(-1)).squeeze(-1))

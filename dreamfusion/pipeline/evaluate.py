"""Score a trained scene against the toy world's ground truth."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from ..guidance.toy.raytrace import trace
from ..guidance.toy.world import Caption
from ..nerf.cameras import orbit
from ..nerf.renderer import render
from .build import Scene

SIDE_AZIMUTHS = (90.0, -90.0)


@dataclass
class SilhouetteScores:
    iou: float                    # mean over all azimuths
    side_iou: float               # mean over the side views (+-90 degrees)
    per_view: list[float]
    azimuths: list[float]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


@torch.no_grad()
def silhouette_iou(scene: Scene, caption: Caption, cfg: DictConfig, n_azimuths: int = 8,
                   elevation: float = 15.0, size: int = 64) -> SilhouetteScores:
    """IoU of the rendered opacity (> 0.5) with the true silhouette, per azimuth."""
    distance = sum(cfg.camera.distance) / 2
    fov = sum(cfg.camera.fov) / 2
    cams = orbit(n_azimuths, elevation, distance, fov)
    out = render(scene.field, scene.grid, scene.background, cams, size, size, scene.settings)
    lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
    truth = trace(caption, cams, size, lights, (1.0, 1.0, 1.0), cfg.shading.ambient,
                  cfg.shading.diffuse).mask
    scores = [_iou(out.opacity[i].cpu() > 0.5, truth[i] > 0.5) for i in range(n_azimuths)]
    azimuths = [float(a) for a in cams.azimuth]
    side = [s for s, a in zip(scores, azimuths) if any(abs(a - x) < 1e-3 for x in SIDE_AZIMUTHS)]
    return SilhouetteScores(sum(scores) / len(scores), sum(side) / max(len(side), 1), scores,
                            azimuths)

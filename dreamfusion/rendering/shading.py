"""DreamFusion's shading: albedo, lambertian and textureless, under ambient + diffuse light."""
from __future__ import annotations

import torch
from torch import nn


def shade(albedo: torch.Tensor, normals: torch.Tensor | None, light_dirs: torch.Tensor | None,
          mode: str, ambient: float, diffuse: float) -> torch.Tensor:
    """Colour of each sample.

    ``albedo``: ``c = rho``; ``lambertian``: ``c = rho * (ambient + diffuse * max(0, n.l))``;
    ``textureless``: the same with ``rho = 1`` (white), so only geometry shows.
    """
    if mode == "albedo":
        return albedo
    lit = ambient + diffuse * (normals * light_dirs).sum(-1, keepdim=True).clamp_min(0.0)
    if mode == "textureless":
        return lit.expand_as(albedo)
    return albedo * lit


def sample_light_directions(camera_positions: torch.Tensor, jitter: float,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit directions towards a light placed near each camera (B, 3).

    The light sits at the camera position plus Gaussian noise of ``jitter`` times the camera
    distance, so the lit side mostly faces the viewer, as in DreamFusion.
    """
    dist = camera_positions.norm(dim=-1, keepdim=True)
    noise = torch.randn(camera_positions.shape, generator=generator).to(camera_positions)
    light = camera_positions + jitter * dist * noise
    return light / light.norm(dim=-1, keepdim=True)


class Background(nn.Module):
    """Solid colour, or a small learned environment map of the ray direction."""

    def __init__(self, kind: str, color: tuple[float, float, float], hidden: int = 16,
                 frequencies: int = 4) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32))
        if kind == "learned":
            self.frequencies = frequencies
            self.mlp = nn.Sequential(nn.Linear(3 + 6 * frequencies, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 3))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        if self.kind == "solid":
            return self.color.expand(dirs.shape[:-1] + (3,))
        bands = 2.0 ** torch.arange(self.frequencies, device=dirs.device, dtype=dirs.dtype)
        angles = (dirs.unsqueeze(-1) * bands).flatten(-2)
        enc = torch.cat([dirs, torch.sin(angles), torch.cos(angles)], dim=-1)
        return torch.sigmoid(self.mlp(enc))

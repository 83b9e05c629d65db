"""Analytic fields for tests: exact geometry with the NeRFField interface."""
import torch
from torch import nn


class SphereField(nn.Module):
    """A ball of constant density ``sigma`` and radius ``radius``, coloured by position."""

    def __init__(self, radius: float = 0.5, sigma: float = 50.0, bound: float = 1.0,
                 sharpness: float = 2000.0) -> None:
        super().__init__()
        self.radius, self.sigma, self.bound, self.sharpness = radius, sigma, bound, sharpness
        self.dummy = nn.Parameter(torch.zeros(1))

    def density(self, x):
        # sigma / 2 exactly on the sphere; sharpness sets how hard the edge is
        return self.sigma * torch.sigmoid((self.radius - x.norm(dim=-1)) * self.sharpness)

    def albedo(self, x):
        return (x.clamp(-1, 1) + 1) / 2

    def forward(self, x, with_normals=False):
        normals = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-9) if with_normals else None
        return self.density(x), self.albedo(x), normals

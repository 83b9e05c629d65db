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


class BoxField(SphereField):
    """A box with half-extents ``half`` centred at ``centre``: no symmetry between the axes,
    so a file written in the wrong frame shows up in its bounding box."""

    def __init__(self, half=(0.2, 0.35, 0.5), centre=(0.0, 0.0, 0.1), sigma: float = 100.0,
                 sharpness: float = 40.0) -> None:
        super().__init__(sigma=sigma, sharpness=sharpness)
        self.register_buffer("half_size", torch.tensor(half))
        self.register_buffer("centre", torch.tensor(centre))

    def density(self, x):
        inside = (self.half_size - (x - self.centre).abs()).amin(dim=-1)   # > 0 inside the box
        return self.sigma * torch.sigmoid(inside * self.sharpness)

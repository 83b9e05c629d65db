"""The toy world's objects: analytic shapes (signed distance functions) and their parts'
colours; the vocabulary and captions are in ``captions.py``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .captions import COLORS, Caption


def _length(v: torch.Tensor) -> torch.Tensor:
    return v.norm(dim=-1)


def sphere(p: torch.Tensor) -> torch.Tensor:
    return _length(p) - 0.5


def cube(p: torch.Tensor) -> torch.Tensor:
    q = p.abs() - 0.4
    return _length(q.clamp_min(0.0)) + q.amax(dim=-1).clamp_max(0.0)


def cylinder(p: torch.Tensor) -> torch.Tensor:
    d = torch.stack([_length(p[..., :2]) - 0.35, p[..., 2].abs() - 0.45], dim=-1)
    return _length(d.clamp_min(0.0)) + d.amax(dim=-1).clamp_max(0.0)


def cone(p: torch.Tensor) -> torch.Tensor:
    # capped cone: base radius 0.45 at z = -0.4, apex at z = 0.5 (exact SDF, after Quilez)
    h, r1 = 0.45, 0.45
    q = torch.stack([_length(p[..., :2]), p[..., 2] - 0.05], dim=-1)
    k1 = torch.tensor([0.0, h])
    k2 = torch.tensor([-r1, 2.0 * h])
    ca = torch.stack([q[..., 0] - q[..., 0].clamp(max=torch.where(q[..., 1] < 0, r1, 0.0)),
                      q[..., 1].abs() - h], dim=-1)
    t = (((k1 - q) * k2).sum(-1) / (k2 * k2).sum()).clamp(0.0, 1.0)
    cb = q - k1 + k2 * t.unsqueeze(-1)
    s = torch.where((cb[..., 0] < 0) & (ca[..., 1] < 0), -1.0, 1.0)
    return s * torch.sqrt(torch.minimum((ca * ca).sum(-1), (cb * cb).sum(-1)))


def torus(p: torch.Tensor) -> torch.Tensor:
    q = torch.stack([_length(p[..., :2]) - 0.4, p[..., 2]], dim=-1)
    return _length(q) - 0.15


def _ellipsoid(p: torch.Tensor, centre: tuple, radii: tuple) -> torch.Tensor:
    # a bound, not exact; good enough to sphere-trace with a safety factor
    r = torch.tensor(radii)
    q = p - torch.tensor(centre)
    k0 = _length(q / r)
    k1 = _length(q / (r * r))
    return k0 * (k0 - 1.0) / k1.clamp_min(1e-9)


def duck_body(p: torch.Tensor) -> torch.Tensor:
    body = _ellipsoid(p, (-0.05, 0.0, -0.15), (0.5, 0.34, 0.27))
    head = _length(p - torch.tensor([0.25, 0.0, 0.22])) - 0.2
    return torch.minimum(body, head)


def duck_beak(p: torch.Tensor) -> torch.Tensor:
    """The beak points to +X, the front; it is what makes the duck's views differ."""
    return _ellipsoid(p, (0.47, 0.0, 0.19), (0.15, 0.09, 0.045))


@dataclass(frozen=True)
class Part:
    sdf: Callable[[torch.Tensor], torch.Tensor]
    color: str | None = None       # None: the caption's colour


@dataclass(frozen=True)
class Shape:
    parts: tuple[Part, ...]
    has_front: bool = False
    # above this height only the front feature (the duck's head and beak) is solid: where
    # the Janus score looks for it
    feature_min_z: float | None = None

    def nearest_part(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The signed distance of the union of the parts at ``p`` (..., 3), and which part is
        nearest."""
        return torch.stack([part.sdf(p) for part in self.parts], dim=-1).min(dim=-1)

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        return self.nearest_part(p)[0]


SHAPES: dict[str, Shape] = {
    "sphere": Shape((Part(sphere),)), "cube": Shape((Part(cube),)),
    "cylinder": Shape((Part(cylinder),)), "cone": Shape((Part(cone),)),
    "torus": Shape((Part(torus),)),
    "duck": Shape((Part(duck_body), Part(duck_beak, color="orange")), has_front=True,
                  feature_min_z=0.12),
}


def part_colors(caption: Caption) -> list[tuple[float, float, float]]:
    """The RGB colour of each of the caption's shape's parts."""
    out = []
    for part in SHAPES[caption.shape].parts:
        name = part.color or caption.color
        if part.color is not None and part.color == caption.color:
            name = "red"          # an orange duck keeps a beak that stands out
        out.append(COLORS[name])
    return out

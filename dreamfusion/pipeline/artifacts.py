"""What a run leaves on disk besides meshes and checkpoints: images, turntables, JSON."""
from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from ..rendering.cameras import Cameras, orbit
from ..utils.atomic import atomic_path
from .representation import Representation


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)


# pixels per render call: a representation's render holds memory in proportion to its
# pixels (a NeRF turntable of 24 x 96 x 96 in one batch held 1.7 GB more than training on a
# CPU); the NeRF also passes its rays in chunks, and this bounds the others alike
RENDER_PIXELS = 1 << 14


@torch.no_grad()
def render_views(scene: Representation, cameras: Cameras, size: int, mode: str) -> torch.Tensor:
    """Images (B, size, size, 3), lit from each camera for the shaded modes; rendered a few
    cameras at a time, so memory follows ``RENDER_PIXELS`` and not the number of views."""
    lights = cameras.positions / cameras.positions.norm(dim=-1, keepdim=True)
    per_call = max(1, RENDER_PIXELS // (size * size))
    return torch.cat([scene.render(cameras[i:i + per_call], size, size, mode,
                                   lights[i:i + per_call]).rgb
                      for i in range(0, len(cameras), per_call)])


def validation_strip(scene: Representation, distance: float, fov: float, size: int) -> np.ndarray:
    """Front, side, back and other side, albedo above and textureless below."""
    cams = orbit(4, 15.0, distance, fov)
    rows = [torch.cat(list(render_views(scene, cams, size, mode)), dim=1)
            for mode in ("albedo", "textureless")]
    return to_uint8(torch.cat(rows, dim=0))


def write_turntable(scene: Representation, path: Path, frames: int, size: int, elevation: float,
                    distance: float, fov: float) -> None:
    cams = orbit(frames, elevation, distance, fov)
    images = to_uint8(render_views(scene, cams, size, "lambertian"))
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, images, extension=".gif", duration=80, loop=0)


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

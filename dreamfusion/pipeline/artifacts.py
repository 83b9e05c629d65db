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


@torch.no_grad()
def render_views(scene: Representation, cameras: Cameras, size: int, mode: str) -> torch.Tensor:
    """Images (B, size, size, 3), lit from each camera for the shaded modes."""
    lights = cameras.positions / cameras.positions.norm(dim=-1, keepdim=True)
    return scene.render(cameras, size, size, mode, lights).rgb


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

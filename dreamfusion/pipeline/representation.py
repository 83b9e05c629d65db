"""What the trainer, the supervisor and the artifacts need from a scene representation.

The NeRF (``build.NeRFScene``) is the one implementation today; a second one (3D Gaussians,
issue 15) implements the same methods and nothing above this module changes. Shapes: ``B``
cameras of ``H x W`` pixels; points are ``(N, 3)`` in world space.
"""
from __future__ import annotations

from typing import Protocol

import torch

from ..nerf.cameras import Cameras
from ..nerf.renderer import Rendered


class Representation(Protocol):
    def render(self, cameras: Cameras, height: int, width: int, mode: str = "albedo",
               light_dirs: torch.Tensor | None = None, with_normals: bool = False) -> Rendered:
        """``cameras`` in one shading mode (``albedo``, ``lambertian``, ``textureless``);
        ``light_dirs`` (B, 3) for the shaded ones. ``Rendered.rgb`` is (B, H, W, 3)."""

    def param_groups(self, lr: float, lr_grid_scale: float) -> list[dict]:
        """Adam's parameter groups, in a fixed order (checkpoints store the optimiser by it)."""

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Every trained parameter with a name, for fault reports; the first is the one a
        test fault is injected into."""

    def before_step(self, step: int) -> None:
        """Work due before training step ``step`` (the NeRF refreshes its occupancy grid)."""

    def set_step(self, step: int) -> None:
        """Follow the training step (the NeRF's coarse-to-fine hash grid)."""

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) densities at ``points``, for export and evaluation."""

    def modules(self) -> dict[str, torch.nn.Module]:
        """The modules whose state dicts make up the checkpoint's ``scene``."""

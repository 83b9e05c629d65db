"""What the trainer, the supervisor, the checkpoints and the export need from a scene
representation.

Two implement it, each in its own package: the NeRF (``nerf.scene.NeRFScene``) and the 3D
Gaussians (``gaussians.scene.GaussianScene``); the registry (``config.registry``) builds the
one a config names, and nothing above this module knows which it trains. The method names
are free in ``nn.Module``, so a representation may be one. Shapes: ``B`` cameras of
``H x W`` pixels; points are ``(N, 3)`` in world space.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..export.mesh import Mesh
from ..export.pipeline import ExportSettings
from ..rendering.cameras import Cameras
from ..rendering.fields import Field
from ..rendering.rendered import Rendered


class Representation(Protocol):
    field: Field
    # the density D at which the exported surface lies when export.threshold is auto
    surface_level: float

    def render(self, cameras: Cameras, height: int, width: int, mode: str = "albedo",
               light_dirs: torch.Tensor | None = None, with_normals: bool = False) -> Rendered:
        """``cameras`` in one shading mode (``albedo``, ``lambertian``, ``textureless``);
        ``light_dirs`` (B, 3) for the shaded ones. ``Rendered.rgb`` is (B, H, W, 3)."""

    def param_groups(self) -> list[dict]:
        """Adam's parameter groups with their learning rates, in a fixed order (checkpoints
        store the optimiser by it). A group with an ``lr_final`` decays exponentially from
        ``lr`` at the first step to ``lr_final`` at the last (the trainer sets the rates)."""

    def named_trainables(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Every trained parameter with a name, for fault reports; the first is the one a
        test fault is injected into."""

    def before_step(self, step: int) -> None:
        """Work due before training step ``step`` (the NeRF refreshes its occupancy grid)."""

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Work due after an applied update, the scene now at ``step`` (Gaussians: adaptive
        density control, which edits the parameters and ``optimizer``'s moments in place)."""

    def set_step(self, step: int) -> None:
        """Follow the training step (the NeRF's coarse-to-fine hash grid)."""

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) densities at ``points``, for export and evaluation."""

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        """The modules whose state dicts make up the checkpoint's ``scene``, named as the
        registry entry's ``modules``."""

    def write_native(self, out_dir: Path) -> list[Path]:
        """The representation's own files besides the meshes (Gaussians: ``model.ply``)."""

    def export_mesh(self, settings: ExportSettings) -> Mesh:
        """The surface to write as GLB and OBJ (the volume ones: marching cubes over the
        density at ``settings.threshold``; a mesh representation: itself); raises
        ``export.mesh.NoSurface`` where there is none."""

    def backend(self) -> tuple[str, str]:
        """The name of the kernel that renders (for ``summary.json``) and one line saying
        which it is and why (for the log)."""

"""The NeRF as a scene representation: what the trainer, the checkpoints and the export
reach it by (``pipeline.representation``), and its builder from the config (the registry's
``nerf`` entry)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..export.mesh import Mesh, auto_threshold
from ..export.pipeline import ExportSettings, field_mesh
from ..rendering.cameras import Cameras
from ..rendering.rendered import Rendered
from ..rendering.shading import Background
from .field import NeRFField
from .hashgrid import HashGridEncoding
from .occupancy import OccupancyGrid
from .renderer import RenderSettings, render


@dataclass
class NeRFScene:
    """The NeRF as a ``Representation`` (``pipeline.representation``): hash-grid field,
    occupancy grid, background."""
    field: NeRFField
    grid: OccupancyGrid
    background: Background
    settings: RenderSettings
    grid_warmup_steps: int = 0          # refresh the occupancy grid every step until then,
    grid_update_every: int = 1          # then every this many steps
    lr: float = 0.01
    lr_grid_scale: float = 1.0          # the hash table's learning rate relative to lr

    @property
    def surface_level(self) -> float:
        """Half opacity over one marching step."""
        return auto_threshold(self.settings.step_size)

    def backend(self) -> tuple[str, str]:
        encoding = self.field.encoding
        return encoding.active_backend, f"hash grid: {encoding.describe_backend()}"

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Nothing: the occupancy grid is refreshed before steps."""

    def write_native(self, out_dir: Path) -> list[Path]:
        return []

    def export_mesh(self, settings: ExportSettings) -> Mesh:
        """Marching cubes over the density at ``settings.threshold``, textured by albedo."""
        return field_mesh(self.field, settings)

    def checkpoint_modules(self) -> dict[str, torch.nn.Module]:
        return {"field": self.field, "grid": self.grid, "background": self.background}

    def set_step(self, step: int) -> None:
        """What of the scene follows the training step: the hash grid's active levels."""
        self.field.encoding.set_step(step)

    def before_step(self, step: int) -> None:
        if step < self.grid_warmup_steps or step % self.grid_update_every == 0:
            self.grid.update(self.field.density)

    def render(self, cameras: Cameras, height: int, width: int, mode: str = "albedo",
               light_dirs: torch.Tensor | None = None, with_normals: bool = False) -> Rendered:
        return render(self.field, self.grid, self.background, cameras, height, width,
                      self.settings, mode, light_dirs, with_normals)

    def param_groups(self) -> list[dict]:
        """The hash table at its own rate, then the MLPs and the background."""
        named = self.named_trainables()
        return [{"params": [named[0][1]], "lr": self.lr * self.lr_grid_scale},
                {"params": [p for _, p in named[1:]], "lr": self.lr}]

    def named_trainables(self) -> list[tuple[str, torch.nn.Parameter]]:
        f = self.field
        named = [("encoding.params", f.encoding.params)]
        named += [(n, p) for n, p in f.named_parameters() if not n.startswith("encoding.")]
        named += [(f"background.{n}", p) for n, p in self.background.named_parameters()]
        return named

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.field.density(points)


def build_nerf_scene(cfg: DictConfig, device: torch.device) -> NeRFScene:
    """The sections by name: each constructor's parameters are its section's keys, whose
    defaults are the schema's alone."""
    encoding = HashGridEncoding(**OmegaConf.to_container(cfg.nerf.grid))
    field = NeRFField(encoding=encoding, **{k: v for k, v in cfg.nerf.items() if k != "grid"})
    m = cfg.marcher
    grid = OccupancyGrid(cfg.nerf.bound, m.grid_resolution, m.step_size, m.threshold, m.ema_decay)
    background = Background(cfg.background.kind, tuple(cfg.background.color))
    settings = RenderSettings(m.step_size, m.early_stop_eps, cfg.shading.ambient,
                              cfg.shading.diffuse, m.backend)
    return NeRFScene(field.to(device), grid.to(device), background.to(device), settings,
                 m.warmup_steps, m.update_every, cfg.optim.lr, cfg.optim.lr_grid_scale)

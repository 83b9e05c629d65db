"""Build the model, marcher, background and prior that a config describes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..errors import UserError
from ..guidance.base import Prior
from ..guidance.toy.prior import ReferenceSettings, ToyWorldPrior, views_from_config
from ..guidance.views import ViewRule
from ..nerf.field import NeRFField
from ..nerf.hashgrid import HashGridEncoding
from ..nerf.occupancy import OccupancyGrid
from ..nerf.renderer import RenderSettings
from ..nerf.shading import Background


@dataclass
class Scene:
    field: NeRFField
    grid: OccupancyGrid
    background: Background
    settings: RenderSettings

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"field": self.field, "grid": self.grid, "background": self.background}


def build_scene(cfg: DictConfig, device: torch.device) -> Scene:
    g = cfg.nerf.grid
    encoding = HashGridEncoding(g.n_levels, g.features, g.table_size_log2, g.base_resolution,
                                g.growth)
    field = NeRFField(cfg.nerf.bound, encoding, cfg.nerf.hidden, cfg.nerf.layers,
                      cfg.nerf.blob_density, cfg.nerf.blob_radius)
    m = cfg.marcher
    grid = OccupancyGrid(cfg.nerf.bound, m.grid_resolution, m.step_size, m.threshold, m.ema_decay)
    background = Background(cfg.background.kind, tuple(cfg.background.color))
    settings = RenderSettings(m.step_size, m.early_stop_eps, cfg.shading.ambient,
                              cfg.shading.diffuse)
    return Scene(field.to(device), grid.to(device), background.to(device), settings)


def view_rules(cfg: DictConfig) -> tuple[ViewRule, ...]:
    return views_from_config(cfg.prompt.views)


def build_prior(cfg: DictConfig) -> Prior:
    g = cfg.guidance
    if g.prior != "toy":
        raise ValueError(f"unknown prior {g.prior}")
    if cfg.height != cfg.width:
        raise UserError("the toy prior renders square references: set height == width")
    settings = ReferenceSettings(
        size=cfg.height, count=g.references, elevation=tuple(cfg.camera.elevation),
        distance=tuple(cfg.camera.distance), fov=tuple(cfg.camera.fov),
        light_jitter=cfg.shading.light_jitter, ambient=cfg.shading.ambient,
        diffuse=cfg.shading.diffuse,
        background=tuple(cfg.background.color), front_bias=g.front_bias, views=view_rules(cfg))
    return ToyWorldPrior(settings, g.uncond_per_caption, Path(g.cache_dir) if g.cache_dir else None)

"""Build the model, marcher, background and prior that a config describes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from omegaconf import DictConfig

from ..choices import TOY_PRIORS
from ..errors import UserError
from ..export.mesh import auto_threshold
from ..guidance.base import Prior
from ..guidance.toy.multiview import ToyMultiviewPrior
from ..guidance.toy.prior import ReferenceSettings, ToyWorldPrior, views_from_config
from ..guidance.views import ViewRule
from ..nerf.field import NeRFField
from ..nerf.hashgrid import HashGridEncoding
from ..nerf.occupancy import OccupancyGrid
from ..nerf.renderer import RenderSettings, render
from ..rendering.cameras import Cameras
from ..rendering.rendered import Rendered
from ..rendering.shading import Background
from ..utils.tensor_cache import default_cache_dir
from .gaussian_scene import build_gaussian_scene
from .representation import Representation


@dataclass
class Scene:
    """The NeRF as a ``Representation``: hash-grid field, occupancy grid, background."""
    field: NeRFField
    grid: OccupancyGrid
    background: Background
    settings: RenderSettings
    grid_warmup_steps: int = 0          # refresh the occupancy grid every step until then,
    grid_update_every: int = 1          # then every this many steps
    lr: float = 0.01
    lr_grid_scale: float = 1.0          # the hash table's learning rate relative to lr
    backend_key: ClassVar[str] = "hashgrid_backend"

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

    def modules(self) -> dict[str, torch.nn.Module]:
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
        named = self.named_parameters()
        return [{"params": [named[0][1]], "lr": self.lr * self.lr_grid_scale},
                {"params": [p for _, p in named[1:]], "lr": self.lr}]

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        f = self.field
        named = [("encoding.params", f.encoding.params)]
        named += [(n, p) for n, p in f.named_parameters() if not n.startswith("encoding.")]
        named += [(f"background.{n}", p) for n, p in self.background.named_parameters()]
        return named

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.field.density(points)


def build_scene(cfg: DictConfig, device: torch.device) -> Representation:
    """The representation ``cfg.representation`` names, on ``device``."""
    if cfg.representation == "gaussians":
        return build_gaussian_scene(cfg, device)
    return build_nerf_scene(cfg, device)


def build_nerf_scene(cfg: DictConfig, device: torch.device) -> Scene:
    g = cfg.nerf.grid
    encoding = HashGridEncoding(g.n_levels, g.features, g.table_size_log2, g.base_resolution,
                                g.growth, g.backend, g.start_levels, g.start_step, g.level_every)
    n = cfg.nerf
    field = NeRFField(n.bound, encoding, n.hidden, n.layers, n.blob_density, n.blob_radius,
                      n.normals, n.fd_eps)
    m = cfg.marcher
    grid = OccupancyGrid(cfg.nerf.bound, m.grid_resolution, m.step_size, m.threshold, m.ema_decay)
    background = Background(cfg.background.kind, tuple(cfg.background.color))
    settings = RenderSettings(m.step_size, m.early_stop_eps, cfg.shading.ambient,
                              cfg.shading.diffuse, m.backend)
    return Scene(field.to(device), grid.to(device), background.to(device), settings,
                 m.warmup_steps, m.update_every, cfg.optim.lr, cfg.optim.lr_grid_scale)


def view_rules(cfg: DictConfig) -> tuple[ViewRule, ...]:
    return views_from_config(cfg.prompt.views)


def diffusers_prior_class(name: str) -> type:
    from ..guidance.diffusion.deepfloyd_if import DeepFloydIFPrior
    from ..guidance.diffusion.mvdream import MVDreamPrior
    from ..guidance.diffusion.stable_diffusion import StableDiffusionPrior

    return {"stable_diffusion": StableDiffusionPrior, "deepfloyd_if": DeepFloydIFPrior,
            "mvdream": MVDreamPrior}[name]


def resolve_prior_model(cfg: DictConfig) -> Path:
    """The folder of a diffusers prior's weights; a ``UserError`` when they cannot be had."""
    from ..guidance.diffusion.weights import check_pipeline, resolve_model

    g = cfg.guidance
    cls = diffusers_prior_class(g.prior)
    half = g.half_precision and cfg.device != "cpu" and torch.cuda.is_available()
    folder = resolve_model(g.model.strip(), cls.subfolders, "fp16" if half else None)
    check_pipeline(folder, cls.pipelines, g.prior)
    for key in ("checkpoint", "checkpoint_config"):
        path = g.get(key, "").strip()
        if path and not Path(path).expanduser().is_file():
            raise UserError(f"config guidance.{key}: no file {path!r}")
    return folder


def build_prior(cfg: DictConfig, device: torch.device | None = None) -> Prior:
    g = cfg.guidance
    if g.prior not in TOY_PRIORS:
        return _build_diffusers_prior(cfg, device or torch.device("cpu"))
    if cfg.height != cfg.width:
        raise UserError("the toy prior renders square references: set height == width")
    settings = ReferenceSettings(
        size=cfg.height, count=g.references, elevation=tuple(cfg.camera.elevation),
        distance=tuple(cfg.camera.distance), fov=tuple(cfg.camera.fov),
        light_jitter=cfg.shading.light_jitter, ambient=cfg.shading.ambient,
        diffuse=cfg.shading.diffuse,
        background=tuple(cfg.background.color), front_bias=g.front_bias, views=view_rules(cfg))
    cache = Path(g.cache_dir) if g.cache_dir else None
    if g.prior == "toy_multiview":
        return ToyMultiviewPrior(settings, g.uncond_per_caption, cfg.camera.views_per_sample,
                                 g.camera_sigma, cache)
    return ToyWorldPrior(settings, g.uncond_per_caption, cache)


def _build_diffusers_prior(cfg: DictConfig, device: torch.device) -> Prior:
    from ..guidance.diffusion.prior import DiffusersSettings

    g = cfg.guidance
    folder = resolve_prior_model(cfg)
    cache = None
    if g.text_cache:
        cache = Path(g.cache_dir) if g.cache_dir else default_cache_dir()
    settings = DiffusersSettings(g.model, folder, device, g.half_precision, g.render_size, cache)
    extra = {}
    if g.prior == "mvdream":
        extra = {key: Path(g[key]).expanduser() if g[key].strip() else None
                 for key in ("checkpoint", "checkpoint_config")}
    try:
        return diffusers_prior_class(g.prior).load(settings, **extra)
    except ValueError as exc:       # loaded, but not a model this prior can use
        raise UserError(f"cannot use the {g.prior} model from {str(folder)!r}: {exc}") from None

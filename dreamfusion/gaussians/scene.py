"""3D Gaussians as a scene representation (``pipeline.representation``): the trainer renders,
optimises, densifies and checkpoints them through the same methods as the NeRF; the
registry's ``gaussians`` entry builds them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..export.mesh import Mesh
from ..export.pipeline import ExportSettings, field_mesh
from ..rendering.cameras import Cameras
from ..rendering.rendered import Rendered
from ..rendering.shading import Background
from . import density_control as dc
from .model import PARAMETERS, SURFACE_LEVEL, Gaussians
from .ply import write_ply
from .renderer import GaussianRenderer, SplatRender

# the gaussians.lr key of each of ``PARAMETERS``, in its order
RATES = ("position", "scale", "rotation", "opacity", "colour")


@dataclass
class GaussianScene:
    field: Gaussians
    background: Background
    renderer: GaussianRenderer
    control: dc.DensifySettings
    rates: dict[str, float | None]      # gaussians.lr: Adam's rate for each parameter
    image_size: int                     # the training renders' larger side, in pixels
    surface_level: float = SURFACE_LEVEL
    _last: SplatRender | None = field(default=None, repr=False)

    def checkpoint_modules(self) -> dict[str, torch.nn.Module]:
        return {"gaussians": self.field, "background": self.background}

    def backend(self) -> tuple[str, str]:
        return self.renderer.active, f"gaussian rasteriser: {self.renderer.describe()}"

    def render(self, cameras: Cameras, height: int, width: int, mode: str = "albedo",
               light_dirs: torch.Tensor | None = None, with_normals: bool = False) -> Rendered:
        """Normals are each Gaussian's, not a render's: ``with_normals`` changes nothing and
        ``Rendered.orientation`` stays None (the orientation term is the NeRF's)."""
        out = self.renderer.render(self.field, self.background, cameras, height, width, mode,
                                   light_dirs)
        # the training render's view-space gradients feed density control after the update
        self._last = out if torch.is_grad_enabled() else self._last
        return out.rendered

    def param_groups(self) -> list[dict]:
        g = self.field
        groups = [{"params": [getattr(g, name)], "lr": self.rates[rate]}
                  for name, rate in zip(PARAMETERS, RATES)]
        if self.rates.get("position_final") is not None:
            groups[0]["lr_final"] = self.rates["position_final"]
        background = list(self.background.parameters())
        if background:
            groups.append({"params": background, "lr": self.rates["background"]})
        return groups

    def named_trainables(self) -> list[tuple[str, torch.nn.Parameter]]:
        named = [(f"gaussians.{n}", p) for n, p in self.field.named_parameters()]
        return named + [(f"background.{n}", p) for n, p in self.background.named_parameters()]

    def before_step(self, step: int) -> None:
        """Nothing: density control runs after the update."""

    def set_step(self, step: int) -> None:
        """Nothing follows the step but density control, which ``after_step`` runs."""

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Gather the view-space gradients; at the due steps densify, prune, reset."""
        c, last, self._last = self.control, self._last, None
        if step >= c.stop:          # statistics gathered now would never be read
            return
        if last is not None:
            with torch.no_grad():
                dc.accumulate(self.field, last.means2d, last.radii, last.width, last.height)
        if step >= c.start and dc.due(step, c.every):
            dc.densify_and_prune(self.field, optimizer, c, self.image_size,
                                 after_reset=step > c.opacity_reset_every > 0)
        if dc.due(step, c.opacity_reset_every):
            dc.reset_opacity(self.field, optimizer)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.field.density(points)

    def write_native(self, out_dir: Path) -> list[Path]:
        return [write_ply(self.field, out_dir / "model.ply")]

    def export_mesh(self, settings: ExportSettings) -> Mesh:
        """Marching cubes over the Gaussians' summed density (``Gaussians.density``), textured
        by their albedo: the PLY (``write_native``) is the Gaussians themselves."""
        return field_mesh(self.field, settings)


def build_gaussian_scene(cfg: DictConfig, device: torch.device) -> GaussianScene:
    g = cfg.gaussians
    generator = torch.Generator().manual_seed(int(cfg.seed))
    gaussians = Gaussians(g.count, cfg.nerf.bound, g.init_radius, g.init_opacity, generator,
                          g.min_scale)
    control = dc.DensifySettings(**OmegaConf.to_container(g.densify), max_count=g.max_count,
                                 extent=cfg.nerf.bound)
    rates = {name: None if value is None else float(value) for name, value in g.lr.items()}
    background = Background(cfg.background.kind, tuple(cfg.background.color)).to(device)
    renderer = GaussianRenderer(g.backend, device, cfg.shading.ambient, cfg.shading.diffuse,
                                g.rasterize_mode)
    return GaussianScene(gaussians.to(device), background, renderer, control, rates,
                         max(cfg.height, cfg.width))

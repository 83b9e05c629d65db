"""Render Gaussians for a batch of cameras in one shading mode, through the rasteriser that
was decided once, when the renderer was built."""
from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field

import torch

from ..choices import RasterizeMode, SplatBackend
from ..errors import UserError
from ..rendering.cameras import Cameras
from ..rendering.rendered import Rendered
from ..rendering.shading import Background, shade
from .model import Gaussians
from .projection import Camera, Projected, mode_opacities, project
from .rasterize import rasterize

log = logging.getLogger(__name__)


def gsplat_available() -> bool:
    try:
        importlib.import_module("gsplat")
    except Exception:       # not installed, or its CUDA extension does not load
        return False
    return True


def decide_backend(requested: SplatBackend, device: torch.device) -> tuple[str, str]:
    """The rasteriser to use on ``device`` and why: gsplat on CUDA where it imports, the
    compiled compositor on the CPU where it builds, else the PyTorch reference. Asking for
    gsplat where it cannot run is bad input; asking for cpp where it does not build falls
    back to the reference, with the reason (as the hash grid's kernel does)."""
    cuda = device.type == "cuda"
    if requested == "torch":
        return "torch", "asked for"
    if requested == "gsplat":
        if not cuda:
            raise UserError("gaussians.backend=gsplat needs a CUDA device (device=cuda); use "
                            "auto, cpp or torch on the CPU")
        if not gsplat_available():
            raise UserError("gaussians.backend=gsplat: gsplat does not import; install it "
                            "with pip install -e \".[cuda]\", or use backend=torch")
        return "gsplat", "asked for"
    if cuda:
        if requested == "cpp":
            return "torch", "the compiled compositor is CPU-only"
        return ("gsplat", "CUDA, and gsplat imports") if gsplat_available() else \
            ("torch", "gsplat does not import")
    from .splat_cpp import load_kernel, unavailable_reason

    if load_kernel() is None:
        return "torch", f"the compiled compositor does not build: {unavailable_reason()}"
    return "cpp", "asked for" if requested == "cpp" else "CPU, and the compiled compositor builds"


def rasterize_with(kernel: str, means: torch.Tensor, covariances: torch.Tensor,
                   opacities: torch.Tensor, values: torch.Tensor, camera: Camera, height: int,
                   width: int, mode: str = "classic"
                   ) -> tuple[torch.Tensor, torch.Tensor, Projected, int]:
    """``rasterize``'s outputs from the PyTorch reference (``kernel="torch"``) or from the
    compiled compositor over the same projection (``"cpp"``: the same sums)."""
    if kernel == "torch":
        return rasterize(means, covariances, opacities, values, camera, height, width, mode)
    if kernel != "cpp":
        raise ValueError(f"unknown CPU rasteriser {kernel!r}")
    from .splat_cpp import composite_cpp

    proj = project(means, covariances, camera, height, width)
    colour, alpha, n = composite_cpp(proj, mode_opacities(proj, opacities, mode), values,
                                     height, width)
    return colour.view(height, width, -1), alpha.view(height, width), proj, n


def pinholes(cameras: Cameras, height: int, width: int,
             device: torch.device | None = None) -> list[Camera]:
    """``cameras`` as the rasteriser takes them (their rays are ``Cameras.rays``)."""
    forward, right, up = cameras.basis()
    rotations = torch.stack([right, up, forward], dim=1).to(device)
    positions = cameras.positions.to(device)
    halves = [math.tan(math.radians(float(f)) / 2) for f in cameras.fov]
    return [Camera(positions[i], rotations[i], 0.5 * width / half, 0.5 * height / half)
            for i, half in enumerate(halves)]


@dataclass
class SplatRender:
    """A render and what adaptive density control reads from it after the backward pass."""
    rendered: Rendered
    # pixel positions (..., N, 2) and radii (..., N) of the Gaussians: one (N, 2) per camera
    # from the PyTorch rasteriser, one (B, N, 2) from gsplat
    means2d: list[torch.Tensor] = field(default_factory=list)
    radii: list[torch.Tensor] = field(default_factory=list)
    height: int = 0
    width: int = 0


class GaussianRenderer:
    """Colours each Gaussian for the shading mode and rasterises it with the decided
    backend. Normals are each Gaussian's shortest axis, turned towards the camera."""

    def __init__(self, backend: SplatBackend, device: torch.device, ambient: float,
                 diffuse: float, mode: RasterizeMode = "classic") -> None:
        self.active, self.reason = decide_backend(backend, device)
        self.ambient, self.diffuse, self.mode = ambient, diffuse, mode
        log.info("gaussian rasteriser: %s", self.describe())

    def describe(self) -> str:
        return f"{self.active} ({self.reason}), {self.mode} mode"

    def colours(self, gaussians: Gaussians, camera: Camera, mode: str,
                light: torch.Tensor | None) -> torch.Tensor:
        """(N, 4): the shaded colour of each Gaussian and its camera-space depth."""
        albedo = gaussians.colours
        depth = (gaussians.means - camera.position) @ camera.rotation[2]
        if mode != "albedo":
            normals = gaussians.normals()
            towards = ((camera.position - gaussians.means) * normals).sum(-1, keepdim=True)
            normals = torch.where(towards < 0, -normals, normals)
            albedo = shade(albedo, normals, light.expand_as(normals), mode, self.ambient,
                           self.diffuse)
        return torch.cat([albedo, depth.unsqueeze(-1)], dim=-1)

    def render(self, gaussians: Gaussians, background: Background, cameras: Cameras,
               height: int, width: int, mode: str = "albedo",
               light_dirs: torch.Tensor | None = None) -> SplatRender:
        device = gaussians.means.device
        cams = pinholes(cameras, height, width, device)
        lights = None if light_dirs is None else light_dirs.to(device)
        values = [self.colours(gaussians, c, mode, None if lights is None else lights[i])
                  for i, c in enumerate(cams)]
        if self.active == "gsplat":
            from .gsplat_backend import rasterize_gsplat

            images, alphas, means2d, radii, n = rasterize_gsplat(gaussians, cams, values,
                                                                height, width, self.mode)
        else:
            images, alphas, means2d, radii, n = self._rasterize_torch(
                gaussians, cams, values, height, width, self.active, self.mode)
        for m in means2d:       # density control reads their gradient after backward
            if m.requires_grad:
                m.retain_grad()
        _, dirs = cameras.rays(height, width)
        rgb = images[..., :3] + (1.0 - alphas).unsqueeze(-1) * background(dirs.to(device))
        out = Rendered(rgb, alphas, images[..., 3], n)
        return SplatRender(out, means2d, radii, height, width)

    @staticmethod
    def _rasterize_torch(gaussians: Gaussians, cams: list[Camera], values: list[torch.Tensor],
                         height: int, width: int, kernel: str, mode: str):
        covs, opac = gaussians.covariances(), gaussians.opacities
        images, alphas, means2d, radii, n = [], [], [], [], 0
        for cam, vals in zip(cams, values):
            image, alpha, proj, pairs = rasterize_with(kernel, gaussians.means, covs, opac,
                                                       vals, cam, height, width, mode)
            images.append(image)
            alphas.append(alpha)
            means2d.append(proj.means2d)
            radii.append(proj.radii)
            n += pairs
        return torch.stack(images), torch.stack(alphas), means2d, radii, n

"""The projection half of Gaussian rasterisation, shared by the PyTorch reference
(``rasterize``), the compiled compositor (``splat_cpp``) and the gsplat adapter: EWA
projection, each Gaussian's pixel box and the depth order. The rules are in
``rasterize``'s docstring.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

EPS_2D = 0.3            # px^2 added to each projected covariance (gsplat's eps2d)
NEAR = 0.01             # camera-space depth under which a Gaussian is not drawn
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4            # a pixel is done before the Gaussian that would take T this low
# the box reaches this many standard deviations along each image axis: beyond it
# o exp(-d^2 / 2) < 1/255 for every o <= 1 (gsplat >= 1.5's 3.33)
EXTENT = 3.33
# x/z and y/z are clamped to this many half fields of view before the projection's Jacobian,
# as gsplat does: a Gaussian far outside the frame would otherwise smear a huge footprint in
CLAMP_FOV = 1.3


@dataclass
class Camera:
    """One pinhole camera: ``position`` (3,), the ``rotation`` rows right, up, forward (3, 3),
    focal lengths in pixels."""
    position: torch.Tensor
    rotation: torch.Tensor
    fx: float
    fy: float


@dataclass
class Projected:
    means2d: torch.Tensor    # (N, 2) pixel coordinates (u, v)
    conics: torch.Tensor     # (N, 3) the inverse 2D covariance (a, b, c): [[a, b], [b, c]]
    depths: torch.Tensor     # (N,) camera-space z
    radii: torch.Tensor      # (N,) int, pixels; 0 where the Gaussian is not drawn
    # (N,) sqrt(det Sigma_2D / det Sigma'): the "antialiased" mode's opacity factor
    compensations: torch.Tensor


def project(means: torch.Tensor, covariances: torch.Tensor, camera: Camera, height: int,
            width: int) -> Projected:
    """EWA splatting's projection of ``means`` (N, 3) and ``covariances`` (N, 3, 3)."""
    p = (means - camera.position) @ camera.rotation.T           # (N, 3): right, up, forward
    x, y, z = p.unbind(-1)
    visible = z > NEAR
    zs = torch.where(visible, z, torch.ones_like(z))
    u = 0.5 * width + camera.fx * x / zs
    v = 0.5 * height - camera.fy * y / zs
    lim_x = CLAMP_FOV * 0.5 * width / camera.fx
    lim_y = CLAMP_FOV * 0.5 * height / camera.fy
    xj = zs * (x / zs).clamp(-lim_x, lim_x)
    yj = zs * (y / zs).clamp(-lim_y, lim_y)
    zero = torch.zeros_like(zs)
    jac = torch.stack([
        torch.stack([camera.fx / zs, zero, -camera.fx * xj / zs ** 2], -1),
        torch.stack([zero, -camera.fy / zs, camera.fy * yj / zs ** 2], -1)], dim=-2)  # (N, 2, 3)
    m = jac @ camera.rotation
    cov = m @ covariances @ m.transpose(-1, -2)
    a = cov[:, 0, 0] + EPS_2D
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + EPS_2D
    det = (a * c - b * b).clamp_min(1e-12)
    unfiltered = cov[:, 0, 0] * cov[:, 1, 1] - b * b
    compensations = torch.sqrt((unfiltered / det).clamp_min(0.0))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    radii = torch.ceil(EXTENT * torch.sqrt(torch.maximum(a, c))).detach()
    on_image = ((u + radii > 0) & (u - radii < width) & (v + radii > 0) & (v - radii < height))
    radii = torch.where(visible & on_image, radii, 0.0).long()
    return Projected(torch.stack([u, v], dim=-1), conics, z, radii, compensations)


def boxes(proj: Projected, opacities: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 4) int32 ``x0, x1, y0, y1``: the pixels each Gaussian may cover (empty: x0 > x1).

    The box bounds the ellipse ``d^T Sigma'^-1 d <= k^2``, whose half-widths along the image
    axes are ``k sqrt(Sigma'_xx)`` and ``k sqrt(Sigma'_yy)``, at ``k = min(EXTENT, sqrt(2
    ln(o / ALPHA_MIN)))``: where ``o exp(-k^2 / 2)`` falls under ``ALPHA_MIN``, so no pixel it
    drops could have been kept, and faint Gaussians (most of them, early on) cost less
    (gsplat >= 1.5's opacity-aware box)."""
    o = opacities.detach()
    k = torch.sqrt(2.0 * torch.log((o / ALPHA_MIN).clamp_min(1.0))).clamp_max(EXTENT)
    ca, cb, cc = proj.conics.detach().unbind(-1)
    det = (ca * cc - cb * cb).clamp_min(1e-30)
    # Sigma' = [[a, b], [b, c]]^-1 of the conic: Sigma'_xx = c / det, Sigma'_yy = a / det
    rx = torch.ceil(k * torch.sqrt(cc / det))
    ry = torch.ceil(k * torch.sqrt(ca / det))
    u, v = proj.means2d.detach().unbind(-1)
    out = torch.stack([(u - rx).floor().clamp(0, width - 1), (u + rx).floor().clamp(0, width - 1),
                       (v - ry).floor().clamp(0, height - 1),
                       (v + ry).floor().clamp(0, height - 1)], dim=-1).int()
    empty = (proj.radii <= 0) | (k <= 0)
    out[empty] = torch.tensor([1, 0, 1, 0], dtype=torch.int32, device=out.device)
    return out


def depth_order(proj: Projected) -> torch.Tensor:
    """(N,) Gaussian indices, nearest first (ties by index)."""
    return torch.argsort(proj.depths.detach(), stable=True)


def mode_opacities(proj: Projected, opacities: torch.Tensor, mode: str) -> torch.Tensor:
    """The opacities that are composited: as they are (``classic``), or times the
    compensation (``antialiased``); any other mode is refused, never read as classic."""
    if mode == "antialiased":
        return opacities * proj.compensations
    if mode != "classic":
        raise ValueError(f"unknown rasterize mode {mode!r}")
    return opacities

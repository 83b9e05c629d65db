"""Differentiable rasterisation of 3D Gaussians: EWA projection, then front-to-back alpha
compositing of the Gaussian-pixel pairs in the packed convention of ``rendering.volrend``.

One camera at a time; the pixel ``(row i, column j)`` has its centre at ``(u, v) = (j + 0.5,
i + 0.5)``, the same rays as ``Cameras.rays``. The rules are gsplat's, so the CUDA path
(``gsplat_backend.py``) renders the same image:

* projection: ``u = W/2 + f_x x/z``, ``v = H/2 - f_y y/z`` in the camera's (right, up,
  forward) frame, ``f = (size / 2) / tan(fov / 2)``; ``Sigma' = J W Sigma W^T J^T + 0.3 I``
  (the 0.3 px^2 low-pass filter); Gaussians nearer than ``near`` are dropped;
* each Gaussian covers the pixels within ``3 sqrt(lambda_max(Sigma'))`` of its centre;
* ``alpha = min(0.999, o exp(-d^T Sigma'^-1 d / 2))``; pairs under ``1/255`` are dropped;
  in gsplat's "antialiased" mode ``o`` is first scaled by the compensation
  ``sqrt(det Sigma_2D / det Sigma')`` (``Sigma_2D`` before the filter), so the filter blurs
  a Gaussian without adding to the area it covers: the 0.3 px^2 widens a Gaussian of a
  pixel's size by half at a low resolution and hardly at a high one, and in "classic" mode
  a cloud fitted at one looks thinner at the other;
* ``C = sum_i T_i alpha_i c_i``, ``T_i = prod_{j<i} (1 - alpha_j)``, nearest Gaussian first,
  up to (not including) the first Gaussian after which ``T`` would be ``<= 1e-4``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rendering.volrend import accumulate_along_rays, render_transmittance

EPS_2D = 0.3            # px^2 added to each projected covariance (gsplat's eps2d)
NEAR = 0.01             # camera-space depth under which a Gaussian is not drawn
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4            # a pixel is done before the Gaussian that would take T this low


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
    zero = torch.zeros_like(zs)
    jac = torch.stack([
        torch.stack([camera.fx / zs, zero, -camera.fx * x / zs ** 2], -1),
        torch.stack([zero, -camera.fy / zs, camera.fy * y / zs ** 2], -1)], dim=-2)  # (N, 2, 3)
    m = jac @ camera.rotation
    cov = m @ covariances @ m.transpose(-1, -2)
    a = cov[:, 0, 0] + EPS_2D
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + EPS_2D
    det = (a * c - b * b).clamp_min(1e-12)
    unfiltered = cov[:, 0, 0] * cov[:, 1, 1] - b * b
    compensations = torch.sqrt((unfiltered / det).clamp_min(0.0))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt((mid * mid - det).clamp_min(0.01))
    radii = torch.ceil(3.0 * torch.sqrt(lam)).detach()
    on_image = ((u + radii > 0) & (u - radii < width) & (v + radii > 0) & (v - radii < height))
    radii = torch.where(visible & on_image, radii, 0.0).long()
    return Projected(torch.stack([u, v], dim=-1), conics, z, radii, compensations)


@dataclass
class Pairs:
    """The Gaussian-pixel pairs of one image, sorted by pixel, then by depth (packed)."""
    gaussians: torch.Tensor    # (M,) index of each pair's Gaussian
    pixels: torch.Tensor       # (M,) flat pixel index, row-major
    alphas: torch.Tensor       # (M,)


def boxes(proj: Projected, opacities: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 4) int32 ``x0, x1, y0, y1``: the pixels each Gaussian may cover (empty: x0 > x1).

    The box is the projection's ``radii``, narrowed where the opacity is low to the distance
    at which ``alpha`` falls under ``ALPHA_MIN`` along the major axis: no pixel it drops
    could have been kept, and faint Gaussians (most of them, early on) cost less."""
    o = opacities.detach()
    # o exp(-d^2 / (2 lambda_max)) >= ALPHA_MIN  <=>  d <= sqrt(2 ln(o / ALPHA_MIN) lambda_max)
    reach = torch.sqrt(2.0 * torch.log((o / ALPHA_MIN).clamp_min(1.0))) / 3.0
    r = torch.minimum(proj.radii, torch.ceil(proj.radii * reach).long())
    u, v = proj.means2d.detach().unbind(-1)
    out = torch.stack([(u - r).floor().clamp(0, width - 1), (u + r).floor().clamp(0, width - 1),
                       (v - r).floor().clamp(0, height - 1),
                       (v + r).floor().clamp(0, height - 1)], dim=-1).int()
    out[r <= 0] = torch.tensor([1, 0, 1, 0], dtype=torch.int32, device=out.device)
    return out


def depth_order(proj: Projected) -> torch.Tensor:
    """(N,) Gaussian indices, nearest first (ties by index)."""
    return torch.argsort(proj.depths.detach(), stable=True)


def pixel_pairs(proj: Projected, opacities: torch.Tensor, height: int, width: int) -> Pairs:
    """Every pixel of each Gaussian's box (``boxes``), with its alpha; pairs under
    ``ALPHA_MIN`` dropped. ``opacities`` (N,)."""
    device = proj.means2d.device
    box = boxes(proj, opacities, height, width).long()
    drawn = (box[:, 0] <= box[:, 1]).nonzero().squeeze(-1)
    x0, x1, y0, y1 = box[drawn].unbind(-1)
    w = x1 - x0 + 1
    counts = w * (y1 - y0 + 1)
    which = torch.arange(drawn.numel(), device=device).repeat_interleave(counts)
    local = torch.arange(int(counts.sum()), device=device) - (torch.cumsum(counts, 0)
                                                               - counts)[which]
    px = x0[which] + local % w[which]
    py = y0[which] + local // w[which]
    g = drawn[which]
    # index_select, not x[g]: its backward (index_add_) sums in a fixed order on the CPU,
    # where the backward of advanced indexing does not, and runs must repeat bit for bit
    mu = proj.means2d.index_select(0, g)
    du = px.to(mu.dtype) + 0.5 - mu[:, 0]
    dv = py.to(mu.dtype) + 0.5 - mu[:, 1]
    a, b, c = proj.conics.index_select(0, g).unbind(-1)
    power = -0.5 * (a * du * du + c * dv * dv) - b * du * dv
    alphas = (opacities.index_select(0, g) * torch.exp(power.clamp_max(0.0))).clamp_max(ALPHA_MAX)
    keep = (alphas.detach() >= ALPHA_MIN) & (power.detach() <= 0.0)
    g, pixels, alphas = g[keep], (py * width + px)[keep], alphas[keep]
    # nearest first within each pixel: sort by (pixel, depth rank)
    rank = torch.empty_like(proj.depths, dtype=torch.long)
    rank[depth_order(proj)] = torch.arange(proj.depths.numel(), device=device)
    order = torch.argsort(pixels * proj.depths.numel() + rank[g])
    return Pairs(g[order], pixels[order], alphas[order])


def composite(pairs: Pairs, values: torch.Tensor, n_pixels: int
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``sum_i T_i alpha_i values_i`` (n_pixels, C), the opacity ``sum_i T_i alpha_i``
    (n_pixels,) of the sorted ``pairs`` and how many pairs were composited (the early stop
    leaves some out); ``values`` (N, C) per Gaussian."""
    # alpha compositing is volume rendering with optical depths -log(1 - alpha_i)
    optical = -torch.log1p(-pairs.alphas)
    trans, _ = render_transmittance(optical, torch.ones_like(optical), pairs.pixels, n_pixels)
    # gsplat's early stop, as a mask: it is monotone along each pixel's sorted pairs
    live = (trans * (1.0 - pairs.alphas)).detach() > T_MIN
    weights = trans * pairs.alphas * live
    colour = accumulate_along_rays(weights, values.index_select(0, pairs.gaussians),
                                   pairs.pixels, n_pixels)
    alpha = accumulate_along_rays(weights, None, pairs.pixels, n_pixels)
    return colour, alpha, int(live.sum())


def rasterize(means: torch.Tensor, covariances: torch.Tensor, opacities: torch.Tensor,
              values: torch.Tensor, camera: Camera, height: int, width: int,
              kernel: str = "torch", mode: str = "classic"
              ) -> tuple[torch.Tensor, torch.Tensor, Projected, int]:
    """``values`` (N, C) composited into (H, W, C), the opacity (H, W), the projection (whose
    ``means2d`` carries the view-space gradient) and the number of pairs composited.
    ``kernel``: ``torch`` (the reference) or ``cpp`` (``splat_cpp``, the same sums);
    ``mode``: ``classic`` or ``antialiased`` (opacities times ``Projected.compensations``)."""
    proj = project(means, covariances, camera, height, width)
    if mode == "antialiased":
        opacities = opacities * proj.compensations
    if kernel == "cpp":
        from .splat_cpp import composite_cpp

        colour, alpha, n = composite_cpp(proj, opacities, values, height, width)
        return colour.view(height, width, -1), alpha.view(height, width), proj, n
    pairs = pixel_pairs(proj, opacities, height, width)
    colour, alpha, n = composite(pairs, values, height * width)
    return colour.view(height, width, -1), alpha.view(height, width), proj, n

"""Differentiable rasterisation of 3D Gaussians: EWA projection, then front-to-back alpha
compositing of the Gaussian-pixel pairs in the packed convention of ``rendering.volrend``.

One camera at a time; the pixel ``(row i, column j)`` has its centre at ``(u, v) = (j + 0.5,
i + 0.5)``, the same rays as ``Cameras.rays``. The rules are gsplat's, so the CUDA path
(``gsplat_backend.py``) renders the same image:

* projection: ``u = W/2 + f_x x/z``, ``v = H/2 - f_y y/z`` in the camera's (right, up,
  forward) frame, ``f = (size / 2) / tan(fov / 2)``; ``Sigma' = J W Sigma W^T J^T + 0.3 I``
  (the 0.3 px^2 low-pass filter), with ``x/z`` and ``y/z`` clamped to 1.3 times the half
  field of view's tangent in the Jacobian ``J`` (not in the centre); Gaussians nearer than
  ``near`` are dropped;
* each Gaussian covers the pixels of the box ``k sqrt(Sigma'_xx)`` by ``k sqrt(Sigma'_yy)``
  about its centre, ``k = min(3.33, sqrt(2 ln(255 o)))`` (gsplat >= 1.5's opacity-aware
  box, which holds every pixel the alpha cut below keeps);
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
from .projection import (ALPHA_MAX, ALPHA_MIN, EPS_2D, NEAR, T_MIN, Camera, Projected, boxes,
                         depth_order, mode_opacities, project)

__all__ = ["ALPHA_MAX", "ALPHA_MIN", "EPS_2D", "NEAR", "T_MIN", "Camera", "Projected",
           "Pairs", "boxes", "composite", "depth_order", "mode_opacities", "pixel_pairs", "project",
           "rasterize"]


@dataclass
class Pairs:
    """The Gaussian-pixel pairs of one image, sorted by pixel, then by depth (packed)."""
    gaussians: torch.Tensor    # (M,) index of each pair's Gaussian
    pixels: torch.Tensor       # (M,) flat pixel index, row-major
    alphas: torch.Tensor       # (M,)


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
              mode: str = "classic") -> tuple[torch.Tensor, torch.Tensor, Projected, int]:
    """The PyTorch reference: ``values`` (N, C) composited into (H, W, C), the opacity
    (H, W), the projection (whose ``means2d`` carries the view-space gradient) and the number
    of pairs composited. ``mode``: ``classic`` or ``antialiased`` (opacities times
    ``Projected.compensations``)."""
    proj = project(means, covariances, camera, height, width)
    pairs = pixel_pairs(proj, mode_opacities(proj, opacities, mode), height, width)
    colour, alpha, n = composite(pairs, values, height * width)
    return colour.view(height, width, -1), alpha.view(height, width), proj, n

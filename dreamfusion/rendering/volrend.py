"""Volume rendering for batched ``(R, S)`` or packed ``(M,)`` samples, one signature for both.

Packed samples come with ``ray_indices`` (M,), sorted, naming each sample's ray; batched
samples leave it ``None``.
"""
from __future__ import annotations

import torch


def _exclusive_cumsum(values: torch.Tensor, ray_indices: torch.Tensor | None,
                      n_rays: int | None) -> torch.Tensor:
    if ray_indices is None:
        return torch.cumsum(values, dim=-1) - values
    # one global cumsum, rebased at each ray's first sample; float64 keeps the long sum exact
    total = torch.cumsum(values.double(), dim=0)
    exclusive = total - values.double()
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = torch.cumsum(counts, dim=0) - counts
    return (exclusive - exclusive[starts[ray_indices]]).to(values.dtype)


def render_transmittance(sigmas: torch.Tensor, deltas: torch.Tensor,
                         ray_indices: torch.Tensor | None = None,
                         n_rays: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Transmittance and opacity of each sample.

    ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)``.
    """
    optical = sigmas * deltas
    trans = torch.exp(-_exclusive_cumsum(optical, ray_indices, n_rays))
    alphas = 1.0 - torch.exp(-optical)
    return trans, alphas


def render_weights(sigmas: torch.Tensor, deltas: torch.Tensor,
                   ray_indices: torch.Tensor | None = None,
                   n_rays: int | None = None) -> torch.Tensor:
    """Volume rendering weights ``w_i = T_i * alpha_i`` (see ``render_transmittance``)."""
    trans, alphas = render_transmittance(sigmas, deltas, ray_indices, n_rays)
    return trans * alphas


def accumulate_along_rays(weights: torch.Tensor, values: torch.Tensor | None = None,
                          ray_indices: torch.Tensor | None = None,
                          n_rays: int | None = None) -> torch.Tensor:
    """``sum_i w_i v_i`` per ray; ``values=None`` gives the opacity ``sum_i w_i``.

    Batched: weights (R, S), values (R, S, C) -> (R, C) (or (R,) without values).
    Packed: weights (M,), values (M, C) -> (n_rays, C) (or (n_rays,)).
    """
    src = weights if values is None else weights.unsqueeze(-1) * values
    if ray_indices is None:
        return src.sum(dim=1)
    out = src.new_zeros((n_rays,) + tuple(src.shape[1:]))
    return out.index_add(0, ray_indices, src)


def orientation_loss(weights: torch.Tensor, normals: torch.Tensor, dirs: torch.Tensor,
                     ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Ref-NeRF's orientation penalty on packed samples, per ray that sees anything:
    ``sum_i stopgrad(w_i) max(0, n_i . d_i)^2 / #{rays with sum_i w_i > 0}``.

    ``weights`` (M,), ``normals`` (M, 3) outward unit normals, ``dirs`` (M, 3) the ray
    directions (camera to point). It penalises normals that face away from the camera, which
    is what turns a surface's back side into floaters and hollow shells.
    """
    facing_away = (normals * dirs).sum(-1).clamp_min(0.0)
    seen = (accumulate_along_rays(weights.detach(), None, ray_indices, n_rays) > 0).sum()
    return (weights.detach() * facing_away ** 2).sum() / seen.clamp_min(1)

"""Score Distillation Sampling, classifier-free guidance and Perp-Neg, for any ``Prior``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .base import Prior


@dataclass
class Condition:
    """A camera's resolved conditions: the positive one, the one classifier-free guidance
    subtracts (empty or negative prompt), and Perp-Neg's weighted negatives."""
    positive: Any
    unconditional: Any
    negatives: list[tuple[Any, float]] = field(default_factory=list)


@dataclass
class SDSResult:
    loss: torch.Tensor
    grad_norm: float


def sds_weight(abar: torch.Tensor, kind: str) -> torch.Tensor:
    """``w(t)``: ``sds`` is DreamFusion's ``1 - abar_t``; ``snr_sqrt`` is ``sqrt(abar(1-abar))``."""
    if kind == "sds":
        return 1.0 - abar
    if kind == "snr_sqrt":
        return torch.sqrt(abar * (1.0 - abar))
    return torch.ones_like(abar)


def perpendicular(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The part of ``a`` perpendicular to ``b``, per sample: ``a - (<a, b> / |b|^2) b``."""
    af, bf = a.flatten(1), b.flatten(1)
    scale = (af * bf).sum(-1, keepdim=True) / (bf * bf).sum(-1, keepdim=True).clamp_min(1e-12)
    return (af - scale * bf).view_as(a)


def guided_noise(prior: Prior, x_t: torch.Tensor, t: torch.Tensor, cond: Condition,
                 guidance_scale: float) -> torch.Tensor:
    """``eps_u + s (d_pos - sum_i w_i perp(d_i, d_pos))`` with ``d = eps_c - eps_u``.

    Without negatives this is classifier-free guidance; at ``s = 1`` and without negatives
    it is just ``eps_pos`` and the unconditional prediction is skipped.
    """
    if guidance_scale == 1.0 and not cond.negatives:
        return prior.predict_noise(x_t, t, cond.positive)
    eps = prior.predict_noise_many(
        x_t, t, [cond.positive, cond.unconditional] + [c for c, _ in cond.negatives])
    eps_pos, eps_u = eps[0], eps[1]
    d_pos = eps_pos - eps_u
    delta = d_pos
    for (_, w), eps_neg in zip(cond.negatives, eps[2:]):
        delta = delta - w * perpendicular(eps_neg - eps_u, d_pos)
    return eps_u + guidance_scale * delta


def sds_loss(prior: Prior, images: torch.Tensor, t: torch.Tensor, cond: Condition,
             guidance_scale: float, weighting: str = "sds", grad_clip: float | None = None,
             noise: torch.Tensor | None = None) -> SDSResult:
    """Score distillation: a surrogate loss whose gradient w.r.t. the model-space render x is
    ``w(t) (eps_hat(x_t, t, y) - eps)``, with ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``.
    The gradient reaches the render through ``prior.encode`` (the VAE for latent models).
    """
    x = prior.encode(images)
    abar = prior.alphas_cumprod.to(x.device)[t.cpu()].view(-1, 1, 1, 1).to(x.dtype)
    noise = torch.randn_like(x) if noise is None else noise.to(x)
    with torch.no_grad():
        x_t = abar.sqrt() * x + (1.0 - abar).sqrt() * noise
        eps_hat = guided_noise(prior, x_t, t.to(x.device), cond, guidance_scale).to(x.dtype)
        grad = sds_weight(abar, weighting) * (eps_hat - noise)
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
    target = (x - grad).detach()
    # d/dx of 0.5 |x - target|^2 is exactly grad; summed per image, averaged over the batch
    loss = 0.5 * ((x.float() - target.float()) ** 2).sum() / x.shape[0]
    return SDSResult(loss, float(grad.float().norm()))

"""Score Distillation Sampling, classifier-free guidance and Perp-Neg, for any ``Prior``; and
the two losses built on them (``guidance.loss``): SDS and MVDream's x0 reconstruction."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rendering.cameras import Cameras
from omegaconf import DictConfig

from .base import Condition, Prior
from .losses import Loss


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
    if kind == "uniform":
        return torch.ones_like(abar)
    raise ValueError(f"unknown SDS weighting {kind!r} (sds, uniform, snr_sqrt)")


def perpendicular(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The part of ``a`` perpendicular to ``b``, per sample: ``a - (<a, b> / |b|^2) b``."""
    af, bf = a.flatten(1), b.flatten(1)
    scale = (af * bf).sum(-1, keepdim=True) / (bf * bf).sum(-1, keepdim=True).clamp_min(1e-12)
    return (af - scale * bf).view_as(a)


@dataclass
class Guided:
    """The guided prediction and the conditional one it was guided from (equal at ``s = 1``
    without negatives), which the reconstruction loss's rescaling reads."""
    eps: torch.Tensor
    eps_conditional: torch.Tensor


def guided_noise(prior: Prior, x_t: torch.Tensor, t: torch.Tensor, cond: Condition,
                 guidance_scale: float, cameras: Cameras | None = None) -> Guided:
    """``eps_u + s (d_pos - sum_i w_i perp(d_i, d_pos))`` with ``d = eps_c - eps_u``.

    Without negatives this is classifier-free guidance; at ``s = 1`` and without negatives
    it is just ``eps_pos`` and the unconditional prediction is skipped.
    """
    if guidance_scale == 1.0 and not cond.negatives:
        eps = prior.predict_noise(x_t, t, cond.positive, cameras)
        return Guided(eps, eps)
    eps = prior.predict_noise_many(
        x_t, t, [cond.positive, cond.unconditional] + [c for c, _ in cond.negatives], cameras)
    eps_pos, eps_u = eps[0], eps[1]
    d_pos = eps_pos - eps_u
    delta = d_pos
    for (_, w), eps_neg in zip(cond.negatives, eps[2:]):
        delta = delta - w * perpendicular(eps_neg - eps_u, d_pos)
    return Guided(eps_u + guidance_scale * delta, eps_pos)


def reconstruction_target(x_t: torch.Tensor, abar: torch.Tensor, guided: Guided,
                          std_rescale: float) -> torch.Tensor:
    """MVDream's x0 target: ``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)`` from the guided
    prediction, its standard deviation over the sample (all its views) pulled towards the
    unguided one's: ``x0 <- r x0 std(x0_c) / std(x0) + (1 - r) x0`` (``r = std_rescale``),
    which keeps a large guidance scale from saturating colours."""
    def x0_of(eps: torch.Tensor) -> torch.Tensor:
        return (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()

    x0 = x0_of(guided.eps)
    if std_rescale > 0.0:
        factor = (x0_of(guided.eps_conditional).std() + 1e-8) / (x0.std() + 1e-8)
        x0 = std_rescale * factor * x0 + (1.0 - std_rescale) * x0
    return x0


def sds_loss(prior: Prior, images: torch.Tensor, t: torch.Tensor, cond: Condition,
             guidance_scale: float, weighting: str = "sds", grad_clip: float | None = None,
             noise: torch.Tensor | None = None, cameras: Cameras | None = None,
             loss: str = "sds", recon_std_rescale: float = 0.0) -> SDSResult:
    """Score distillation: a surrogate loss whose gradient w.r.t. the model-space render x is
    ``w(t) (eps_hat(x_t, t, y) - eps)``, with ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``.
    The gradient reaches the render through ``prior.encode`` (the VAE for latent models).

    ``loss="recon"`` is MVDream's x0 reconstruction: the gradient is ``x - x0_hat``
    (``reconstruction_target``), without ``w(t)``. For a multi-view prior ``images`` are the
    K views of one object and ``cameras`` theirs; ``t`` is then one value repeated K times.
    """
    x = prior.encode(images)
    abar = prior.alphas_cumprod.to(x.device)[t.cpu()].view(-1, 1, 1, 1).to(x.dtype)
    noise = torch.randn_like(x) if noise is None else noise.to(x)
    with torch.no_grad():
        x_t = abar.sqrt() * x + (1.0 - abar).sqrt() * noise
        guided = guided_noise(prior, x_t, t.to(x.device), cond, guidance_scale, cameras)
        eps_hat = guided.eps.to(x.dtype)
        if loss == "recon":
            guided = Guided(eps_hat, guided.eps_conditional.to(x.dtype))
            grad = x - reconstruction_target(x_t, abar, guided, recon_std_rescale)
        elif loss == "sds":
            grad = sds_weight(abar, weighting) * (eps_hat - noise)
        else:
            raise ValueError(f"unknown distillation loss {loss!r} (sds, recon)")
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
    target = (x - grad).detach()
    # d/dx of 0.5 |x - target|^2 is exactly grad; summed per image, averaged over the batch
    loss = 0.5 * ((x.float() - target.float()) ** 2).sum() / x.shape[0]
    return SDSResult(loss, float(grad.float().norm()))


class SDSLoss(Loss):
    """``guidance.loss=sds``: DreamFusion's score distillation (``sds_loss``), one term
    ``loss_sds``."""

    def __init__(self, guidance_scale: float, weighting: str, grad_clip: float | None) -> None:
        sds_weight(torch.zeros(1), weighting)         # an unknown weighting fails here
        self.guidance_scale, self.weighting, self.grad_clip = guidance_scale, weighting, grad_clip

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "SDSLoss":
        g = cfg.guidance
        return cls(g.guidance_scale, g.weighting, g.grad_clip)

    def needs_unconditional(self, perp_neg: bool) -> bool:
        """Guidance above 1 and Perp-Neg both subtract an unconditional prediction."""
        return self.guidance_scale != 1.0 or perp_neg

    def terms(self, prior: Prior, images: torch.Tensor, t: torch.Tensor, cond: Condition,
              cameras: Cameras) -> dict[str, torch.Tensor]:
        result = sds_loss(prior, images, t, cond, self.guidance_scale, self.weighting,
                          self.grad_clip, cameras=cameras)
        return {"loss_sds": result.loss}


class ReconstructionLoss(SDSLoss):
    """``guidance.loss=recon``: MVDream's x0 reconstruction (``sds_loss(loss="recon")``),
    one term ``loss_recon``."""

    def __init__(self, guidance_scale: float, grad_clip: float | None,
                 std_rescale: float) -> None:
        super().__init__(guidance_scale, "uniform", grad_clip)
        self.std_rescale = std_rescale

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "ReconstructionLoss":
        g = cfg.guidance
        return cls(g.guidance_scale, g.grad_clip, g.recon_std_rescale)

    def terms(self, prior: Prior, images: torch.Tensor, t: torch.Tensor, cond: Condition,
              cameras: Cameras) -> dict[str, torch.Tensor]:
        result = sds_loss(prior, images, t, cond, self.guidance_scale, grad_clip=self.grad_clip,
                          cameras=cameras, loss="recon", recon_std_rescale=self.std_rescale)
        return {"loss_recon": result.loss}

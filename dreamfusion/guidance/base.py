"""The guidance interface every 2D prior implements, and Score Distillation Sampling."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

WEIGHTINGS = ("sds", "uniform", "snr_sqrt")


def scaled_linear_alphas_cumprod(n_steps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> torch.Tensor:
    """``abar_t = prod_{s<=t} (1 - beta_s)``, with Stable Diffusion's scaled-linear betas."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class Prior(ABC):
    """A denoiser of images, conditioned on text: what SDS needs from any diffusion model."""

    alphas_cumprod: torch.Tensor     # (n_train_steps,)

    @property
    def n_train_steps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @abstractmethod
    def condition(self, prompt: str) -> Any:
        """Encode a prompt (text embeddings for a real model)."""

    @abstractmethod
    def unconditional(self) -> Any:
        """The empty-prompt condition used by classifier-free guidance."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> the model's space, differentiably."""

    @abstractmethod
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, condition: Any) -> torch.Tensor:
        """``eps_hat(x_t, t, condition)``."""


def sds_weight(abar: torch.Tensor, kind: str) -> torch.Tensor:
    """``w(t)``: ``sds`` is DreamFusion's ``1 - abar_t``; ``snr_sqrt`` is ``sqrt(abar(1-abar))``."""
    if kind == "sds":
        return 1.0 - abar
    if kind == "snr_sqrt":
        return torch.sqrt(abar * (1.0 - abar))
    return torch.ones_like(abar)


@dataclass
class SDSResult:
    loss: torch.Tensor
    grad_norm: float


def guided_noise(prior: Prior, x_t: torch.Tensor, t: torch.Tensor, condition: Any,
                 guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps_u + s (eps_c - eps_u)`` (just ``eps_c`` when s = 1)."""
    eps_c = prior.predict_noise(x_t, t, condition)
    if guidance_scale == 1.0:
        return eps_c
    eps_u = prior.predict_noise(x_t, t, prior.unconditional())
    return eps_u + guidance_scale * (eps_c - eps_u)


def sds_loss(prior: Prior, images: torch.Tensor, t: torch.Tensor, condition: Any,
             guidance_scale: float, weighting: str = "sds",
             grad_clip: float | None = None) -> SDSResult:
    """Score distillation: a surrogate loss whose gradient w.r.t. the model-space render x is
    ``w(t) (eps_hat(x_t, t, y) - eps)``, with ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``.
    """
    x = prior.encode(images)
    abar = prior.alphas_cumprod.to(x.device)[t].view(-1, 1, 1, 1)
    noise = torch.randn_like(x)
    with torch.no_grad():
        x_t = abar.sqrt() * x + (1.0 - abar).sqrt() * noise
        eps_hat = guided_noise(prior, x_t, t, condition, guidance_scale)
        grad = sds_weight(abar, weighting) * (eps_hat - noise)
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
    target = (x - grad).detach()
    # d/dx of 0.5 |x - target|^2 is exactly grad; summed per image, averaged over the batch
    loss = 0.5 * ((x - target) ** 2).sum() / x.shape[0]
    return SDSResult(loss, float(grad.norm()))

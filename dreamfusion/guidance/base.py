"""The guidance interface every 2D prior implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from omegaconf import DictConfig

from ..rendering.cameras import Cameras


def scaled_linear_alphas_cumprod(n_steps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> torch.Tensor:
    """``abar_t = prod_{s<=t} (1 - beta_s)``, with Stable Diffusion's scaled-linear betas."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


@dataclass
class Condition:
    """A camera's resolved conditions: the positive one, the one classifier-free guidance
    subtracts (empty or negative prompt), and Perp-Neg's weighted negatives."""
    positive: Any
    unconditional: Any
    negatives: list[tuple[Any, float]] = field(default_factory=list)


@dataclass(frozen=True)
class RunInputs:
    """What a run conditions its prior on, as the user gave it: a prompt today (an image and
    its camera will join it for image-to-3D). ``Prior.condition`` encodes its parts."""
    prompt: str


class Prior(ABC):
    """A denoiser of images, conditioned on text: what SDS needs from any diffusion model.

    A condition is whatever the model conditions on (text embeddings for Stable Diffusion
    and IF, a reference set for the toy world); SDS only passes it back to the prior.

    A multi-view prior (``views = K > 1``: MVDream, the toy world's tuples) denoises the K
    views of one object as one sample: ``x_t`` is (K, C, H, W), the K views' cameras come
    with it, and its condition is ``stack`` of the K views' conditions. A single-view prior
    (``views = 1``) ignores the cameras.
    """

    alphas_cumprod: torch.Tensor     # (n_train_steps,), on the CPU
    views: int = 1

    @classmethod
    def check_config(cls, cfg: DictConfig) -> Any:
        """Refuse (``UserError``) what would stop this prior loading from ``cfg``: run before
        any folder is made, so it may read files but should not load models."""

    @classmethod
    def memory_needs(cls, cfg: DictConfig, device: torch.device) -> dict[str, int]:
        """Bytes by part that the prior itself holds on ``device`` while the scene trains
        (a diffusion model's weights), counted before it loads; the memory check adds them to
        the representation's."""
        return {}

    @classmethod
    def from_config(cls, cfg: DictConfig, device: torch.device | None = None) -> "Prior":
        """The prior ``cfg.guidance`` describes, on ``device``."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a config")

    def evaluate(self, scene: Any, run: RunInputs, cfg: DictConfig, mesh: Any | None,
                 density_threshold: float) -> dict[str, Any]:
        """Scores of a finished ``scene`` (its exported ``mesh`` where there is one, and the
        density its surface lies at) for ``summary.json``; a prior with a ground truth (the
        toy world) has some, others none."""
        return {}

    def progress_metrics(self, scene: Any, run: RunInputs, cfg: DictConfig) -> dict[str, float]:
        """Cheap scores of ``scene`` during training, for ``metrics.jsonl`` every
        ``output.eval_every`` steps; none by default."""
        return {}

    def summary_line(self, metrics: dict[str, Any]) -> str | None:
        """One line for the user about ``evaluate``'s scores, or None."""
        return None

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
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, condition: Any,
                      cameras: Cameras | None = None) -> torch.Tensor:
        """``eps_hat(x_t, t, condition)``; x_t (B, C, H, W), t (B,)."""

    def predict_noise_many(self, x_t: torch.Tensor, t: torch.Tensor, conditions: Sequence[Any],
                           cameras: Cameras | None = None) -> list[torch.Tensor]:
        """One prediction per condition; models override this to batch them in one call."""
        return [self.predict_noise(x_t, t, c, cameras) for c in conditions]

    def stack(self, conditions: Sequence[Any]) -> Any:
        """A multi-view sample's condition from its K views' own (in view order)."""
        raise NotImplementedError(f"{type(self).__name__} is a single-view prior")

    def release_text_encoder(self) -> None:
        """Every prompt of the run is encoded: a prior may free its text encoder (T5-XXL is
        9 GB at fp16); a later new prompt loads it again."""

    def mix(self, weighted: Sequence[tuple[Any, float]]) -> Any:
        """The condition between several: ``sum_k w_k c_k`` of text embeddings."""
        if len(weighted) == 1:
            return weighted[0][0]
        return sum(w * c for c, w in weighted)

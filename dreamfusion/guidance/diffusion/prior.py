"""What Stable Diffusion and DeepFloyd IF share as SDS priors: a diffusers UNet, its
scheduler's ``abar_t``, cached text embeddings and batched noise prediction."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..base import Prior
from .text_cache import TextEmbeddingCache, model_key


@dataclass(frozen=True)
class DiffusersSettings:
    model: str                      # hub id or folder, as the user gave it
    folder: Path                    # where it lies on disk
    device: torch.device
    half_precision: bool = True     # fp16 on CUDA
    render_size: int = 512
    cache_dir: Path | None = None   # text embeddings; None: no disk cache

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.half_precision and self.device.type == "cuda" else torch.float32


class DiffusersPrior(Prior):
    """Subclasses load the text encoder (lazily) and define ``encode``.

    ``load(settings)`` reads a diffusers folder; the constructor takes built modules, so that
    a benchmark can use a random-weight model of the real size without any file.
    """

    subfolders: tuple[str, ...] = ("scheduler", "tokenizer", "text_encoder", "unet")
    text_encoder_class = "CLIPTextModel"          # a transformers class name

    @classmethod
    def load(cls, s: DiffusersSettings) -> "DiffusersPrior":
        from diffusers import DDPMScheduler, UNet2DConditionModel

        scheduler = DDPMScheduler.from_pretrained(s.folder, subfolder="scheduler")
        unet = UNet2DConditionModel.from_pretrained(s.folder, subfolder="unet", torch_dtype=s.dtype)
        return cls(s, unet, scheduler, **cls._load_extra(s))

    @classmethod
    def _load_extra(cls, s: DiffusersSettings) -> dict[str, Any]:
        return {}

    def __init__(self, s: DiffusersSettings, unet: Any, scheduler: Any) -> None:
        self.settings, self.device, self.dtype = s, s.device, s.dtype
        self.alphas_cumprod = scheduler.alphas_cumprod.float().cpu()
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        self.unet = _on(unet, self.device, self.dtype)
        self._text_encoder: Any = None
        self._tokenizer: Any = None
        key = model_key(s.folder) if s.folder.is_dir() else str(s.folder)
        self.text = TextEmbeddingCache(s.cache_dir, key + type(self).__name__, self._encode_text)
        self._uncond: torch.Tensor | None = None

    # text -------------------------------------------------------------------------------
    def _load_text_encoder(self) -> tuple[Any, Any]:
        import transformers

        folder = self.settings.folder
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
        encoder = getattr(transformers, self.text_encoder_class).from_pretrained(
            folder, subfolder="text_encoder", dtype=self.dtype)
        return tokenizer, encoder.to(self.device).eval().requires_grad_(False)

    def _text_inputs(self, prompt: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def _encode_text(self, prompt: str) -> torch.Tensor:
        if self._text_encoder is None:        # only on a cache miss: T5-XXL is 9 GB at fp16
            self._tokenizer, self._text_encoder = self._load_text_encoder()
        inputs = {k: v.to(self.device) for k, v in self._text_inputs(prompt).items()}
        return self._text_encoder(**inputs)[0].float()

    def release_text_encoder(self) -> None:
        self._tokenizer = self._text_encoder = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def condition(self, prompt: str) -> torch.Tensor:
        return self.text.get(prompt).to(self.device)

    def unconditional(self) -> torch.Tensor:
        if self._uncond is None:
            self._uncond = self.condition("")
        return self._uncond

    # noise ------------------------------------------------------------------------------
    def _eps(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        out = out.float()[:, : x_t.shape[1]]       # IF also predicts a variance: drop it
        if self.prediction_type == "v_prediction":
            abar = self.alphas_cumprod.to(x_t.device)[t.cpu()].view(-1, 1, 1, 1)
            out = abar.sqrt() * out + (1.0 - abar).sqrt() * x_t.float()
        return out

    @torch.no_grad()
    def predict_noise_many(self, x_t: torch.Tensor, t: torch.Tensor,
                           conditions: Sequence[Any]) -> list[torch.Tensor]:
        """One UNet call for all conditions, stacked along the batch."""
        b, k = x_t.shape[0], len(conditions)
        x = x_t.to(self.device, self.dtype).repeat(k, 1, 1, 1)
        emb = torch.cat([c.to(self.device, self.dtype).expand(b, -1, -1) for c in conditions])
        steps = t.to(self.device).repeat(k)
        out = self.unet(x, steps, encoder_hidden_states=emb).sample
        eps = self._eps(x_t.to(self.device).repeat(k, 1, 1, 1), steps, out)
        return list(eps.split(b))

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, condition: Any) -> torch.Tensor:
        return self.predict_noise_many(x_t, t, [condition])[0]

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        size = self.settings.render_size
        if images.shape[-2:] != (size, size):
            images = torch.nn.functional.interpolate(images, (size, size), mode="bilinear",
                                                     align_corners=False)
        return images


def _on(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """The frozen module on ``device`` in ``dtype`` (cast only when it differs: diffusers warns
    on every dtype cast of a loaded model)."""
    if module.dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)

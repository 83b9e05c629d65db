"""Stable Diffusion (1.x / 2.x, any diffusers-format checkpoint) as a latent-space SDS prior."""
from __future__ import annotations

from typing import Any

import torch

from .prior import DiffusersPrior, DiffusersSettings, _on, diffusers_dtype, loading_part


class StableDiffusionPrior(DiffusersPrior):
    text_encoder_class = "CLIPTextModel"
    subfolders = ("scheduler", "tokenizer", "text_encoder", "unet", "vae")
    pipelines = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")

    @classmethod
    def _load_extra(cls, s: DiffusersSettings) -> dict[str, Any]:
        from diffusers import AutoencoderKL

        with loading_part(s, "vae"):
            vae = AutoencoderKL.from_pretrained(s.folder, subfolder="vae", variant=s.variant("vae"),
                                                **diffusers_dtype(s.dtype))
        return {"vae": vae}

    def __init__(self, s: DiffusersSettings, unet: Any, scheduler: Any, vae: Any) -> None:
        if unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(f"its UNet takes {unet.config.in_channels} channels but its VAE makes "
                             f"{vae.config.latent_channels} (an inpainting or other model)")
        super().__init__(s, unet, scheduler)
        self.vae = _on(vae, self.device, self.dtype)
        # both read from the model, never assumed (SD 1/2: 0.18215 and 8)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.shift_factor = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        self.downsampling = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def pixels_per_sample(self) -> int:       # type: ignore[override]
        return self.downsampling

    def _text_inputs(self, prompt: str) -> dict[str, torch.Tensor]:
        tokens = self._tokenizer(prompt, padding="max_length", truncation=True,
                                 max_length=self._tokenizer.model_max_length, return_tensors="pt")
        return {"input_ids": tokens.input_ids}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Renders (B, 3, H, W) in [0, 1] -> latents (B, C, S/f, S/f), S = render_size,
        differentiably through the VAE encoder (its posterior mean, so SDS's only noise is
        the diffusion's)."""
        x = self._resize(images) * 2.0 - 1.0
        posterior = self.vae.encode(x.to(self.device, self.dtype)).latent_dist
        return ((posterior.mean - self.shift_factor) * self.scaling_factor).float()

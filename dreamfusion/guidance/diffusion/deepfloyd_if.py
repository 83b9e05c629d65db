"""DeepFloyd IF stage I as a pixel-space SDS prior (64 x 64), with its T5 text encoder."""
from __future__ import annotations

import torch

from .prior import DiffusersPrior

MAX_TOKENS = 77           # what the IF pipeline encodes prompts to


class DeepFloydIFPrior(DiffusersPrior):
    text_encoder_class = "T5EncoderModel"
    subfolders = ("scheduler", "tokenizer", "text_encoder", "unet")
    pipelines = ("IFPipeline", "IFImg2ImgPipeline")

    def _text_inputs(self, prompt: str) -> dict[str, torch.Tensor]:
        # as IFPipeline prepares text for T5 (without its optional caption cleaning, which
        # needs bs4 and ftfy): lower case, no surrounding white space
        tokens = self._tokenizer(prompt.lower().strip(), padding="max_length", truncation=True,
                                 max_length=MAX_TOKENS, add_special_tokens=True,
                                 return_tensors="pt")
        return {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel space: renders resized to ``render_size`` (64 for stage I), in [-1, 1]."""
        return (self._resize(images) * 2.0 - 1.0).to(self.device).float()

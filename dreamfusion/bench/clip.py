"""CLIP R-Precision: does a render retrieve its own caption among all the captions?

R@1 = the share of renders whose own caption has the highest cosine similarity to the render
among every caption of the set (Dream Fields' and DreamFusion's protocol).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..guidance.diffusion.weights import is_offline

# the names of DreamFusion's Table 1 columns, and the public weights of each
CLIP_MODELS = {"B/32": "openai/clip-vit-base-patch32", "B/16": "openai/clip-vit-base-patch16",
               "L/14": "openai/clip-vit-large-patch14"}
# CLIP's own input normalisation, used when a folder has no preprocessor_config.json
_MEAN = (0.48145466, 0.4578275, 0.40821073)
_STD = (0.26862954, 0.26130258, 0.27577711)


def normalise_caption(caption: str) -> str:
    """Dream Fields' normalisation of a caption for CLIP: ``q.lower().strip(' .,') + '.'``."""
    return caption.lower().strip(" .,") + "."


@dataclass
class ClipScorer:
    """A CLIP model (transformers format) that embeds captions and rendered images."""
    name: str
    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device

    @classmethod
    def load(cls, name_or_path: str, device: torch.device) -> "ClipScorer":
        """From a local folder, the Hugging Face cache, or the hub (unless ``HF_HUB_OFFLINE``);
        a short name (``B/32``, ``B/16``, ``L/14``) means OpenAI's weights."""
        from transformers import CLIPModel, CLIPTokenizer

        source = CLIP_MODELS.get(name_or_path, name_or_path)
        local = Path(source).expanduser()
        where = str(local) if local.is_dir() else source
        only_local = is_offline() or local.is_dir()
        try:
            model = CLIPModel.from_pretrained(where, local_files_only=only_local)
            tokenizer = CLIPTokenizer.from_pretrained(where, local_files_only=only_local)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load CLIP {name_or_path!r} (tried {source!r}): {first}; pass "
                            f"--clip /path/to/a/transformers/CLIP/folder") from None
        mean, std = _MEAN, _STD
        config = local / "preprocessor_config.json"
        if config.is_file():
            import json

            data = json.loads(config.read_text())
            mean, std = tuple(data.get("image_mean", mean)), tuple(data.get("image_std", std))
        model = model.to(device).eval()
        return cls(name_or_path, model, tokenizer, model.config.vision_config.image_size,
                   mean, std, device)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit vectors (len(texts), D)."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        out = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
        return torch.nn.functional.normalize(_features(out).float(), dim=-1).cpu()

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) of images (B, 3, S, S) in [0, 1], already at ``image_size``."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"images must be {self.image_size} px square for {self.name}")
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        pixels = ((images.float().cpu() - mean) / std).to(self.device)
        out = self.model.get_image_features(pixel_values=pixels)
        return torch.nn.functional.normalize(_features(out).float(), dim=-1).cpu()


def _features(out: object) -> torch.Tensor:
    """transformers returns a tensor, or (from 5.x) an output object holding the projection."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("text_embeds", "image_embeds", "pooler_output"):
        value = getattr(out, attr, None)
        if value is not None:
            return value
    raise TypeError(f"unexpected CLIP output {type(out).__name__}")


def r_precision(text_embeddings: torch.Tensor, image_embeddings: torch.Tensor,
                own: torch.Tensor) -> tuple[float, torch.Tensor]:
    """R@1 of images (N, D) against captions (C, D), ``own[i]`` the index of image i's caption.

    Returns R@1 and each image's rank of its own caption (0 = retrieved first). Ties count
    against the image: its caption must score strictly above every other caption.
    """
    sims = image_embeddings @ text_embeddings.T                    # (N, C)
    own_sims = sims.gather(1, own.view(-1, 1))
    ranks = (sims >= own_sims).sum(dim=1) - 1
    return float((ranks == 0).float().mean()), ranks

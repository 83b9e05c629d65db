"""What Stable Diffusion and DeepFloyd IF share as SDS priors: a diffusers UNet, its
scheduler's ``abar_t``, cached text embeddings and batched noise prediction."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from omegaconf import DictConfig

from ...errors import UserError
from ...rendering.cameras import Cameras
from ...utils.tensor_cache import default_cache_dir
from ..base import Prior
from .text_cache import TextEmbeddingCache, model_key
from .weights import weight_variant


@dataclass(frozen=True)
class DiffusersSettings:
    model: str                      # hub id or folder, as the user gave it
    folder: Path                    # where it lies on disk
    device: torch.device
    half_precision: bool = True     # fp16 on CUDA
    render_size: int | None = None  # None: the model's own size (``DiffusersPrior.render_size``)
    cache_dir: Path | None = None   # text embeddings; None: no disk cache

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.half_precision and self.device.type == "cuda" else torch.float32

    def variant(self, subfolder: str) -> str | None:
        """``fp16`` where the weights load in half precision and the folder has fp16 files:
        half the download and no cast at load."""
        return weight_variant(self.folder, subfolder, "fp16" if self.dtype == torch.float16 else None)


def transformers_dtype(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype argument of transformers' ``from_pretrained``: ``dtype`` from 4.56 on (where
    ``torch_dtype`` is deprecated), ``torch_dtype`` before (where ``dtype`` is a TypeError)."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}


def diffusers_dtype(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype argument of diffusers' ``from_pretrained``: ``dtype`` from 0.40 on (where
    ``torch_dtype`` becomes the deprecated spelling), ``torch_dtype`` before (where ``dtype``
    is not read: the weights would load in float32)."""
    import diffusers

    major, minor = (int(p) for p in diffusers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (0, 40) else "torch_dtype": dtype}


class DiffusersPrior(Prior):
    """Subclasses load the text encoder (lazily) and define ``encode``.

    ``load(settings)`` reads a diffusers folder; the constructor takes built modules, so that
    a benchmark can use a random-weight model of the real size without any file.
    """

    subfolders: tuple[str, ...] = ("scheduler", "tokenizer", "text_encoder", "unet")
    pipelines: tuple[str, ...] = ()               # model_index.json classes this prior takes
    pixels_per_sample = 1                         # image pixels per UNet sample, per side
    text_encoder_class = "CLIPTextModel"          # a transformers class name

    @classmethod
    def load(cls, s: DiffusersSettings) -> "DiffusersPrior":
        """The prior from a diffusers folder; a ``UserError`` naming the part that would not
        load (a model that cannot be loaded is bad input: no run starts)."""
        from diffusers import DDPMScheduler, UNet2DConditionModel

        with loading_part(s, "scheduler"):
            scheduler = DDPMScheduler.from_pretrained(s.folder, subfolder="scheduler")
        with loading_part(s, "unet"):
            unet = UNet2DConditionModel.from_pretrained(
                s.folder, subfolder="unet", variant=s.variant("unet"), **diffusers_dtype(s.dtype))
        return cls(s, unet, scheduler, **cls._load_extra(s))

    @classmethod
    def _load_extra(cls, s: DiffusersSettings) -> dict[str, Any]:
        return {}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> Path:
        """The folder of the weights ``guidance.model`` names; a ``UserError`` when they
        cannot be had (before any run folder exists)."""
        from .weights import check_pipeline, resolve_model

        g = cfg.guidance
        half = g.half_precision and cfg.device != "cpu" and torch.cuda.is_available()
        folder = resolve_model(g.model.strip(), cls.subfolders, "fp16" if half else None)
        check_pipeline(folder, cls.pipelines, g.prior)
        return folder

    @classmethod
    def from_config(cls, cfg: DictConfig, device: torch.device | None = None) -> "DiffusersPrior":
        g = cfg.guidance
        folder = cls.check_config(cfg)
        cache = None
        if g.text_cache:
            cache = Path(g.cache_dir) if g.cache_dir else default_cache_dir()
        settings = DiffusersSettings(g.model, folder, device or torch.device("cpu"),
                                     g.half_precision, g.render_size, cache)
        try:
            return cls.load(settings, **cls._config_extra(cfg))
        except ValueError as exc:       # loaded, but not a model this prior can use
            raise UserError(f"cannot use the {g.prior} model from {str(folder)!r}: "
                            f"{exc}") from None

    @classmethod
    def memory_needs(cls, cfg: DictConfig, device: torch.device) -> dict[str, int]:
        """The weights of every part it loads (UNet, text encoder, VAE), counted from the
        folder's files, in the dtype they load in on ``device``: they share the memory with
        training (the text encoder until the prompts are encoded)."""
        from .weights import weight_elements

        folder = cls.check_config(cfg)
        half = cfg.guidance.half_precision and device.type == "cuda"
        variant = "fp16" if half else None
        parts = [p for p in cls.subfolders if p not in ("scheduler", "tokenizer")]
        count = sum(weight_elements(folder, p, variant) for p in parts)
        return {"prior weights": count * (2 if half else 4)}

    @classmethod
    def _config_extra(cls, cfg: DictConfig) -> dict[str, Any]:
        """``load``'s arguments besides the settings, from the config (MVDream: its
        checkpoint)."""
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

        s = self.settings
        with loading_part(s, "tokenizer"):
            tokenizer = transformers.AutoTokenizer.from_pretrained(s.folder, subfolder="tokenizer")
        with loading_part(s, "text_encoder"):
            encoder = getattr(transformers, self.text_encoder_class).from_pretrained(
                s.folder, subfolder="text_encoder", variant=s.variant("text_encoder"),
                **transformers_dtype(self.dtype))
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
    def predict_noise_many(self, x_t: torch.Tensor, t: torch.Tensor, conditions: Sequence[Any],
                           cameras: Cameras | None = None) -> list[torch.Tensor]:
        """One UNet call for all conditions, stacked along the batch. A condition holds one
        embedding for the batch or, stacked, one per sample."""
        b, k = x_t.shape[0], len(conditions)
        x = x_t.to(self.device, self.dtype).repeat(k, 1, 1, 1)
        emb = torch.cat([c.to(self.device, self.dtype).expand(b, -1, -1) for c in conditions])
        steps = t.to(self.device).repeat(k)
        out = self.unet(x, steps, encoder_hidden_states=emb, **self._unet_inputs(cameras, k)).sample
        eps = self._eps(x_t.to(self.device).repeat(k, 1, 1, 1), steps, out)
        return list(eps.split(b))

    def _unet_inputs(self, cameras: Cameras | None, repeats: int) -> dict[str, Any]:
        """The UNet's inputs besides latents, timesteps and text (MVDream: the cameras)."""
        return {}

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, condition: Any,
                      cameras: Cameras | None = None) -> torch.Tensor:
        return self.predict_noise_many(x_t, t, [condition], cameras)[0]

    def stack(self, conditions: Sequence[Any]) -> torch.Tensor:
        """(K, L, D): each view's text embedding."""
        return torch.cat(list(conditions))

    @property
    def render_size(self) -> int:
        """The side renders are resized to: as set, or the model's native image size, its
        UNet's ``sample_size`` times ``pixels_per_sample`` (SD 2.1-base: 64 x 8 = 512; a
        768-v model: 96 x 8 = 768; IF stage I: 64)."""
        return self.settings.render_size or int(self.unet.config.sample_size) * self.pixels_per_sample

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        size = self.render_size
        if images.shape[-2:] != (size, size):
            images = torch.nn.functional.interpolate(images, (size, size), mode="bilinear",
                                                     align_corners=False)
        return images


@contextmanager
def loading_part(s: DiffusersSettings, part: str) -> Iterator[None]:
    """Any failure to load ``part`` becomes one line naming it and the folder: a missing or
    corrupt file, a wrong kind of model, a missing library (``protobuf`` for a tokenizer that
    ships as ``spiece.model`` only)."""
    try:
        yield
    except Exception as exc:        # what from_pretrained raises varies by library and version
        text = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")
        raise UserError(f"cannot load the {part} of {s.model!r} (from {str(s.folder)!r}): "
                        f"{why}") from None


def _on(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """The frozen module on ``device`` in ``dtype`` (cast only when it differs: diffusers warns
    on every dtype cast of a loaded model)."""
    if module.dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)

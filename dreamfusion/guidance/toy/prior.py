"""The toy-world prior: the exact (closed-form) denoiser of each caption's reference images.

For a caption with reference images ``x_i`` the optimal denoiser is
``x0_hat(x_t) = sum_i softmax_i(-|x_t - sqrt(abar_t) x_i|^2 / (2 (1 - abar_t))) x_i`` and
``eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)``.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig

from ...rendering.cameras import Cameras
from ...rendering.shading import sample_light_directions
from ...utils.tensor_cache import cached_tensor, default_cache_dir
from ..base import Prior, RunInputs, scaled_linear_alphas_cumprod
from ...errors import UserError
from ..views import ViewRule, views_from_config
from .captions import COLORS, Caption, parse_caption
from .evaluate import silhouette_iou, toy_metrics
from .raytrace import trace
from .world import SHAPES

_VERSION = 1      # bump when the toy world's look changes, to invalidate caches


@dataclass(frozen=True)
class ReferenceSettings:
    """Everything that determines a caption's reference images (and so their cache key)."""
    size: int
    count: int
    elevation: tuple[float, float]
    distance: tuple[float, float]
    fov: tuple[float, float]
    light_jitter: float
    ambient: float
    diffuse: float
    background: tuple[float, float, float]
    front_bias: float
    views: tuple[ViewRule, ...]


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _region_azimuths(rule: ViewRule, n: int, g: torch.Generator) -> torch.Tensor:
    centers = torch.tensor(rule.azimuth_centers)[torch.randint(len(rule.azimuth_centers), (n,),
                                                                generator=g)]
    return centers + rule.half_width * (2.0 * torch.rand(n, generator=g) - 1.0)


def reference_cameras(caption: Caption, s: ReferenceSettings, count: int,
                      g: torch.Generator) -> Cameras:
    """Cameras for a caption's references: the training distribution, restricted to the
    caption's view region, or front-biased for a plain caption of an object with a front."""
    rules = {r.name: r for r in s.views}
    elev_lo, elev_hi = s.elevation
    if caption.view is not None:
        rule = rules[caption.view]
        azimuth = _region_azimuths(rule, count, g)
        lo, hi = max(elev_lo, rule.min_elevation), min(elev_hi, rule.max_elevation)
        if lo > hi:     # a region the training cameras never reach (overhead): use the region
            lo, hi = rule.min_elevation, min(rule.max_elevation, 89.0)
        elev_lo, elev_hi = lo, hi
    else:
        azimuth = 360.0 * torch.rand(count, generator=g) - 180.0
        if SHAPES[caption.shape].has_front and "front" in rules:
            biased = torch.rand(count, generator=g) < s.front_bias
            azimuth = torch.where(biased, _region_azimuths(rules["front"], count, g), azimuth)
    sin_lo, sin_hi = math.sin(math.radians(elev_lo)), math.sin(math.radians(elev_hi))
    elevation = torch.rad2deg(torch.asin(sin_lo + (sin_hi - sin_lo) * torch.rand(count, generator=g)))
    uni = lambda r: r[0] + (r[1] - r[0]) * torch.rand(count, generator=g)  # noqa: E731
    return Cameras(azimuth, elevation, uni(s.distance), uni(s.fov))


def render_references(caption: Caption, s: ReferenceSettings, count: int) -> torch.Tensor:
    """``count`` images (count, 3, size, size) in [0, 1], deterministic for the caption."""
    g = torch.Generator().manual_seed(_seed(_VERSION, caption.text, asdict(s), count))
    return trace_lit(caption, s, reference_cameras(caption, s, count, g), g)


def trace_lit(caption: Caption, s: ReferenceSettings, cameras: Cameras,
              g: torch.Generator) -> torch.Tensor:
    """(B, 3, size, size) renders in [0, 1] of ``cameras``, each lit from near its camera
    (lights drawn from ``g``), traced 16 at a time to bound memory."""
    lights = sample_light_directions(cameras.positions, s.light_jitter, g)
    images = [trace(caption, cameras[i:i + 16], s.size, lights[i:i + 16], s.background,
                    s.ambient, s.diffuse).rgb for i in range(0, len(cameras), 16)]
    return torch.cat(images).permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class ReferenceSet:
    """A toy condition: references ``(N, D)`` float64 in [-1, 1], their squared norms
    ``(N,)`` and their log prior weights ``(N,)`` (uniform within a caption; a mixture of
    captions weights each caption's set). Kept in float64, norms included, because the
    denoiser works in float64 (see ``optimal_denoiser_eps``): converting and summing the
    references again at every step was most of a 64-pixel step's denoising time."""
    images: torch.Tensor
    square_norms: torch.Tensor
    log_weights: torch.Tensor

    @staticmethod
    def uniform(images: torch.Tensor) -> "ReferenceSet":
        n = images.shape[0]
        refs = images.double()
        return ReferenceSet(refs, (refs * refs).sum(-1),
                            torch.full((n,), -math.log(n), dtype=torch.float64))


def reference_settings(cfg: DictConfig) -> ReferenceSettings:
    """The references a run's config asks for; its renders must be square."""
    if cfg.height != cfg.width:
        raise UserError("the toy prior renders square references: set height == width")
    g = cfg.guidance
    return ReferenceSettings(
        size=cfg.height, count=g.references, elevation=tuple(cfg.camera.elevation),
        distance=tuple(cfg.camera.distance), fov=tuple(cfg.camera.fov),
        light_jitter=cfg.shading.light_jitter, ambient=cfg.shading.ambient,
        diffuse=cfg.shading.diffuse, background=tuple(cfg.background.color),
        front_bias=g.front_bias, views=views_from_config(cfg.prompt.views))


def cache_folder(cfg: DictConfig) -> Path | None:
    return Path(cfg.guidance.cache_dir) if cfg.guidance.cache_dir else None


class ToyWorldPrior(Prior):
    """Conditions are ``ReferenceSet``s; denoising is exact."""

    def __init__(self, settings: ReferenceSettings, uncond_per_caption: int,
                 cache_dir: Path | None = None) -> None:
        self.settings = settings
        self.uncond_per_caption = uncond_per_caption
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.alphas_cumprod = scaled_linear_alphas_cumprod()
        self._memory: dict[tuple[str, int], torch.Tensor] = {}
        self._uncond: torch.Tensor | None = None

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """The toy world's own checks: building it renders nothing yet."""
        cls.from_config(cfg)

    @classmethod
    def from_config(cls, cfg: DictConfig, device: torch.device | None = None) -> "ToyWorldPrior":
        return cls(reference_settings(cfg), cfg.guidance.uncond_per_caption, cache_folder(cfg))

    def evaluate(self, scene: Any, run: RunInputs, cfg: DictConfig, mesh: Any | None,
                 density_threshold: float) -> dict[str, Any]:
        """Every ground-truth score (``evaluate.toy_metrics``)."""
        return toy_metrics(scene, self, run.prompt, cfg, None if mesh is None else mesh.vertices,
                           None if mesh is None else mesh.faces, density_threshold)

    def progress_metrics(self, scene: Any, run: RunInputs, cfg: DictConfig) -> dict[str, float]:
        """The curve of IoU against step: 8 views at 15 deg, about 0.2 s."""
        iou = silhouette_iou(scene, self.parse(run.prompt), cfg, elevations=(15.0,),
                             yaw_step=45.0)
        return {"eval_silhouette_iou": round(iou.iou, 4)}

    def summary_line(self, metrics: dict[str, Any]) -> str | None:
        m = metrics
        return (f"toy ground truth: silhouette IoU {m['silhouette_iou']:.3f} over 8 azimuths x "
                f"2 elevations (side views {m['side_iou']:.3f}; {m['best_yaw_iou']:.3f} after the "
                f"best yaw, {m['best_yaw']:+.0f} deg); colour error {m['colour_error']:.3f}; "
                f"toy R@1 {m['toy_r_precision']:.2f}")

    def parse(self, prompt: str) -> Caption:
        return parse_caption(prompt, tuple(r.name for r in self.settings.views))

    def references(self, caption: Caption, count: int) -> torch.Tensor:
        """The caption's reference images (count, 3, H, W), from memory, disk or rendered."""
        key = (caption.text, count)
        if key not in self._memory:
            path = self.cache_path(_VERSION, caption.text, count, asdict(self.settings))
            self._memory[key], _ = cached_tensor(
                path, lambda: render_references(caption, self.settings, count))
        return self._memory[key]

    def cache_path(self, *key: object) -> Path:
        """Where renders named by ``key`` (everything that determines them) are cached."""
        name = hashlib.sha256(json.dumps(list(key), default=str).encode()).hexdigest()[:24]
        return self.cache_dir / "toy" / f"{name}.safetensors"

    def condition(self, prompt: str) -> ReferenceSet:
        caption = self.parse(prompt)
        images = self.references(caption, self.settings.count)
        # the encoded copy is what a run keeps: the images again would double the prior's
        # memory (200 MB at a refine stage's 64 pixels); they reload from the disk cache
        self._memory.pop((caption.text, self.settings.count), None)
        return ReferenceSet.uniform(self.encode(images).flatten(1))

    def unconditional(self) -> ReferenceSet:
        """The union of every plain caption's first references: the toy world's marginal."""
        if self._uncond is None:
            sets = [self.references(Caption(c, s), self.uncond_per_caption)
                    for s in SHAPES for c in COLORS]
            self._uncond = ReferenceSet.uniform(self.encode(torch.cat(sets)).flatten(1))
        return self._uncond

    def mix(self, weighted: Sequence[tuple[Any, float]]) -> ReferenceSet:
        """The mixture ``sum_k w_k p_k`` of the captions' image distributions: the toy
        world's counterpart of interpolating text embeddings."""
        if len(weighted) == 1:
            return weighted[0][0]
        images = torch.cat([c.images for c, _ in weighted])
        norms = torch.cat([c.square_norms for c, _ in weighted])
        log_w = torch.cat([c.log_weights + math.log(w) for c, w in weighted])
        return ReferenceSet(images, norms, log_w)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2.0 - 1.0

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, condition: ReferenceSet,
                      cameras: Cameras | None = None) -> torch.Tensor:
        """Exact for single views: the references' cameras follow the caption, not the render."""
        return optimal_denoiser_eps(x_t, self.alphas_cumprod.to(x_t.device)[t.cpu()],
                                    condition.images, condition.log_weights,
                                    condition.square_norms)


def optimal_denoiser_eps(x_t: torch.Tensor, abar: torch.Tensor, refs: torch.Tensor,
                         log_weights: torch.Tensor | None = None,
                         square_norms: torch.Tensor | None = None) -> torch.Tensor:
    """Exact ``eps_hat`` for the empirical distribution ``sum_i pi_i delta(x_i)`` of ``refs``
    (N, D) with ``log pi_i = log_weights`` (uniform when None); x_t (B, ...).
    ``square_norms`` (N,) are ``|x_i|^2`` where the caller keeps them, else computed.
    Float64 throughout: expanding ``|x_t - sqrt(abar) x_i|^2`` cancels terms of size ``D``,
    and at low noise ``1 / (2 (1 - abar))`` scales what float32 would lose into logits."""
    shape = x_t.shape
    x = x_t.reshape(shape[0], -1).double()
    a = abar.double().view(-1, 1)
    r = refs.to(x.device).double()          # no copy where ``refs`` is float64 already
    norms = (r * r).sum(-1) if square_norms is None else square_norms.to(x.device).double()
    sq = (x * x).sum(-1, keepdim=True) - 2.0 * a.sqrt() * (x @ r.T) + a * norms
    logits = -sq / (2.0 * (1.0 - a))
    if log_weights is not None:
        logits = logits + log_weights.to(x.device).double()
    weights = torch.softmax(logits, dim=-1)
    x0 = weights @ r
    eps = (x - a.sqrt() * x0) / (1.0 - a).sqrt()
    return eps.to(x_t.dtype).view(shape)

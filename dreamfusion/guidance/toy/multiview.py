"""The toy world's multi-view prior: the exact denoiser of tuples of K views of one object.

A reference tuple is K renders of one toy object from cameras at azimuths ``a, a + 360/K,
...`` around a base camera ``c_i = (a, e)`` drawn as the single-view references' cameras are
(front-biased for a plain caption of an object with a front). The distribution a multi-view
sample is denoised under is the tuples' conditioned on the render's base camera ``c`` by a
kernel over base cameras, ``p(x | c) = sum_i k(c, c_i) delta(x - x_i) / sum_i k(c, c_i)``
with ``log k = -(d_az^2 + d_el^2) / (2 sigma^2)`` (degrees): MVDream embeds each view's camera,
and the tuples nearest the render's cameras are what such a model has learnt there. Its
exact denoiser is the single-view one over whole tuples:
``x0_hat(x_t) = sum_i softmax_i(log k(c, c_i) - |x_t - sqrt(abar_t) x_i|^2 / (2 (1 - abar_t))) x_i``
with the distance summed over the K views, so all views of a reference move together.

A view prompt for view j (``..., side view``) keeps the tuples whose j-th camera lies in
that view's region (``views.view_of``), as the single-view references of that prompt do;
interpolated view prompts weight them by their mixture weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from omegaconf import DictConfig

from ...rendering.cameras import Cameras
from ...utils.tensor_cache import cached_tensor
from ..views import view_of
from .captions import COLORS, Caption
from .prior import (_VERSION, ReferenceSettings, ToyWorldPrior, _seed, cache_folder,
                    optimal_denoiser_eps, reference_cameras, reference_settings, trace_lit)
from .world import SHAPES


@dataclass(frozen=True)
class ViewCaptions:
    """One view's prompt: captions of one object and their mixture weights (one caption, or
    neighbouring view prompts when they are interpolated)."""
    captions: tuple[tuple[Caption, float], ...]


@dataclass(frozen=True)
class TupleCondition:
    """The plain captions whose tuples make up the distribution (one object, or every
    object for the unconditional), and what each of the K views' prompts asks of its view
    (empty: nothing, as for the unconditional)."""
    objects: tuple[Caption, ...]
    views: tuple[ViewCaptions, ...] = ()


@dataclass
class Tuples:
    images: torch.Tensor      # (N, K * D) float64 in [-1, 1], view-major within a tuple
    square_norms: torch.Tensor  # (N,) |images|^2, kept as ``ReferenceSet`` keeps them
    azimuth: torch.Tensor     # (N, K) degrees
    elevation: torch.Tensor   # (N, K) degrees
    log_weights: torch.Tensor  # (N,) log prior weight of each tuple
    labels: list[list[str]]   # (N, K) the view rule each camera falls in


def tuple_cameras(caption: Caption, s: ReferenceSettings, count: int, views: int,
                  g: torch.Generator) -> Cameras:
    """``count * views`` cameras, tuple-major: each base camera (the single-view references'
    distribution) followed by its turns of ``360 / views`` degrees."""
    base = reference_cameras(caption, s, count, g)
    offsets = torch.arange(views, dtype=torch.float32) * 360.0 / views
    azimuth = ((base.azimuth.unsqueeze(1) + offsets + 180.0) % 360.0 - 180.0).reshape(-1)
    rep = lambda v: v.repeat_interleave(views)  # noqa: E731
    return Cameras(azimuth, rep(base.elevation), rep(base.distance), rep(base.fov))


def render_tuples(caption: Caption, s: ReferenceSettings, count: int,
                  views: int) -> torch.Tensor:
    """(count * views, 3, size, size) renders in [0, 1], tuple-major, deterministic for the
    caption (the cache holds the images; ``tuple_cameras`` remakes their cameras from the
    same seed)."""
    g = _tuple_generator(caption, s, count, views)
    return trace_lit(caption, s, tuple_cameras(caption, s, count, views, g), g)


def _tuple_generator(caption: Caption, s: ReferenceSettings, count: int,
                     views: int) -> torch.Generator:
    """The generator a caption's tuples' cameras (then lights) are drawn from."""
    return torch.Generator().manual_seed(_seed(_VERSION, "tuples", caption.text, asdict(s),
                                               count, views))


def _turned(images: torch.Tensor, azimuth: torch.Tensor, elevation: torch.Tensor,
            labels: list[list[str]]) -> Tuples:
    """Each tuple (N, K, D) with its views turned to start at each of its K cameras: the same
    renders, each view once the base. Which view comes first is arbitrary, so this is the
    same data K times as dense in base azimuth (and no longer front-biased in it)."""
    n, k = azimuth.shape
    order = [[(j + r) % k for j in range(k)] for r in range(k)]
    turned = torch.cat([images[:, o].reshape(n, -1) for o in order])
    return Tuples(turned, (turned * turned).sum(-1),
                  torch.cat([azimuth[:, o] for o in order]),
                  torch.cat([elevation[:, o] for o in order]),
                  torch.full((n * k,), -math.log(n * k), dtype=torch.float64),
                  [[row[j] for j in o] for o in order for row in labels])


class ToyMultiviewPrior(ToyWorldPrior):
    """``guidance.prior=toy_multiview``: conditions are ``TupleCondition``s; denoising is
    exact over tuples of ``views`` renders."""

    def __init__(self, settings: ReferenceSettings, uncond_per_caption: int, views: int,
                 camera_sigma: float, cache_dir=None) -> None:
        super().__init__(settings, uncond_per_caption, cache_dir)
        self.views = views
        self.camera_sigma = camera_sigma
        self._tuples: dict[tuple[str, int], Tuples] = {}
        self._joined: dict[tuple[Caption, ...], Tuples] = {}

    @classmethod
    def from_config(cls, cfg: DictConfig, device: torch.device | None = None
                    ) -> "ToyMultiviewPrior":
        return cls(reference_settings(cfg), cfg.guidance.uncond_per_caption,
                   cfg.camera.views_per_sample, cfg.guidance.camera_sigma, cache_folder(cfg))

    def tuples(self, caption: Caption, count: int) -> Tuples:
        """A plain caption's ``count`` reference tuples, from memory, disk or rendered."""
        key = (caption.text, count)
        if key not in self._tuples:
            s, k = self.settings, self.views
            images, _ = cached_tensor(
                self.cache_path(_VERSION, "tuples", caption.text, count, k, asdict(s)),
                lambda: render_tuples(caption, s, count, k))
            cams = tuple_cameras(caption, s, count, k, _tuple_generator(caption, s, count, k))
            labels = [view_of(float(a), float(e), s.views).name
                      for a, e in zip(cams.azimuth, cams.elevation)]
            self._tuples[key] = _turned(
                self.encode(images).double().view(count, k, -1), cams.azimuth.view(count, k),
                cams.elevation.view(count, k), [labels[i * k:(i + 1) * k] for i in range(count)])
        return self._tuples[key]

    def _joined_tuples(self, objects: tuple[Caption, ...]) -> Tuples:
        """Every object's tuples, each object weighted equally."""
        if objects not in self._joined:
            count = self.settings.count if len(objects) == 1 else self.uncond_per_caption
            parts = [self.tuples(c, count) for c in objects]
            self._joined[objects] = Tuples(
                torch.cat([p.images for p in parts]), torch.cat([p.square_norms for p in parts]),
                torch.cat([p.azimuth for p in parts]),
                torch.cat([p.elevation for p in parts]),
                torch.cat([p.log_weights for p in parts]) - math.log(len(parts)),
                [row for p in parts for row in p.labels])
        return self._joined[objects]

    def condition(self, prompt: str) -> TupleCondition:
        caption = self.parse(prompt)
        return TupleCondition((Caption(caption.color, caption.shape),),
                              (ViewCaptions(((caption, 1.0),)),))

    def unconditional(self) -> TupleCondition:
        return TupleCondition(tuple(Caption(c, s) for s in SHAPES for c in COLORS))

    def mix(self, weighted: Sequence[tuple[Any, float]]) -> TupleCondition:
        """One view's prompts mixed: the same object, its view regions weighted."""
        if len(weighted) == 1:
            return weighted[0][0]
        objects = {c.objects for c, _ in weighted}
        if len(objects) != 1 or any(len(c.views) != 1 for c, _ in weighted):
            raise ValueError("the toy multi-view prior mixes view prompts of one object only")
        captions = tuple((cap, w * cw) for c, w in weighted for cap, cw in c.views[0].captions)
        return TupleCondition(objects.pop(), (ViewCaptions(captions),))

    def stack(self, conditions: Sequence[Any]) -> TupleCondition:
        objects = {c.objects for c in conditions}
        if len(objects) != 1:
            raise ValueError("the views of a multi-view sample must show one object")
        if all(not c.views for c in conditions):
            return conditions[0]
        return TupleCondition(objects.pop(), tuple(c.views[0] for c in conditions))

    def _log_weights(self, tuples: Tuples, cond: TupleCondition, cameras: Cameras) -> torch.Tensor:
        """Each tuple's log prior weight given the render's base camera and the views'
        prompts."""
        az = (tuples.azimuth[:, 0].double() - float(cameras.azimuth[0]) + 180.0) % 360.0 - 180.0
        el = tuples.elevation[:, 0].double() - float(cameras.elevation[0])
        log_w = tuples.log_weights - (az ** 2 + el ** 2) / (2.0 * self.camera_sigma ** 2)
        for j, view in enumerate(cond.views):
            if all(cap.view is None for cap, _ in view.captions):
                continue            # a plain prompt keeps every tuple: log 1 = 0
            weight: dict[str | None, float] = {}
            for cap, w in view.captions:
                weight[cap.view] = weight.get(cap.view, 0.0) + w
            share = torch.tensor([weight.get(None, 0.0) + weight.get(row[j], 0.0)
                                  for row in tuples.labels], dtype=torch.float64)
            # no tuple of the prompt's view at all (a region the cameras never reach): the
            # prompt cannot restrict, and the camera kernel alone decides
            if bool((share > 0).any()):
                log_w = log_w + share.clamp_min(1e-300).log()
        return log_w

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, condition: TupleCondition,
                      cameras: Cameras | None = None) -> torch.Tensor:
        """x_t (K, C, H, W): one object's K views; ``cameras`` theirs (the first is the base)."""
        if x_t.shape[0] != self.views or cameras is None:
            raise ValueError(f"the toy multi-view prior denoises {self.views} views with "
                             f"their cameras at once, got {x_t.shape[0]}")
        tuples = self._joined_tuples(condition.objects)
        log_w = self._log_weights(tuples, condition, cameras)
        abar = self.alphas_cumprod.to(x_t.device)[t[:1].cpu()]
        eps = optimal_denoiser_eps(x_t.reshape(1, -1), abar, tuples.images, log_w,
                                   tuples.square_norms)
        return eps.view_as(x_t)

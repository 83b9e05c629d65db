"""What the prior is asked for at each camera: view prompts, their interpolation, Perp-Neg.

A camera gets a ``GuidanceTarget``: a positive prompt mixture (one prompt, or view prompts
weighted by ``view_weights``) and Perp-Neg's negative prompts with their weights. Priors turn
the prompts into conditions; ``sds.guided_noise`` combines the predictions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .views import ViewRule, angular_distance, view_of, view_weights

Weighted = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class GuidanceTarget:
    view: str              # the discrete view label, for logs
    positive: Weighted     # prompts and their mixture weights (summing to 1)
    negatives: Weighted    # Perp-Neg prompts and their weights (none without Perp-Neg)


@dataclass(frozen=True)
class PromptSettings:
    """``view_dependent``: add the view's suffix. ``interpolate``: mix the neighbouring view
    prompts by azimuth. ``perp_neg``: the front and side (or side and back) prompts are
    negatives whose component perpendicular to the positive direction is removed, weighted
    by ``perp_neg_weights`` times ``perp_neg_weight``."""
    prompt: str
    rules: tuple[ViewRule, ...]
    view_dependent: bool = True
    interpolate: bool = False
    perp_neg: bool = False
    perp_neg_weight: float = 1.0


def target_for(azimuth: float, elevation: float, s: PromptSettings) -> GuidanceTarget:
    if not s.view_dependent:
        return GuidanceTarget("plain", ((s.prompt, 1.0),), ())
    suffix = {r.name: r.suffix for r in s.rules}
    rule = view_of(azimuth, elevation, s.rules)
    weights = view_weights(azimuth, elevation, s.rules) if s.interpolate else {rule.name: 1.0}
    positive = tuple((s.prompt + suffix[name], w) for name, w in weights.items() if w > 0.0)
    negatives: Weighted = ()
    if s.perp_neg and not rule.all_around:
        # a weight of nearly 0 (the positive view's own prompt) would cost a UNet call for nothing
        negatives = tuple((s.prompt + suffix[name], s.perp_neg_weight * w)
                          for name, w in perp_neg_weights(azimuth).items() if w > 1e-3)
    return GuidanceTarget(rule.name, positive, negatives)


def _decay(a: float, b: float, c: float, r: float) -> float:
    return a * math.exp(-b * r) + c


def perp_neg_weights(azimuth: float) -> dict[str, float]:
    """Perp-Neg's negative weights at ``azimuth`` (Armandpour et al. 2023, with threestudio's
    interpolation): each is ``a exp(-b r) + c``, ``r`` the position between two anchors.

    Between front (0) and side (90), ``r = 1 - |azimuth| / 90``: front gets
    ``f_fs(r) = 4 e^(-r/2) - 2.426`` and side ``f_sf(1 - r)``, the same function; so at 0
    front 0 and side 1.57, at 90 front 1.57 and side 0. Between side and back (180),
    ``r = 2 - |azimuth| / 90``: side gets ``e^(-r/2) - 0.606`` and front ``e^(-r/2) + 0.967``;
    at 180 front 1.97 and side 0.39. The constants make each weight 0 where its view is
    the positive one, and the weights continuous at 90.
    """
    a = angular_distance(azimuth, 0.0)
    if a < 90.0:
        r = 1.0 - a / 90.0
        return {"front": _decay(4.0, 0.5, -2.426, r), "side": _decay(4.0, 0.5, -2.426, 1.0 - r)}
    r = 2.0 - a / 90.0
    return {"side": _decay(1.0, 0.5, -0.606, r), "front": _decay(1.0, 0.5, 0.967, r)}


def prompts_of(s: PromptSettings) -> list[str]:
    """Every prompt ``target_for`` can ask for under these settings."""
    return [s.prompt + r.suffix for r in s.rules] if s.view_dependent else [s.prompt]


def targets_for(azimuths: Sequence[float], elevations: Sequence[float],
                s: PromptSettings) -> list[GuidanceTarget]:
    return [target_for(float(a), float(e), s) for a, e in zip(azimuths, elevations)]

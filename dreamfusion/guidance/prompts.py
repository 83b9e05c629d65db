"""What the prior is asked for at each camera: view prompts, their interpolation, Perp-Neg.

A camera gets a ``GuidanceTarget``: a positive prompt mixture (one prompt, or view prompts
weighted by ``view_weights``) and Perp-Neg's negative prompts with their weights. Priors turn
the prompts into conditions; ``sds.guided_noise`` combines the predictions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .views import ViewRule, view_of, view_weights

Weighted = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class GuidanceTarget:
    view: str              # the discrete view label, for logs
    positive: Weighted     # prompts and their mixture weights (summing to 1)
    negatives: Weighted    # Perp-Neg prompts and their weights (none without Perp-Neg)


@dataclass(frozen=True)
class PromptSettings:
    """``view_dependent``: add the view's suffix. ``interpolate``: mix the neighbouring view
    prompts by azimuth. ``perp_neg``: every direction view that the positive mixture does
    not already hold, in proportion ``perp_neg_weight * (1 - w_view)``, is a negative prompt
    whose component perpendicular to the positive direction is removed."""
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
        directions = dict.fromkeys(r.name for r in s.rules if not r.all_around)
        negatives = tuple((s.prompt + suffix[name], s.perp_neg_weight * (1.0 - weights.get(name, 0.0)))
                          for name in directions if weights.get(name, 0.0) < 1.0)
    return GuidanceTarget(rule.name, positive, negatives)


def prompts_of(s: PromptSettings) -> list[str]:
    """Every prompt ``target_for`` can ask for under these settings."""
    return [s.prompt + r.suffix for r in s.rules] if s.view_dependent else [s.prompt]


def targets_for(azimuths: Sequence[float], elevations: Sequence[float],
                s: PromptSettings) -> list[GuidanceTarget]:
    return [target_for(float(a), float(e), s) for a, e in zip(azimuths, elevations)]

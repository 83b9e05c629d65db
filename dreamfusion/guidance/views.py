"""View-dependent prompting: view rules are data (from the config), not branches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class ViewRule:
    """A camera region and the prompt suffix used there.

    A camera matches when its elevation lies in ``[min_elevation, max_elevation]`` and its
    azimuth is within ``half_width`` degrees of one of ``azimuth_centers``. A rule that
    covers every azimuth (``half_width >= 180``, such as overhead) takes no part in
    interpolation: its centres are not directions around the object.
    """
    name: str
    suffix: str
    azimuth_centers: tuple[float, ...]
    half_width: float
    min_elevation: float = -90.0
    max_elevation: float = 90.0

    @property
    def all_around(self) -> bool:
        return self.half_width >= 180.0


def angular_distance(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def view_of(azimuth: float, elevation: float, rules: Sequence[ViewRule]) -> ViewRule:
    """The first rule that matches the camera (the last rule is the fallback)."""
    for rule in rules:
        if (rule.min_elevation <= elevation <= rule.max_elevation
                and min(angular_distance(azimuth, c) for c in rule.azimuth_centers)
                <= rule.half_width):
            return rule
    return rules[-1]


def view_weights(azimuth: float, elevation: float, rules: Sequence[ViewRule]) -> dict[str, float]:
    """Weights over the views for interpolating their prompts as the camera turns.

    The anchors are the azimuth centres of the rules that are directions (front 0, side
    +-90, back 180). Between the two anchors ``a`` (behind the camera's azimuth by ``d_a``
    degrees) and ``b`` (ahead by ``d_b``), ``w_a = d_b / (d_a + d_b)`` and
    ``w_b = d_a / (d_a + d_b)``. A camera inside an all-around region (overhead) gets that
    view alone.
    """
    rule = view_of(azimuth, elevation, rules)
    anchors = [(c, r.name) for r in rules if not r.all_around for c in r.azimuth_centers]
    if rule.all_around or not anchors:
        return {rule.name: 1.0}
    behind = min(anchors, key=lambda a: (azimuth - a[0]) % 360.0)
    ahead = min(anchors, key=lambda a: (a[0] - azimuth) % 360.0)
    d_behind, d_ahead = (azimuth - behind[0]) % 360.0, (ahead[0] - azimuth) % 360.0
    if d_behind == 0.0 or behind[1] == ahead[1]:
        return {behind[1]: 1.0}
    weights = {behind[1]: d_ahead / (d_behind + d_ahead)}
    weights[ahead[1]] = weights.get(ahead[1], 0.0) + d_behind / (d_behind + d_ahead)
    return weights


def views_from_config(rules: Sequence[Any]) -> tuple[ViewRule, ...]:
    """The view rules of ``prompt.views`` (mappings with the fields of ``ViewRule``)."""
    return tuple(ViewRule(r["name"], r["suffix"], tuple(r["azimuth_centers"]), r["half_width"],
                          r["min_elevation"], r["max_elevation"]) for r in rules)

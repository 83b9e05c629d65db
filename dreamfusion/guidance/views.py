"""View-dependent prompting: view rules are data (from the config), not branches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class ViewRule:
    """A camera region and the prompt suffix used there.

    A camera matches when its elevation lies in ``[min_elevation, max_elevation]`` and its
    azimuth is within ``half_width`` degrees of one of ``azimuth_centers``.
    """
    name: str
    suffix: str
    azimuth_centers: tuple[float, ...]
    half_width: float
    min_elevation: float = -90.0
    max_elevation: float = 90.0


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

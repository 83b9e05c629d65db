"""The toy world's captions: its vocabulary and the one prompt grammar it reads.

Apart from the shapes themselves (``world.py``, which needs torch), so that a prompt the toy
prior cannot read is refused before torch is imported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...errors import UserError

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10), "orange": (0.95, 0.50, 0.08), "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.65, 0.20), "blue": (0.12, 0.30, 0.85), "purple": (0.55, 0.20, 0.70),
    "white": (0.92, 0.92, 0.92),
}
SHAPE_NAMES = ("sphere", "cube", "cylinder", "cone", "torus", "duck")


@dataclass(frozen=True)
class Caption:
    color: str
    shape: str
    view: str | None = None

    @property
    def text(self) -> str:
        article = "an" if self.color[0] in "aeiou" else "a"
        suffix = f", {self.view} view" if self.view else ""
        return f"{article} {self.color} {self.shape}{suffix}"


def vocabulary() -> str:
    return f"colours: {', '.join(COLORS)}; shapes: {', '.join(SHAPE_NAMES)}"


def parse_caption(prompt: str, views: tuple[str, ...]) -> Caption:
    """Read "a red cube" or "a yellow duck, side view"; anything else is a ``UserError``."""
    text = prompt.strip().lower().rstrip(".")
    view = None
    match = re.fullmatch(r"(.*?),\s*(\w+) view", text)
    if match:
        text, view = match.group(1), match.group(2)
        if view not in views:
            raise UserError(f"unknown view {view!r} in prompt {prompt!r}; views: {', '.join(views)}")
    words = [w for w in re.split(r"\s+", text) if w and w not in ("a", "an", "the")]
    unknown = [w for w in words if w not in COLORS and w not in SHAPE_NAMES]
    if unknown:
        raise UserError(f"the toy prior does not know {unknown[0]!r} in {prompt!r}; "
                        f"it knows {vocabulary()}")
    colors = [w for w in words if w in COLORS]
    shapes = [w for w in words if w in SHAPE_NAMES]
    if len(colors) != 1 or len(shapes) != 1 or len(words) != 2:
        raise UserError(f"a toy prompt is 'a <colour> <shape>[, <view> view]', got {prompt!r}; "
                        f"it knows {vocabulary()}")
    return Caption(colors[0], shapes[0], view)


def check_words(prompt: str, cfg: Any) -> None:
    """The toy priors' prompt check (registry ``check_words``): the prompt and the negative
    prompt must be captions of the toy world, before torch is imported."""
    views = tuple(rule.name for rule in cfg.prompt.views)
    parse_caption(prompt, views)
    if cfg.prompt.negative.strip():
        parse_caption(cfg.prompt.negative, views)

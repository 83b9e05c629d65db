"""What the export and the evaluation read from any representation: its fields."""
from __future__ import annotations

from typing import Iterator, Protocol

import torch
from torch import nn


class Field(Protocol):
    """A density field and an albedo field inside the cube ``[-bound, bound]^3``."""
    bound: float

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) at ``points`` (N, 3)."""

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1] at ``points`` (N, 3)."""

    def parameters(self) -> Iterator[nn.Parameter]:
        """Its parameters: where the field lives (the device)."""

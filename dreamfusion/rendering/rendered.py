"""The images a representation renders for a batch of cameras."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Rendered:
    rgb: torch.Tensor        # (B, H, W, 3) composited over the background
    opacity: torch.Tensor    # (B, H, W)
    depth: torch.Tensor      # (B, H, W)
    n_samples: int           # samples (NeRF) or Gaussian-pixel pairs (splats) composited
    orientation: torch.Tensor | None = None   # () Ref-NeRF's penalty, where normals were taken
    # () regularizer terms the representation computes itself (a mesh: normal consistency,
    # Laplacian, offset decay), by ``pipeline.regularizers`` name
    terms: dict[str, torch.Tensor] = field(default_factory=dict)

"""The terms added to the SDS loss, and their weights over the run.

Each weight is a number or ``[start_step, start_value, end_value, end_step]`` (threestudio's
notation): linear between the two steps, constant outside them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..config.registry import MESH_TERMS
from ..rendering.rendered import Rendered

REGULARIZERS = ("orientation", "sparsity", "entropy") + MESH_TERMS


def weight_at(schedule: Any, step: int) -> float:
    """The weight that ``schedule`` gives at ``step`` (numbers may come as text: the override
    grammar reads ``1e-3`` as a string)."""
    if isinstance(schedule, (int, float, str)):
        return float(schedule)
    start_step, start, end, end_step = (float(v) for v in schedule)
    if step <= start_step:
        return start
    if step >= end_step:
        return end
    return start + (end - start) * (step - start_step) / (end_step - start_step)


def sparsity(out: Rendered) -> torch.Tensor:
    """``mean_rays sqrt(opacity^2 + 0.01)``: a smooth L1 pull of every ray towards empty."""
    return (out.opacity ** 2 + 0.01).sqrt().mean()


def entropy(out: Rendered) -> torch.Tensor:
    """``mean_rays H(opacity)``, ``H(a) = -a log2 a - (1 - a) log2 (1 - a)``: pushes each ray
    to be fully empty or fully opaque (no semi-transparent fog)."""
    a = out.opacity.clamp(1e-5, 1.0 - 1e-5)
    return (-a * torch.log2(a) - (1.0 - a) * torch.log2(1.0 - a)).mean()


def orientation(out: Rendered) -> torch.Tensor:
    """Ref-NeRF's orientation penalty (``rendering.volrend.orientation_loss``), from the render."""
    if out.orientation is None:
        raise ValueError("the orientation term needs a render with normals")
    return out.orientation


def _own(name: str) -> Callable[[Rendered], torch.Tensor]:
    """A term the representation computes from its own geometry (``Rendered.terms``): the
    mesh's normal consistency, Laplacian smoothness and offset decay."""
    def term(out: Rendered) -> torch.Tensor:
        if name not in out.terms:
            raise ValueError(f"the {name} term needs a representation that computes it (mesh)")
        return out.terms[name]
    term.__name__ = name
    return term


TERMS: dict[str, Callable[[Rendered], torch.Tensor]] = {
    "orientation": orientation, "sparsity": sparsity, "entropy": entropy,
    **{name: _own(name) for name in MESH_TERMS}}


def active_weights(regularizers: Any, step: int) -> dict[str, float]:
    """The terms with a weight above zero at ``step``, and their weights (a term that
    ``regularizers`` does not name is off)."""
    weights = {name: weight_at(regularizers.get(name, 0.0), step) for name in REGULARIZERS}
    return {name: w for name, w in weights.items() if w > 0.0}

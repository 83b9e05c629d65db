"""The terms added to the SDS loss, and their weights over the run.

Each weight is a number or ``[start_step, start_value, end_value, end_step]`` (threestudio's
notation): linear between the two steps, constant outside them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..rendering.rendered import Rendered

REGULARIZERS = ("orientation", "sparsity", "entropy")


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


TERMS: dict[str, Callable[[Rendered], torch.Tensor]] = {
    "orientation": orientation, "sparsity": sparsity, "entropy": entropy}


def active_weights(regularizers: Any, step: int) -> dict[str, float]:
    """The terms with a weight above zero at ``step``, and their weights."""
    weights = {name: weight_at(regularizers[name], step) for name in REGULARIZERS}
    return {name: w for name, w in weights.items() if w > 0.0}

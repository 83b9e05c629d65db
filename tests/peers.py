"""A representation and a stateful loss written outside the package, as a plugin would.

``register()`` adds them to the registry (``representation=flat``, ``guidance.loss=
sds_baseline``); the tests train, checkpoint, resume and export them through the CLI, so a
wiring that reached past the interfaces (into a NeRF's field, or the trainer's own list of
losses) would fail there. Importable by a child process (``python -c "import peers"``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dreamfusion.config import registry
from dreamfusion.export.mesh import Mesh
from dreamfusion.guidance.losses import Loss
from dreamfusion.guidance.sds import SDSLoss
from dreamfusion.rendering.rendered import Rendered
from dreamfusion.utils.atomic import write_text


class FlatColour(torch.nn.Module):
    """The smallest representation: one learnable colour filling a cube of side 1. An
    ``nn.Module``: the interface's names leave ``modules()`` and ``named_parameters()`` to it."""

    surface_level = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.colour = torch.nn.Parameter(torch.zeros(3))
        self.steps_seen: list[int] = []
        self.updates_seen: list[int] = []

    @property
    def field(self) -> "FlatColour":
        return self

    def render(self, cameras, height, width, mode="albedo", light_dirs=None,
               with_normals=False) -> Rendered:
        b = len(cameras)
        rgb = torch.sigmoid(self.colour).expand(b, height, width, 3)
        ones = torch.ones(b, height, width)
        return Rendered(rgb, ones, ones, b * height * width)

    def param_groups(self) -> list[dict]:
        return [{"params": [self.colour], "lr": 0.05}]

    def named_trainables(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [("colour", self.colour)]

    def before_step(self, step: int) -> None:
        self.steps_seen.append(step)

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        self.updates_seen.append(step)

    def set_step(self, step: int) -> None:
        pass

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return (points.abs().amax(dim=-1) <= 0.5).float()

    def checkpoint_modules(self) -> dict[str, torch.nn.Module]:
        return {"flat": self}

    def write_native(self, out_dir: Path) -> list[Path]:
        path = out_dir / "colour.txt"
        write_text(path, " ".join(f"{c:.6f}" for c in torch.sigmoid(self.colour).tolist()) + "\n")
        return [path]

    def export_mesh(self, settings) -> Mesh:
        """The cube itself, in its colour: a representation that is its own mesh."""
        corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5)
                            for z in (-0.5, 0.5)], dtype=np.float64)
        faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
        colours = np.tile(torch.sigmoid(self.colour).detach().numpy(), (8, 1))
        return Mesh(corners, faces, colours)

    def backend(self) -> tuple[str, str]:
        return "flat", "flat colour: nothing to choose"


def build_flat(cfg, device) -> FlatColour:
    return FlatColour().to(device)


class SDSWithBaseline(Loss):
    """SDS plus a learnt baseline: a parameter ``b`` fitted to the SDS loss by its own term
    and Adam group, and a running count and mean in the loss's checkpoint state."""

    def __init__(self, sds: SDSLoss) -> None:
        self.sds = sds
        self.baseline = torch.nn.Parameter(torch.zeros(()))
        self.updates = 0
        self.mean = torch.zeros(())

    @classmethod
    def from_config(cls, cfg) -> "SDSWithBaseline":
        return cls(SDSLoss.from_config(cfg))

    def needs_unconditional(self, perp_neg: bool) -> bool:
        return self.sds.needs_unconditional(perp_neg)

    def terms(self, prior, images, t, cond, cameras) -> dict[str, torch.Tensor]:
        terms = self.sds.terms(prior, images, t, cond, cameras)
        self._last = terms["loss_sds"].detach()
        terms["loss_baseline"] = (self.baseline - self._last) ** 2
        return terms

    def param_groups(self) -> list[dict]:
        return [{"params": [self.baseline], "lr": 0.1}]

    def named_trainables(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [("loss.baseline", self.baseline)]

    def after_step(self, step: int) -> None:
        self.updates += 1
        self.mean = self.mean + (self._last - self.mean) / self.updates

    def state_dict(self) -> dict:
        return {"baseline": self.baseline.detach().clone(), "updates": self.updates,
                "mean": self.mean.clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.baseline.copy_(state["baseline"])
        self.updates = int(state["updates"])
        self.mean = state["mean"].clone()


def _flat_needs(cfg) -> dict[str, int]:
    return {"one colour": 12}


FLAT = registry.RepresentationSpec("flat", build_flat, _flat_needs, ("flat",), None,
                                   "nothing (it is one colour)", "flat_backend")
BASELINE = registry.LossSpec("sds_baseline", SDSWithBaseline)


def register() -> None:
    registry.register_representation(FLAT, replace=True)
    registry.register_loss(BASELINE, replace=True)

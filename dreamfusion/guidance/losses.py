"""The interface of a distillation loss: what the trainer asks of SDS and of its successors.

A loss turns the renders of one sample (a camera, or the K views of one object for a
multi-view prior), the noise level, the resolved condition and the cameras into named terms
(``loss_*``: threestudio's convention), which the trainer sums into the step's loss. A loss
may own trainable state (VSD's LoRA): its parameter groups join the scene's in the
optimiser, its parameters are fault-checked with the scene's, and its ``state_dict`` is part
of every checkpoint, so a resumed run continues it bit for bit.
"""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from ..rendering.cameras import Cameras
from .base import Condition, Prior


class Loss:
    """A loss without state; subclasses implement ``terms`` and override what they own."""

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Loss":
        raise NotImplementedError(f"{cls.__name__} cannot be built from a config")

    def needs_unconditional(self, perp_neg: bool) -> bool:
        """Whether the conditions handed to ``terms`` must carry the unconditional one (the
        trainer then encodes the empty or negative prompt); ``perp_neg``: the run subtracts
        Perp-Neg's negatives, which are taken relative to it."""
        return True

    def terms(self, prior: Prior, images: torch.Tensor, t: torch.Tensor, cond: Condition,
              cameras: Cameras) -> dict[str, torch.Tensor]:
        """Named scalar terms (``loss_*``) of one sample: ``images`` (B, 3, H, W) in [0, 1],
        ``t`` (B,) integer timesteps, ``cameras`` the B cameras. The trainer averages each
        over the batch's samples and adds them up."""
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """Adam's parameter groups of the loss's own parameters, in a fixed order (after the
        scene's in the optimiser; ``lr_final`` decays as the scene's do)."""
        return []

    def named_trainables(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The parameters of ``param_groups``, named (for fault reports)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Everything the loss's next step depends on (tensors, numbers, strings: a
        checkpoint is read with ``weights_only=True``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s output (``{}`` from a checkpoint older than losses with
        state, which trained a loss without any)."""

    def after_step(self, step: int) -> None:
        """Work due after an applied update, the run now at ``step``."""

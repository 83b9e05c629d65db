"""The composition root: the scene, prior and loss a config names, through the registry.

Nothing here knows a representation, prior or loss by name: each is the registry entry the
config names (``config.registry``), whose builder is imported here, when it is built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from ..config import registry
from ..guidance.base import Prior
from ..guidance.losses import Loss
from ..guidance.views import ViewRule, views_from_config
from .representation import Representation

if TYPE_CHECKING:
    from ..config.registry import RepresentationSpec


def view_rules(cfg: DictConfig) -> tuple[ViewRule, ...]:
    return views_from_config(cfg.prompt.views)


def representation_spec(cfg: DictConfig) -> RepresentationSpec:
    return registry.representation(cfg.representation)


def build_scene(cfg: DictConfig, device: torch.device) -> Representation:
    """The representation ``cfg.representation`` names, on ``device``."""
    return registry.resolve(representation_spec(cfg).builder)(cfg, device)


def prior_class(cfg: DictConfig) -> type[Prior]:
    return registry.resolve(registry.prior(cfg.guidance.prior).builder)


def check_prior(cfg: DictConfig) -> None:
    """The prior's own checks before any work (its weights can be had, its settings fit)."""
    prior_class(cfg).check_config(cfg)


def build_prior(cfg: DictConfig, device: torch.device | None = None) -> Prior:
    return prior_class(cfg).from_config(cfg, device or torch.device("cpu"))


def build_loss(cfg: DictConfig) -> Loss:
    """The distillation loss ``cfg.guidance.loss`` names."""
    return registry.resolve(registry.loss(cfg.guidance.loss).builder).from_config(cfg)

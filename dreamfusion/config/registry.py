"""The registries: the representations, guidance losses and priors a config can name.

An entry is data, in the manner of threestudio's registry: what config checks, memory
estimates and the CLI's refusals read is here without torch, and the code that builds an
entry is named by a ``"module:attribute"`` path, imported only when it is built (by
``pipeline.build``, ``pipeline.inputs``). So a new representation, loss or prior is its own
package plus one entry: a line in ``_BUILTIN_*`` below, or a ``register_*`` call from
outside the package (a plugin, a test). A name that is not registered is refused wherever
it is looked up; nothing reads an unknown name as a default.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Union

# a callable, or the "package.module:attribute" path of one (imported on first use)
Ref = Union[str, Callable[..., Any]]


def resolve(ref: Ref) -> Any:
    """The object ``ref`` names."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class RepresentationSpec:
    """A scene representation that the trainer can optimise (``pipeline.representation``).

    ``builder(cfg, device)`` returns the ``Representation``; ``memory(cfg)`` the bytes a run
    certainly allocates, by part, the model's own state first (torch-free: it runs before any
    work); ``modules`` the names of the checkpoint's ``scene`` entries; ``section`` the config
    section of its own settings (None: it has none); ``model_keys`` the keys that size its
    model, which the memory refusal suggests lowering; ``backend_key`` the ``summary.json``
    name of the kernel it renders with; ``unsupported_regularizers`` the regularizers it
    cannot feed, whose weight must be 0."""
    name: str
    builder: Ref
    memory: Ref
    modules: tuple[str, ...]
    section: str | None
    model_keys: str
    backend_key: str
    unsupported_regularizers: tuple[str, ...] = ()


@dataclass(frozen=True)
class LossSpec:
    """A distillation loss (``guidance.losses.Loss``): ``builder(cfg)`` returns it."""
    name: str
    builder: Ref


@dataclass(frozen=True)
class PriorSpec:
    """A 2D prior (``guidance.base.Prior``). ``builder`` is its class: ``check_config(cfg)``
    runs before any folder exists, ``from_config(cfg, device)`` builds it. ``check_words
    (prompt, cfg)``, where given, refuses a prompt the prior cannot read, without torch;
    ``needs_model``: ``guidance.model`` must name its weights; ``multiview``: it denoises
    the views of one object together; ``ground_truth``: its ``evaluate`` scores a run against
    a truth (the toy world's), which the toy benches need; ``views_per_sample``: the only
    ``camera.views_per_sample`` its weights were trained for (None: any); ``own_keys``: the
    ``guidance`` keys only it reads, which another prior's config must leave empty."""
    name: str
    builder: Ref
    needs_model: bool = True
    multiview: bool = False
    check_words: Ref | None = None
    ground_truth: bool = False
    views_per_sample: int | None = None
    own_keys: tuple[str, ...] = ()


_LIMITS = "dreamfusion.config.limits"
# the regularizers only a mesh feeds (pipeline.regularizers), whose weights refine.* sets
MESH_TERMS = ("normal_consistency", "laplacian", "offset_decay")
_BUILTIN_REPRESENTATIONS = (
    RepresentationSpec("nerf", "dreamfusion.nerf.scene:build_nerf_scene", f"{_LIMITS}:nerf_needs",
                       ("field", "grid", "background"), "nerf",
                       "nerf.grid.table_size_log2, nerf.hidden", "hashgrid_backend",
                       unsupported_regularizers=MESH_TERMS),
    RepresentationSpec("gaussians", "dreamfusion.gaussians.scene:build_gaussian_scene",
                       f"{_LIMITS}:gaussian_needs", ("gaussians", "background"), "gaussians",
                       "gaussians.max_count", "rasteriser_backend",
                       unsupported_regularizers=("orientation",) + MESH_TERMS),
    RepresentationSpec("mesh", "dreamfusion.pipeline.refine:build_mesh_scene",
                       f"{_LIMITS}:mesh_needs", ("mesh", "background"), "refine",
                       "refine.tet_resolution, refine.render_size", "mesh_rasteriser_backend",
                       unsupported_regularizers=("orientation",)),
)
_BUILTIN_LOSSES = (
    LossSpec("sds", "dreamfusion.guidance.sds:SDSLoss"),
    LossSpec("recon", "dreamfusion.guidance.sds:ReconstructionLoss"),
)
_TOY_WORDS = "dreamfusion.guidance.toy.captions:check_words"
_BUILTIN_PRIORS = (
    PriorSpec("toy", "dreamfusion.guidance.toy.prior:ToyWorldPrior", needs_model=False,
              check_words=_TOY_WORDS, ground_truth=True),
    PriorSpec("toy_multiview", "dreamfusion.guidance.toy.multiview:ToyMultiviewPrior",
              needs_model=False, multiview=True, check_words=_TOY_WORDS, ground_truth=True),
    PriorSpec("stable_diffusion",
              "dreamfusion.guidance.diffusion.stable_diffusion:StableDiffusionPrior"),
    PriorSpec("deepfloyd_if", "dreamfusion.guidance.diffusion.deepfloyd_if:DeepFloydIFPrior"),
    # its published weights were trained on 4 views 90 degrees apart
    PriorSpec("mvdream", "dreamfusion.guidance.diffusion.mvdream:MVDreamPrior", multiview=True,
              views_per_sample=4, own_keys=("checkpoint", "checkpoint_config")),
)

REPRESENTATIONS: dict[str, RepresentationSpec] = {s.name: s for s in _BUILTIN_REPRESENTATIONS}
LOSSES: dict[str, LossSpec] = {s.name: s for s in _BUILTIN_LOSSES}
PRIORS: dict[str, PriorSpec] = {s.name: s for s in _BUILTIN_PRIORS}


class UnknownName(KeyError):
    """A name that no entry of a registry has (the config check names the key first)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _lookup(table: dict, kind: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise UnknownName(f"unknown {kind} {name!r} (registered: "
                          f"{', '.join(table)})") from None


def representation(name: str) -> RepresentationSpec:
    return _lookup(REPRESENTATIONS, "representation", name)


def loss(name: str) -> LossSpec:
    return _lookup(LOSSES, "guidance loss", name)


def prior(name: str) -> PriorSpec:
    return _lookup(PRIORS, "prior", name)


def _register(table: dict, spec: Any, replace: bool) -> None:
    if spec.name in table and not replace:
        raise ValueError(f"{spec.name!r} is registered already")
    table[spec.name] = spec


def register_representation(spec: RepresentationSpec, replace: bool = False) -> None:
    _register(REPRESENTATIONS, spec, replace)


def register_loss(spec: LossSpec, replace: bool = False) -> None:
    _register(LOSSES, spec, replace)


def register_prior(spec: PriorSpec, replace: bool = False) -> None:
    _register(PRIORS, spec, replace)

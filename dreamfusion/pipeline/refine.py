"""``dreamfusion refine RUN_DIR``: the mesh stage (Magic3D's second stage) after a NeRF or
Gaussian run, as a run of its own (``representation=mesh``) through the same ``run`` flow:
config, checkpoints, metrics, validation strips, turntable, meshes and ``summary.json``, in
``RUN_DIR/refine/<prompt>-<time>/``.

The stage's config is the first stage's own, with ``refine.*`` (and any override) deciding
what the stage changes (``STAGE_KEYS``); the mesh is initialised from the first stage's
newest checkpoint, which ``refine.source`` names, each time the stage's scene is built
(a resume then loads its own checkpoint over it).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..config.registry import MESH_TERMS
from ..config.validate import validate
from ..errors import UserError
from ..export.pipeline import export_settings
from ..mesh.geometry import MeshGeometry
from ..mesh.scene import MeshScene, SourceGrid, initialise, matched_level, source_grid
from ..nerf.hashgrid import HashGridEncoding
from ..rendering.cameras import Cameras
from ..rendering.mesh_raster import resolve_backend
from ..rendering.shading import Background
from .build import build_scene
from .checkpoint import load_scene, open_run
from .representation import Representation
from .run import RunResult, run

# what a refine run's config takes from its refine section: key -> refine key
STAGE_KEYS = {"steps": "steps", "height": "render_size", "width": "render_size",
              "guidance.t_max": "t_max", **{f"regularizers.{n}": n for n in MESH_TERMS}}
# and what it sets outright: the volume's own regularizers have nothing to act on
STAGE_VALUES = {"representation": "mesh", "regularizers.orientation": 0.0,
                "regularizers.sparsity": 0.0, "regularizers.entropy": 0.0,
                "refine.after": False}


def stage_config(source_cfg: DictConfig, source_dir: Path) -> DictConfig:
    """The refine run's config from the first stage's (with the user's overrides)."""
    cfg = OmegaConf.create(OmegaConf.to_container(source_cfg, resolve=True))
    for key, refine_key in STAGE_KEYS.items():
        OmegaConf.update(cfg, key, source_cfg.refine[refine_key], merge=False)
    for key, value in STAGE_VALUES.items():
        OmegaConf.update(cfg, key, value, merge=False)
    if source_cfg.refine.shading is not None:
        OmegaConf.update(cfg, "shading", dict(source_cfg.refine.shading), merge=True)
    OmegaConf.update(cfg, "refine.source", str(source_dir.resolve()), merge=False)
    OmegaConf.update(cfg, "output.root", str(source_dir / "refine"), merge=False)
    t = cfg.guidance
    t.t_max_end = min(t.t_max_end, t.t_max)
    try:
        validate(cfg)
    except UserError as exc:
        raise UserError(f"cannot refine {str(source_dir)!r}: {exc}") from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def plan_refine(source_dir: Path, overrides: Sequence[str] = ()) -> tuple[str, DictConfig]:
    """The prompt and the stage's config for refining ``source_dir``, or ``UserError``:
    every check of ``refine`` that comes before work, and nothing written."""
    opened = open_run(source_dir, overrides, "refine")
    if opened.cfg.representation == "mesh":
        raise UserError(f"{str(source_dir)!r} is a mesh stage already; refine its first "
                        f"stage ({opened.cfg.refine.source})")
    return opened.prompt, stage_config(opened.cfg, source_dir)


def refine(source_dir: Path, overrides: Sequence[str] = (), quiet: bool = False) -> RunResult:
    """Refine the run in ``source_dir`` into a new run folder inside it. Every refusal comes
    before anything is written; the source run is only read."""
    prompt, cfg = plan_refine(source_dir, overrides)
    root = Path(cfg.output.root)
    existed = root.exists()
    try:
        return run(prompt, cfg, quiet=quiet)
    except BaseException:
        if not existed and root.is_dir() and not any(root.iterdir()):
            shutil.rmtree(root, ignore_errors=True)     # refused before any run folder
        raise


def build_mesh_scene(cfg: DictConfig, device: torch.device) -> MeshScene:
    """The registry's ``mesh`` builder: the first stage named by ``refine.source`` loaded
    from its newest checkpoint, and the SDF grid and colour field initialised from it."""
    r = cfg.refine
    if not str(r.source).strip():
        raise UserError("representation=mesh refines a first stage: run `dreamfusion refine "
                        "RUN_DIR` (refine.source names that run)")
    opened = open_run(Path(r.source), [], "refine")
    source = build_scene(opened.cfg, device)
    load_scene(source, opened.loaded)
    encoding = HashGridEncoding(**OmegaConf.to_container(r.colour_grid))
    geometry = MeshGeometry(r.tet_resolution, cfg.nerf.bound, encoding, r.colour_hidden,
                            source.surface_level).to(device)
    name, line = resolve_backend(r.backend, device)
    grid = source_grid(source.field, r.tet_resolution)
    level, iou = _starting_level(source, opened.cfg, grid, name)
    initialise(geometry, source.field, grid, level, r.colour_fit_steps, r.lr.colour, cfg.seed)
    background = Background(cfg.background.kind, tuple(cfg.background.color)).to(device)
    first = source.checkpoint_modules().get("background")
    if first is not None and opened.cfg.background.kind == cfg.background.kind:
        background.load_state_dict(first.state_dict())
    rates = {k: float(v) for k, v in r.lr.items()}
    line += (f"; starting surface: density level {level:.3g}, silhouette IoU {iou:.3f} "
             f"against the first stage's renders")
    return MeshScene(geometry, background, rates, name, line, cfg.shading.ambient,
                     cfg.shading.diffuse)


def _starting_level(source: Representation, source_cfg: DictConfig, grid: SourceGrid,
                    backend: str) -> tuple[float, float]:
    """The first stage's density level (in ``grid``, its samples) whose surface looks like
    its renders (16 views: 8 azimuths at 0 and 30 degrees, 64 pixels), and that IoU
    (``mesh.matched_level``)."""
    level = export_settings(source_cfg, source.surface_level).threshold
    n = 8
    cameras = Cameras(torch.arange(2 * n, dtype=torch.float32) % n * (360.0 / n),
                      torch.tensor([0.0] * n + [30.0] * n),
                      torch.full((2 * n,), sum(source_cfg.camera.distance) / 2),
                      torch.full((2 * n,), sum(source_cfg.camera.fov) / 2))
    with torch.no_grad():
        target = source.render(cameras, 64, 64).opacity > 0.5
    return matched_level(grid, level, cameras, target, backend)

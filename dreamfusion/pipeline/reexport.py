"""``dreamfusion export RUN_DIR``: the meshes of a run again, with other settings."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig

from ..config import load_config
from ..errors import UserError
from ..export.pipeline import export_field, export_settings
from .build import Scene, build_scene
from .checkpoint import load_scene
from .inputs import select_device
from .run import latest_checkpoint


def load_run(run_dir: Path, overrides: Sequence[str] = ()) -> tuple[DictConfig, Scene, int]:
    """The run's config (with ``overrides``), its scene from the newest checkpoint that
    verifies, and that checkpoint's step; on any device (no GPU needed)."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise UserError(f"{run_dir} is not a run folder: no config.yaml")
    cfg = load_config(str(config), list(overrides))
    loaded, skipped = latest_checkpoint(run_dir)
    if loaded is None:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise UserError(f"{run_dir} has no usable checkpoint{why}")
    for why in skipped:
        print(f"dreamfusion: {why}; using {loaded.path.name}", file=sys.stderr)
    scene = build_scene(cfg, select_device("auto"))
    try:
        load_scene(scene, loaded)
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load {loaded.path}: {str(exc).splitlines()[0]}") from None
    return cfg, scene, int(loaded.state["trainer"]["step"])


def export_run(run_dir: Path, overrides: list[str]) -> tuple[list[Path], int]:
    """Write the meshes of ``run_dir`` again, with its export settings changed by
    ``overrides``; returns the files written and the checkpoint's step (an unfinished run
    exports too)."""
    cfg, scene, step = load_run(run_dir, overrides)
    with torch.no_grad():
        return export_field(scene.field, export_settings(cfg), run_dir), step

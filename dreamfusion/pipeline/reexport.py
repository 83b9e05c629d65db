"""``dreamfusion export RUN_DIR``: the meshes of a run again, with other settings."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig

from ..export.pipeline import export_settings
from ..export.writers import write_meshes
from ..utils.atomic import remove_temp_files
from .build import build_scene
from .checkpoint import load_scene, open_run
from .inputs import check_memory, select_device
from .representation import Representation


def load_run(run_dir: Path, overrides: Sequence[str] = ()
             ) -> tuple[DictConfig, Representation, int]:
    """The run's config (with ``overrides``), its scene from the newest checkpoint that
    verifies, and that checkpoint's step; on any device (no GPU needed)."""
    opened = open_run(run_dir, overrides, "export")
    for why in opened.skipped:
        print(f"dreamfusion: {why}; using {opened.loaded.path.name}", file=sys.stderr)
    device = select_device("auto")
    check_memory(opened.cfg, device, with_prior=False)     # an export loads no prior
    scene = build_scene(opened.cfg, device)
    load_scene(scene, opened.loaded)
    return opened.cfg, scene, opened.step


def export_run(run_dir: Path, overrides: list[str]) -> tuple[list[Path], int]:
    """Write the meshes of ``run_dir`` again, with its export settings changed by
    ``overrides``; returns the files written and the checkpoint's step (an unfinished run
    exports too). Temporary files that a killed write left are removed first."""
    cfg, scene, step = load_run(run_dir, overrides)
    for path in remove_temp_files(run_dir):
        print(f"dreamfusion: removed {path.relative_to(run_dir)}, left by a write that was "
              f"cut short", file=sys.stderr)
    with torch.no_grad():
        native = scene.write_native(run_dir)
        settings = export_settings(cfg, scene.surface_level)
        mesh = scene.export_mesh(settings)
        return native + write_meshes(mesh, run_dir, list(settings.formats)), step

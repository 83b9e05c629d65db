"""``dreamfusion export RUN_DIR``: the meshes of a finished run again, with other settings."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import load_config
from ..errors import UserError
from ..export.pipeline import export_field, export_settings
from .artifacts import load_checkpoint
from .build import build_scene
from .run import select_device


def export_run(run_dir: Path, overrides: list[str]) -> list[Path]:
    """Rebuild the run's field from ``config.yaml`` and ``checkpoint.pt`` and write its meshes
    into ``run_dir`` with the run's export settings, changed by ``overrides``."""
    config, checkpoint = run_dir / "config.yaml", run_dir / "checkpoint.pt"
    for path in (config, checkpoint):
        if not path.is_file():
            raise UserError(f"{run_dir} is not a finished run folder: no {path.name}")
    cfg = load_config(str(config), overrides)
    # export needs no GPU: a run trained on CUDA exports on any machine
    scene = build_scene(cfg, select_device("auto"))
    try:
        load_checkpoint(checkpoint, scene)
    except (RuntimeError, KeyError, OSError) as exc:
        raise UserError(f"cannot load {checkpoint}: {str(exc).splitlines()[0]}") from None
    with torch.no_grad():
        return export_field(scene.field, export_settings(cfg), run_dir)

"""``dreamfusion export RUN_DIR``: the meshes of a run again, with other settings."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..config import load_config
from ..errors import UserError
from ..export.pipeline import export_field, export_settings
from .build import build_scene
from .checkpoint import load_scene
from .inputs import select_device
from .run import latest_checkpoint


def export_run(run_dir: Path, overrides: list[str]) -> tuple[list[Path], int]:
    """Rebuild the field from ``config.yaml`` and the newest checkpoint that verifies, and
    write its meshes into ``run_dir`` with the run's export settings changed by ``overrides``.

    Returns the files written and the checkpoint's step (an unfinished run exports too).
    """
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise UserError(f"{run_dir} is not a run folder: no config.yaml")
    cfg = load_config(str(config), overrides)
    loaded, skipped = latest_checkpoint(run_dir)
    if loaded is None:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise UserError(f"{run_dir} has no usable checkpoint{why}")
    for why in skipped:
        print(f"dreamfusion: {why}; using {loaded.path.name}", file=sys.stderr)
    # export needs no GPU: a run trained on CUDA exports on any machine
    scene = build_scene(cfg, select_device("auto"))
    try:
        load_scene(scene, loaded)
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load {loaded.path}: {str(exc).splitlines()[0]}") from None
    with torch.no_grad():
        written = export_field(scene.field, export_settings(cfg), run_dir)
    return written, int(loaded.state["trainer"]["step"])

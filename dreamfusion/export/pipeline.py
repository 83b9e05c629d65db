"""From a trained field to files: surface, clean-up, optional decimation, UVs, texture."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ..rendering.fields import Field
from .mesh import Mesh, decimate, extract_mesh, keep_large_components
from .texture import bake_albedo, unwrap
from .writers import write_meshes


@dataclass(frozen=True)
class ExportSettings:
    resolution: int
    threshold: float
    formats: tuple[str, ...]
    texture_size: int          # 0: vertex colours instead of a texture
    decimate: int              # 0: keep every face
    keep_fraction: float       # drop pieces smaller than this fraction of the largest


def export_settings(cfg: DictConfig, surface_level: float) -> ExportSettings:
    """``cfg.export``, with ``threshold=auto`` read as the representation's
    ``surface_level``."""
    e = cfg.export
    threshold = surface_level if e.threshold == "auto" else float(e.threshold)
    return ExportSettings(e.resolution, threshold, tuple(e.formats), e.texture_size, e.decimate,
                          e.keep_fraction)


def export_field(field: Field, settings: ExportSettings, out_dir: Path) -> list[Path]:
    """Write the field's surface in every format asked for; returns the files written."""
    return write_meshes(field_mesh(field, settings), out_dir, list(settings.formats))


def field_mesh(field: Field, settings: ExportSettings) -> Mesh:
    """The mesh that ``export_field`` writes: surface, clean-up, decimation, UVs, texture."""
    mesh = extract_mesh(field, settings.resolution, settings.threshold)
    mesh = keep_large_components(mesh, settings.keep_fraction)
    if settings.decimate:
        mesh = decimate(mesh, settings.decimate)
    if settings.texture_size:
        mesh = unwrap(mesh)
        mesh.texture = bake_albedo(field, mesh, settings.texture_size)
    return mesh

"""Write meshes as GLB and OBJ for Blender and glTF viewers.

The world is Z-up with the front (azimuth 0) towards +X. glTF is Y-up and looks at an
object's front from +Z, so vertices map as ``(x, y, z)_world -> (y, z, x)_gltf`` (a rotation:
right-handedness is kept). Blender's glTF and OBJ importers turn Y-up back into Z-up.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from ..utils.atomic import atomic_path
from .mesh import Mesh


def world_to_gltf(vertices: np.ndarray) -> np.ndarray:
    return vertices[:, [1, 2, 0]]


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _trimesh(mesh: Mesh, colors: np.ndarray) -> trimesh.Trimesh:
    rgba = np.concatenate([colors, np.ones((len(colors), 1))], axis=1)
    return trimesh.Trimesh(world_to_gltf(mesh.vertices), mesh.faces,
                           vertex_colors=(np.clip(rgba, 0, 1) * 255).round().astype(np.uint8),
                           process=False)


def write_glb(mesh: Mesh, path: Path) -> Path:
    # glTF vertex colours are linear; the albedo field is sRGB like the images it was fit to
    data = _trimesh(mesh, srgb_to_linear(mesh.colors)).export(file_type="glb")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_obj(mesh: Mesh, path: Path) -> Path:
    text = _trimesh(mesh, mesh.colors).export(file_type="obj", include_normals=True,
                                              include_color=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


WRITERS = {"glb": ("model.glb", write_glb), "obj": ("model.obj", write_obj)}


def write_meshes(mesh: Mesh, out_dir: Path, formats: list[str]) -> list[Path]:
    return [WRITERS[f][1](mesh, out_dir / WRITERS[f][0]) for f in formats]

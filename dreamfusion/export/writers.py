"""Write meshes as GLB and OBJ/MTL/PNG for Blender, game engines and glTF viewers.

The world is Z-up with the front (azimuth 0) towards +X. glTF is Y-up and looks at an
object's front from +Z, so vertices map as ``(x, y, z)_world -> (y, z, x)_gltf`` (a rotation:
right-handedness is kept). The OBJ is written in the same Y-up frame, which is what Blender's
OBJ importer assumes by default; both importers turn Y-up back into Blender's Z-up.

A textured mesh (UVs and a baked texture) is written with its texture: ``model.obj`` +
``model.mtl`` (``Kd 1 1 1``, ``Ks 0``, ``map_Kd texture.png``) + ``texture.png``, and a
self-contained ``model.glb`` with the texture as ``baseColorTexture``. Without a texture both
carry vertex colours (linear in the GLB, as glTF requires; sRGB in the OBJ).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from ..utils.atomic import atomic_path, write_png, write_text
from .mesh import Mesh, vertex_normals

TEXTURE_NAME = "texture.png"


def world_to_gltf(vertices: np.ndarray) -> np.ndarray:
    return vertices[:, [1, 2, 0]]


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _rgba8(colors: np.ndarray) -> np.ndarray:
    rgba = np.concatenate([colors, np.ones((len(colors), 1))], axis=1)
    return (np.clip(rgba, 0, 1) * 255).round().astype(np.uint8)


def write_glb(mesh: Mesh, path: Path) -> list[Path]:
    normals = world_to_gltf(vertex_normals(mesh))
    if mesh.texture is not None:
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=Image.fromarray(mesh.texture), metallicFactor=0.0,
            roughnessFactor=1.0, doubleSided=False)
        visual = trimesh.visual.TextureVisuals(uv=mesh.uvs, material=material)
    else:
        # glTF vertex colours are linear; the albedo field is sRGB like the images it was fit to
        visual = trimesh.visual.ColorVisuals(vertex_colors=_rgba8(srgb_to_linear(mesh.colors)))
    tm = trimesh.Trimesh(world_to_gltf(mesh.vertices), mesh.faces, vertex_normals=normals,
                         visual=visual, process=False)
    data = tm.export(file_type="glb")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return [path]


def _obj_text(mesh: Mesh, mtl: str | None) -> str:
    v = world_to_gltf(mesh.vertices)
    n = world_to_gltf(vertex_normals(mesh))
    lines = ["# dreamfusion mesh: Y-up, the object's front towards +Z"]
    if mtl:
        lines += [f"mtllib {mtl}", "usemtl albedo"]
        lines += [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in mesh.uvs]
    else:
        lines += [f"v {a:.6f} {b:.6f} {c:.6f} {r:.4f} {g:.4f} {bl:.4f}"
                  for (a, b, c), (r, g, bl) in zip(v, np.clip(mesh.colors, 0, 1))]
    lines += [f"vn {a:.6f} {b:.6f} {c:.6f}" for a, b, c in n]
    f = mesh.faces + 1
    if mtl:
        lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in f]
    else:
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in f]
    return "\n".join(lines) + "\n"


def write_obj(mesh: Mesh, path: Path) -> list[Path]:
    written = []
    mtl = None
    if mesh.texture is not None:
        mtl = path.with_suffix(".mtl").name
        texture = path.parent / TEXTURE_NAME
        write_png(texture, mesh.texture)
        write_text(path.parent / mtl, "newmtl albedo\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nNs 0\nd 1\n"
                   f"illum 1\nmap_Kd {TEXTURE_NAME}\n")
        written += [texture, path.parent / mtl]
    write_text(path, _obj_text(mesh, mtl))
    return [path] + written


WRITERS = {"glb": ("model.glb", write_glb), "obj": ("model.obj", write_obj)}


def write_meshes(mesh: Mesh, out_dir: Path, formats: list[str]) -> list[Path]:
    """Write ``formats`` into ``out_dir``; returns every file written."""
    return [p for f in formats for p in WRITERS[f][1](mesh, out_dir / WRITERS[f][0])]

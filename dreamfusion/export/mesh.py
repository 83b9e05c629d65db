"""Marching cubes on the density field, with vertex colours from the albedo field."""
from __future__ import annotations

import math
from dataclasses import dataclass

import mcubes
import numpy as np
import torch

from ..errors import UserError
from ..rendering.fields import Field


@dataclass
class Mesh:
    vertices: np.ndarray   # (V, 3) world coordinates, Z up
    faces: np.ndarray      # (F, 3) int
    colors: np.ndarray     # (V, 3) albedo in [0, 1] (sRGB)
    uvs: np.ndarray | None = None        # (V, 2) in [0, 1], v up, once unwrapped
    texture: np.ndarray | None = None    # (H, W, 3) uint8 sRGB albedo, row 0 at v = 1


def vertex_normals(mesh: Mesh) -> np.ndarray:
    """Smooth unit normals: the area-weighted mean of the adjacent faces' normals."""
    a, b, c = (mesh.vertices[mesh.faces[:, i]] for i in range(3))
    face_normals = np.cross(b - a, c - a)                  # length = twice the area
    normals = np.zeros_like(mesh.vertices)
    for i in range(3):
        np.add.at(normals, mesh.faces[:, i], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)


def keep_large_components(mesh: Mesh, fraction: float) -> Mesh:
    """Drop connected pieces with fewer faces than ``fraction`` of the largest one: floaters
    left by stray density, which a user would otherwise delete by hand."""
    import trimesh

    labels = trimesh.graph.connected_component_labels(
        trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).face_adjacency,
        node_count=len(mesh.faces))
    sizes = np.bincount(labels)
    keep_face = sizes[labels] >= fraction * sizes.max()
    return _subset(mesh, mesh.faces[keep_face])


def decimate(mesh: Mesh, faces: int) -> Mesh:
    """At most ``faces`` faces, by quadric edge collapse (fast-simplification); colours follow
    the nearest original vertex."""
    import fast_simplification
    from scipy.spatial import cKDTree

    if len(mesh.faces) <= faces:
        return mesh
    points, new_faces = fast_simplification.simplify(
        mesh.vertices, mesh.faces, target_reduction=1.0 - faces / len(mesh.faces))
    _, nearest = cKDTree(mesh.vertices).query(points)
    return Mesh(points.astype(np.float32), new_faces.astype(np.int64), mesh.colors[nearest])


def _subset(mesh: Mesh, faces: np.ndarray) -> Mesh:
    used, inverse = np.unique(faces, return_inverse=True)
    return Mesh(mesh.vertices[used], inverse.reshape(-1, 3).astype(np.int64), mesh.colors[used])


def auto_threshold(step_size: float) -> float:
    """The density at which one render step of material is half opaque.

    ``1 - exp(-sigma * step) = 0.5``, i.e. ``sigma = ln 2 / step``: the surface the renderer
    shows is where rays start to saturate, so the mesh follows the rendered silhouette.
    """
    return math.log(2.0) / step_size


@torch.no_grad()
def density_grid(field: Field, resolution: int, chunk: int = 1 << 16) -> np.ndarray:
    """Density sampled at ``resolution^3`` points spanning ``[-bound, bound]^3`` (inclusive)."""
    axis = torch.linspace(-field.bound, field.bound, resolution)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    device = next(field.parameters()).device
    values = [field.density(p.to(device)).cpu() for p in points.split(chunk)]
    return torch.cat(values).reshape(resolution, resolution, resolution).numpy()


class NoSurface(UserError):
    """The field has no surface at the threshold (empty, or solid everywhere)."""


def no_surface(lo: float, hi: float, threshold: float) -> NoSurface:
    """Why densities in ``[lo, hi]`` have no surface at ``threshold``, with advice that fits
    the cause: a diverged field, a featureless one, or a threshold outside the range."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return NoSurface(f"the density field holds non-finite values ({lo:.4g}..{hi:.4g}): "
                         f"training diverged; resume from an earlier checkpoint with a lower "
                         f"optim.lr")
    if hi - lo <= 1e-6 * max(1.0, abs(hi)):
        return NoSurface(f"the density field is {hi:.4g} everywhere, so no threshold gives a "
                         f"surface: training has not shaped anything (train more steps)")
    state = "empty" if hi <= threshold else "solid everywhere"
    # a threshold inside the range, nearer its top: densities span orders of magnitude
    suggestion = math.sqrt(max(lo, hi * 1e-3) * hi)
    return NoSurface(f"the density field is {state} at threshold {threshold:.4g} (densities "
                     f"range {lo:.4g}..{hi:.4g}); try a threshold of {suggestion:.4g} "
                     f"(export.threshold, or --threshold of dreamfusion export)")


def filled_cavities(grid: np.ndarray, threshold: float) -> np.ndarray:
    """``grid`` with each enclosed cavity of its solid (``grid > threshold``: empty space that
    no path of face-adjacent empty samples joins to the box's faces) set to the grid's
    maximum. No camera sees such a cavity, so its wall would only be a second, inward-facing
    piece inside the object; a Gaussian field that has grown as a shell makes one (README,
    "Export")."""
    from scipy import ndimage

    solid = grid > threshold
    cavity = ndimage.binary_fill_holes(solid) & ~solid
    return np.where(cavity, grid.max(), grid) if cavity.any() else grid


def grid_surface(grid: np.ndarray, bound: float, threshold: float, fill: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of a ``density_grid`` (R, R, R) at ``threshold``: vertices (V, 3) in
    ``[-bound, bound]^3`` and outward faces (F, 3); ``NoSurface`` where it has none.
    ``fill=False`` keeps enclosed cavities, for a caller that has filled them already or
    that only looks at the surface from outside, where a cavity's wall changes nothing."""
    resolution = grid.shape[0]
    lo, hi = float(grid.min()), float(grid.max())
    if not lo < threshold < hi:
        raise no_surface(lo, hi, threshold)
    if fill:
        grid = filled_cavities(grid, threshold)
    # pad with empty space so surfaces touching the box are closed
    padded = np.pad(grid, 1, constant_values=min(lo, 0.0))
    vertices, faces = mcubes.marching_cubes(padded, threshold)
    vertices = (vertices - 1.0) / (resolution - 1) * 2.0 * bound - bound
    return vertices, _outward(vertices, faces.astype(np.int64))


@torch.no_grad()
def extract_mesh(field: Field, resolution: int, threshold: float) -> Mesh:
    """The ``density = threshold`` surface; an empty or all-solid field is ``NoSurface``."""
    vertices, faces = grid_surface(density_grid(field, resolution), field.bound, threshold)
    device = next(field.parameters()).device
    colors = [field.albedo(torch.as_tensor(v, dtype=torch.float32, device=device)).cpu()
              for v in np.array_split(vertices, max(1, len(vertices) // 65536 + 1))]
    return Mesh(vertices.astype(np.float32), faces, torch.cat(colors).numpy())


def _outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Wind faces so that normals point out of the solid (positive signed volume)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    signed_volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    return faces if signed_volume >= 0 else faces[:, ::-1].copy()


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance between point sets: the mean of the mean nearest-neighbour
    distances from ``a`` to ``b`` and from ``b`` to ``a`` (in world units)."""
    from scipy.spatial import cKDTree

    return 0.5 * float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def surface_samples(mesh: Mesh, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points uniformly distributed over the mesh's area."""
    return oriented_samples(mesh, count, seed)[0]


def oriented_samples(mesh: Mesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points (count, 3) uniformly distributed over the mesh's area, and the unit
    normal (count, 3) of the face each lies on (counter-clockwise front)."""
    import trimesh

    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    points, face = trimesh.sample.sample_surface(tm, count, seed=seed)
    return np.asarray(points), np.asarray(tm.face_normals[face])

"""UV atlas (xatlas) and albedo baked into a texture.

Each texel centre inside a UV triangle maps, through its barycentric coordinates, to a point
on the surface; the albedo field is sampled there. Texels outside every chart are then filled
from their filled neighbours (seam dilation), so that bilinear filtering and mip-mapping at a
chart's edge never pull in the empty background.
"""
from __future__ import annotations

import numpy as np
import torch

from ..rendering.fields import Field
from .mesh import Mesh


def unwrap(mesh: Mesh) -> Mesh:
    """The mesh cut along xatlas's seams, with one UV in ``[0, 1]^2`` per vertex."""
    import xatlas

    vmapping, faces, uvs = xatlas.parametrize(mesh.vertices, mesh.faces.astype(np.uint32))
    return Mesh(mesh.vertices[vmapping], faces.astype(np.int64), mesh.colors[vmapping],
                uvs=uvs.astype(np.float32))


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """For each texel centre of a ``size^2`` image (row 0 at v = 1), the face that covers it
    (-1 for none) and its barycentric coordinates. Vectorised over the texels of every face's
    bounding box."""
    tri = uvs[faces] * size - 0.5                     # texel-centre coordinates, (F, 3, 2)
    lo = np.clip(np.floor(tri.min(axis=1)).astype(np.int64), 0, size - 1)
    hi = np.clip(np.ceil(tri.max(axis=1)).astype(np.int64), 0, size - 1)
    span = hi - lo + 1
    counts = span[:, 0] * span[:, 1]
    face = np.repeat(np.arange(len(faces)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    px = lo[face, 0] + local % span[face, 0]
    py = lo[face, 1] + local // span[face, 0]
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    v0, v1 = b - a, c - a
    p = np.stack([px, py], axis=1) - a
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    w1 = (p[:, 0] * v1[:, 1] - p[:, 1] * v1[:, 0]) / det
    w2 = (v0[:, 0] * p[:, 1] - v0[:, 1] * p[:, 0]) / det
    w0 = 1.0 - w1 - w2
    inside = (w0 >= -1e-4) & (w1 >= -1e-4) & (w2 >= -1e-4)
    face_of = np.full((size, size), -1, dtype=np.int64)
    bary = np.zeros((size, size, 3), dtype=np.float32)
    rows = size - 1 - py[inside]                      # images store v = 1 at the top
    face_of[rows, px[inside]] = face[inside]
    bary[rows, px[inside]] = np.stack([w0, w1, w2], axis=1)[inside]
    return face_of, bary


def dilate(image: np.ndarray, filled: np.ndarray, pixels: int) -> np.ndarray:
    """Grow the filled texels outwards by ``pixels``, each new texel the mean of its filled
    4-neighbours."""
    image, filled = image.copy(), filled.copy()
    for _ in range(pixels):
        total = np.zeros_like(image)
        count = np.zeros(filled.shape, dtype=np.float32)
        for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
            total += np.roll(image * filled[..., None], shift, axis=axis)
            count += np.roll(filled, shift, axis=axis)
        grow = ~filled & (count > 0)
        if not grow.any():
            break
        image[grow] = total[grow] / count[grow][:, None]
        filled |= grow
    return image


@torch.no_grad()
def bake_albedo(field: Field, mesh: Mesh, size: int, padding: int = 8,
                chunk: int = 1 << 16) -> np.ndarray:
    """An sRGB ``(size, size, 3)`` uint8 texture of the albedo on ``mesh`` (which has UVs)."""
    face_of, bary = rasterize_uv(mesh.uvs, mesh.faces, size)
    filled = face_of >= 0
    corners = mesh.vertices[mesh.faces[face_of[filled]]]            # (T, 3, 3)
    points = np.einsum("tk,tkd->td", bary[filled], corners).astype(np.float32)
    device = next(field.parameters()).device
    albedo = [field.albedo(torch.from_numpy(p).to(device)).cpu().numpy()
              for p in np.array_split(points, max(1, len(points) // chunk + 1))]
    image = np.zeros((size, size, 3), dtype=np.float32)
    image[filled] = np.concatenate(albedo)
    image = dilate(image, filled, padding)
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)

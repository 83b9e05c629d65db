"""A deterministic tetrahedral grid: the cube ``[-bound, bound]^3`` cut into ``n^3`` cells,
each split into six tetrahedra around its main diagonal (the Kuhn, or Freudenthal,
triangulation), so that neighbouring cells' faces match and every tetrahedron is positively
oriented. DMTet and threestudio load such grids from files; ours is computed."""
from __future__ import annotations

import itertools

import torch

# the six tetrahedra of the unit cube, one per order in which a path from (0,0,0) to (1,1,1)
# steps along the axes: corners 0, e_a, e_a + e_b, (1, 1, 1)
_ORDERS = tuple(itertools.permutations(range(3)))


def lattice(resolution: int, bound: float) -> torch.Tensor:
    """((n+1)^3, 3) float32 lattice points, x slowest: index ``(i (n+1) + j)(n+1) + k``."""
    axis = torch.linspace(-bound, bound, resolution + 1)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def _cube_tets() -> torch.Tensor:
    """(6, 4, 3) corner offsets of the six tetrahedra of a unit cube, each ordered so that
    ``det(v1 - v0, v2 - v0, v3 - v0) > 0``."""
    out = []
    for order in _ORDERS:
        corner = [0, 0, 0]
        corners = [tuple(corner)]
        for axis in order:
            corner[axis] = 1
            corners.append(tuple(corner))
        t = torch.tensor(corners, dtype=torch.float64)
        if torch.linalg.det(t[1:] - t[0]) < 0:
            corners[1], corners[2] = corners[2], corners[1]
        out.append(corners)
    return torch.tensor(out, dtype=torch.long)


def tetrahedra(resolution: int) -> torch.Tensor:
    """(6 n^3, 4) int64 lattice indices of the grid's tetrahedra, positively oriented."""
    n = resolution
    cells = torch.stack(torch.meshgrid(*(torch.arange(n),) * 3, indexing="ij"),
                        dim=-1).reshape(-1, 1, 1, 3)
    corners = cells + _cube_tets().unsqueeze(0)                # (n^3, 6, 4, 3)
    m = n + 1
    index = (corners[..., 0] * m + corners[..., 1]) * m + corners[..., 2]
    return index.reshape(-1, 4)

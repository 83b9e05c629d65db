"""Differentiable marching tetrahedra (DMTet): the zero level set of an SDF on a
tetrahedral grid as a welded triangle mesh, whose vertices move with the SDF values and the
grid's vertex positions.

A vertex is inside where ``sdf < 0``. A tetrahedron with one or three inside vertices holds
one triangle, with two a quad (two triangles), across the edges whose ends differ; each edge
holds one mesh vertex at the zero crossing of the linear interpolation,
``p = (p_a s_b - p_b s_a) / (s_b - s_a)``, shared by every tetrahedron around the edge, so
the mesh is welded and closed where the surface stays inside the grid. Triangles face out
(counter-clockwise seen from outside).
"""
from __future__ import annotations

import numpy as np
import torch

# the tetrahedron's six edges, as corner pairs
EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _edge(a: int, b: int) -> int:
    return EDGES.index((min(a, b), max(a, b)))


def _oriented(edges: list[int], inside: list[int], corners: np.ndarray) -> list[int]:
    """``edges`` as a triangle whose normal points from the inside corners to the outside
    ones, judged on the positively oriented tetrahedron ``corners``."""
    mid = [corners[list(EDGES[e])].mean(0) for e in edges]
    normal = np.cross(mid[1] - mid[0], mid[2] - mid[0])
    outside = [k for k in range(4) if k not in inside]
    out_dir = corners[outside].mean(0) - corners[inside].mean(0)
    return edges if normal @ out_dir > 0 else [edges[0], edges[2], edges[1]]


def case_table() -> torch.Tensor:
    """(16, 2, 3) int64: for each inside pattern (bit k: corner k inside), up to two
    triangles as edge indices (``EDGES``), -1 where there is none. Derived on the unit
    tetrahedron; orientation survives any positively oriented affine map."""
    corners = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    table = -np.ones((16, 2, 3), dtype=np.int64)
    for case in range(1, 15):
        inside = [k for k in range(4) if case >> k & 1]
        outside = [k for k in range(4) if k not in inside]
        if len(inside) in (1, 3):
            lone, others = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            table[case, 0] = _oriented([_edge(lone, o) for o in others], inside, corners)
            continue
        (a, b), (c, d) = inside, outside
        cycle = [_edge(a, c), _edge(a, d), _edge(b, d), _edge(b, c)]    # around the quad
        table[case, 0] = _oriented([cycle[0], cycle[1], cycle[2]], inside, corners)
        table[case, 1] = _oriented([cycle[0], cycle[2], cycle[3]], inside, corners)
    return torch.from_numpy(table)


_TABLE = case_table()


def marching_tets(positions: torch.Tensor, sdf: torch.Tensor, tets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, 3) grid vertex positions, (V,) SDF, (T, 4) positively oriented tetrahedra ->
    mesh vertices (M, 3), differentiable in ``positions`` and ``sdf``, and faces (K, 3)
    int64. Deterministic: vertices in the order of their grid edges' sorted keys."""
    inside = sdf < 0
    case = (inside[tets].long() * torch.tensor([1, 2, 4, 8], device=sdf.device)).sum(-1)
    cut = (case > 0) & (case < 15)
    tets, case = tets[cut], case[cut]
    pairs = tets[:, torch.tensor(EDGES, device=tets.device)]       # (T', 6, 2)
    lo, hi = pairs.min(-1).values, pairs.max(-1).values
    crossing = inside[lo] != inside[hi]
    key = lo * len(sdf) + hi
    unique, slot = torch.unique(key[crossing], return_inverse=True)
    edge_vertex = torch.full_like(key, -1)
    edge_vertex[crossing] = slot
    a, b = unique // len(sdf), unique % len(sdf)
    s_a, s_b = sdf[a].unsqueeze(-1), sdf[b].unsqueeze(-1)
    vertices = (positions[a] * s_b - positions[b] * s_a) / (s_b - s_a)
    table = _TABLE.to(tets.device)[case]                          # (T', 2, 3)
    faces = torch.gather(edge_vertex.unsqueeze(1).expand(-1, 2, -1), 2, table.clamp_min(0))
    faces = faces[table[..., 0] >= 0]
    return vertices, faces.reshape(-1, 3)


class SurfaceBand:
    """The tetrahedra that can hold the surface, kept between steps so that marching skips
    the rest of the grid (at 48 cells a side, nine in ten tetrahedra are far from it and
    testing them was most of the march).

    At a refresh the band is every tetrahedron that is cut or has a vertex with
    ``|sdf| < margin``; every other one is uncut, all four of its vertices on one side. It
    stays uncut while none of those vertices changes side, so ``select`` refreshes only when
    one does (an SDF must move by ``margin`` there first): the band's march is the whole
    grid's, bit for bit, in the same order, whatever changed the SDF (a step, a load)."""

    def __init__(self, tets: torch.Tensor, margin: float) -> None:
        self.tets, self.margin = tets, margin
        self._band: torch.Tensor | None = None          # (T', 4) the band's tetrahedra
        self._watched = torch.zeros(0, dtype=torch.bool)  # (V,) vertices of uncut tetrahedra
        self._sides = torch.zeros(0, dtype=torch.bool)    # (V,) sdf < 0 at the refresh
        self.refreshes = 0

    def select(self, sdf: torch.Tensor) -> torch.Tensor:
        """(T', 4) the tetrahedra of ``tets`` that the march of ``sdf`` (V,) must visit, in
        ``tets``'s order."""
        sdf = sdf.detach()
        inside = sdf < 0
        if self._band is None or len(inside) != len(self._sides) or \
                bool(((inside != self._sides) & self._watched).any()):
            self._refresh(sdf, inside)
        return self._band

    def _refresh(self, sdf: torch.Tensor, inside: torch.Tensor) -> None:
        corners = inside[self.tets]                                 # (T, 4)
        cut = corners.any(-1) & ~corners.all(-1)
        keep = cut | (sdf.abs() < self.margin)[self.tets].any(-1)
        self._band = self.tets[keep]
        watched = torch.zeros_like(inside)
        watched[self.tets[~keep].reshape(-1)] = True
        self._watched, self._sides = watched, inside
        self.refreshes += 1

"""The mesh stage as a scene representation (``pipeline.representation``): every step
marches the SDF grid to a mesh, rasterises it (``rendering.mesh_raster``), colours the
visible surface from the colour field, shades, composites over the background and
antialiases, so that the SDS gradient reaches the SDF values and offsets through the
silhouettes and the surface points. The registry's ``mesh`` entry builds it
(``pipeline.refine.build_mesh_scene``, which initialises it from a first stage)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..export.mesh import (Mesh, NoSurface, density_grid, filled_cavities, grid_surface,
                           keep_large_components, surface_samples)
from ..export.pipeline import ExportSettings
from ..export.texture import bake_albedo, unwrap
from ..rendering import mesh_raster as mr
from ..rendering.cameras import Cameras
from ..rendering.fields import Field
from ..rendering.rendered import Rendered
from ..rendering.shading import Background, shade
from .geometry import MeshGeometry, fit_colour, signed_distances, surface_terms, vertex_normals


@dataclass
class MeshScene:
    field: MeshGeometry
    background: Background
    rates: dict[str, float]             # refine.lr
    backend_name: str                   # the rasteriser's backend: cpp | torch | nvdiffrast
    backend_line: str
    ambient: float                      # shading.ambient and .diffuse
    diffuse: float

    @property
    def surface_level(self) -> float:
        return self.field.surface_level

    def backend(self) -> tuple[str, str]:
        return self.backend_name, self.backend_line

    def checkpoint_modules(self) -> dict[str, torch.nn.Module]:
        return {"mesh": self.field, "background": self.background}

    def param_groups(self) -> list[dict]:
        f, r = self.field, self.rates
        groups = [{"params": [f.sdf], "lr": r["sdf"]}, {"params": [f.deform], "lr": r["deform"]},
                  {"params": list(f.encoding.parameters()) + list(f.colour.parameters()),
                   "lr": r["colour"]}]
        background = list(self.background.parameters())
        if background:
            groups.append({"params": background, "lr": r["background"]})
        return groups

    def named_trainables(self) -> list[tuple[str, torch.nn.Parameter]]:
        named = [(f"mesh.{n}", p) for n, p in self.field.named_parameters()]
        return named + [(f"background.{n}", p) for n, p in self.background.named_parameters()]

    def before_step(self, step: int) -> None:
        """Nothing: the mesh is marched afresh in every render."""

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Nothing: no density control or grid refresh."""

    def set_step(self, step: int) -> None:
        self.field.encoding.set_step(step)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.field.density(points)

    def write_native(self, out_dir: Path) -> list[Path]:
        return []

    def render(self, cameras: Cameras, height: int, width: int, mode: str = "albedo",
               light_dirs: torch.Tensor | None = None, with_normals: bool = False) -> Rendered:
        """``with_normals`` changes nothing: shading takes the mesh's own normals, and the
        orientation term is the NeRF's. With gradients on, ``Rendered.terms`` holds the
        mesh regularizers."""
        device = self.field.sdf.device
        vertices, faces = self.field.surface()
        _, dirs = cameras.rays(height, width)
        background = self.background(dirs.to(device))
        if len(faces) == 0:         # nothing solid: the background alone, and no gradient
            zeros = background.new_zeros(background.shape[:-1])
            return Rendered(background, zeros, zeros, 0)
        clip = mr.project(vertices, cameras.world_to_clip())
        rast = mr.rasterize(clip, faces, (height, width), self.backend_name)
        hit = rast[..., 3] > 0
        where = torch.nonzero(hit, as_tuple=True)               # (batch, row, column)
        points = mr.interpolate(vertices, rast, faces)[hit]
        normals = mr.interpolate(vertex_normals(vertices, faces), rast, faces)[hit]
        normals = torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
        lights = None if light_dirs is None else light_dirs.to(device)[where[0]]
        colour = shade(self.field.albedo(points), normals, lights, mode, self.ambient,
                       self.diffuse)
        rgb = background.index_put(where, colour)
        neighbours = mr.edge_neighbours(faces)
        mask = hit.to(rgb.dtype).unsqueeze(-1)
        both = mr.antialias(torch.cat([rgb, mask], dim=-1), rast, clip, faces, neighbours)
        distance = (points - cameras.positions.to(device)[where[0]]).norm(dim=-1)
        depth = rgb.new_zeros(hit.shape).index_put(where, distance)
        terms = (surface_terms(self.field, vertices, faces, neighbours)
                 if torch.is_grad_enabled() else {})
        return Rendered(both[..., :3], both[..., 3], depth, int(hit.sum()), None, terms)

    @torch.no_grad()
    def export_mesh(self, settings: ExportSettings) -> Mesh:
        """The marched mesh itself (welded: one vertex per grid edge), its small pieces
        dropped, with UVs and a texture baked from the trained colour field (or vertex
        colours where ``texture_size`` is 0). ``settings.resolution`` and ``threshold``, the
        volume's marching-cubes settings, do not apply; nor does decimation, which would
        undo the refined surface."""
        vertices, faces = self.field.surface()
        if len(faces) == 0:
            raise NoSurface("the mesh stage's SDF has no zero crossing: nothing is solid")
        v = vertices.float().cpu()
        colours = torch.cat([self.field.albedo(c) for c in v.to(vertices.device).split(65536)])
        mesh = Mesh(v.numpy(), faces.cpu().numpy().astype(np.int64),
                    colours.cpu().numpy().astype(np.float32))
        mesh = keep_large_components(mesh, settings.keep_fraction)
        if settings.texture_size:
            mesh = unwrap(mesh)
            mesh.texture = bake_albedo(self.field, mesh, settings.texture_size)
        return mesh


# the density levels tried for the starting surface, as multiples of the export's, highest
# first: a NeRF's silhouette (opacity 1/2 over the whole ray) lies outside its iso-surface at
# the export's level (a toy torus's covered its renders' pixels with IoU 0.81 there, 0.96 at
# a quarter); a Gaussian field's may lie inside
LEVEL_FRACTIONS = tuple(2.0 ** (k / 2) for k in range(4, -9, -1))


@dataclass(frozen=True)
class SourceGrid:
    """A first stage's density, sampled once for both the starting level and the starting
    SDF (a Gaussian field's samples are what a mesh stage's start spends most on)."""
    values: np.ndarray      # (R, R, R) ``density_grid`` values, R = n k + 1
    stride: int             # k: every k-th sample along each axis is a lattice point
    bound: float


def source_grid(source: Field, tet_resolution: int, least: int = 97) -> SourceGrid:
    """``source``'s density at ``(n k + 1)^3`` points, ``k`` the least stride that gives at
    least ``least`` a side, so that the starting surface is finer than the tet grid and
    the lattice's inside test costs no further query."""
    stride = max(1, math.ceil((least - 1) / tet_resolution))
    return SourceGrid(density_grid(source, tet_resolution * stride + 1), stride, source.bound)


@torch.no_grad()
def matched_level(grid: SourceGrid, level: float, cameras: Cameras, target: torch.Tensor,
                  backend: str) -> tuple[float, float]:
    """The density level, of ``level`` times each of ``LEVEL_FRACTIONS``, whose surface
    (marching cubes of ``grid``) covers what the first stage's renders cover (``target``
    (B, H, W) bool, their opacity over 1/2 from ``cameras``) best, by mean IoU over the
    views; and that IoU (-1 where no level has a surface). The higher level wins ties."""
    matrix = cameras.world_to_clip().to(target.device)
    best = (level, -1.0)
    for fraction in LEVEL_FRACTIONS:
        try:
            # unfilled: a cavity's wall lies inside the silhouette, so the IoU is the same
            vertices, faces = grid_surface(grid.values, grid.bound, level * fraction,
                                           fill=False)
        except NoSurface:
            continue
        vertices = torch.as_tensor(vertices, dtype=torch.float32, device=target.device)
        faces = torch.as_tensor(faces, dtype=torch.long, device=target.device)
        rast = mr.rasterize(mr.project(vertices, matrix), faces, tuple(target.shape[1:]),
                            backend)
        mask = rast[..., 3] > 0
        union = (mask | target).sum((1, 2)).clamp_min(1)
        iou = float(((mask & target).sum((1, 2)) / union).mean())
        if iou > best[1]:
            best = (level * fraction, iou)
    return best


# where the starting SDF is truncated, in cells: well beyond the band the march visits
# (``MeshGeometry.band``: two cells), and beyond where a refine's steps move the surface
TRUNCATION_CELLS = 4.0


def initialise(geometry: MeshGeometry, source: Field, grid: SourceGrid, level: float,
               fit_steps: int, lr: float, seed: int) -> float:
    """Set the SDF grid from a first stage's surface (marching cubes of ``grid`` at
    ``level``, sampled: SDF = distance to it, negative where the density exceeds ``level``)
    and fit the colour field to ``source``'s albedo near that surface; returns the fit's
    error. Raises ``UserError`` where the first stage has no surface."""
    filled = filled_cavities(grid.values, level)        # for the surface and the lattice
    try:
        vertices, faces = grid_surface(filled, grid.bound, level, fill=False)
    except NoSurface as exc:
        raise UserError(f"the first stage has no surface to refine ({exc}); train it longer "
                        f"or refine another run") from None
    first = Mesh(vertices.astype(np.float32), faces, np.zeros_like(vertices, np.float32))
    samples = surface_samples(first, 200_000, seed=seed).astype(np.float32)
    device = geometry.sdf.device
    with torch.no_grad():
        lattice = geometry.lattice
        k = grid.stride
        if grid.bound == geometry.bound and len(grid.values) == geometry.resolution * k + 1:
            values = filled[::k, ::k, ::k]
        else:                                       # another box: the lattice's own query
            m = geometry.resolution + 1
            values = torch.cat([source.density(c) for c in lattice.split(65536)])
            values = filled_cavities(values.cpu().numpy().reshape(m, m, m), level)
        inside = torch.from_numpy(values.reshape(-1) > level)
        # truncated: only the signs matter further out, where no gradient reaches the SDF
        sdf = signed_distances(lattice.cpu().numpy(), samples, inside.cpu().numpy(),
                               TRUNCATION_CELLS * geometry.cell)
        geometry.sdf.copy_(torch.from_numpy(sdf).to(device))
        geometry.deform.zero_()
        g = torch.Generator().manual_seed(seed)
        near = torch.from_numpy(samples).to(device)
        near = near + 0.5 * geometry.cell * torch.randn(near.shape, generator=g).to(device)
        near = near.clamp(-geometry.bound, geometry.bound)
        targets = torch.cat([source.albedo(c) for c in near.split(65536)])
    return fit_colour(geometry, near, targets, fit_steps, lr, g)

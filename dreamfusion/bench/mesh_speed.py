"""The mesh rasteriser's rows of ``dreamfusion bench speed``: renders/s of a closed mesh of
about 10k and 100k faces at 64x64 and 256x256, forward and forward+backward (rasterise,
interpolate, antialias), and the visibility alone (which triangle each pixel sees: the part
the compiled kernel does), the kernel against the PyTorch reference."""
from __future__ import annotations

import torch

from ..mesh.marching_tets import marching_tets
from ..mesh.tets import lattice, tetrahedra
from ..rendering import mesh_raster as mr
from ..rendering.cameras import orbit
from .measure import best_seconds, peak_memory_gb, reset_peak_memory
from .tables import markdown_table

# grid cells across the box for a bumpy ball of about 10k and 100k faces
RESOLUTIONS = {"10k": 32, "100k": 100}
SIZES = (64, 256)


def mesh_backends() -> list[str]:
    """The reference, then the kernel where it builds (the rasteriser's CPU fast path)."""
    backend, _ = mr.resolve_backend("auto", torch.device("cpu"))
    return ["torch", "cpp"] if backend == "cpp" else ["torch"]


def bumpy_ball(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed mesh: the zero set of a ball of radius 0.6 with bumps, marched."""
    p = lattice(resolution, 1.0)
    bumps = 0.05 * torch.sin(7 * p[:, 0]) * torch.sin(5 * p[:, 1]) * torch.sin(6 * p[:, 2])
    return marching_tets(p, p.norm(dim=-1) - 0.6 + bumps, tetrahedra(resolution))


def measure_mesh(backend: str, device_name: str, repeats: int) -> list[dict]:
    """Renders/s and peak memory per mesh and size; run in a fresh process."""
    device = torch.device(device_name)
    rows = []
    for label, resolution in RESOLUTIONS.items():
        vertices, faces = bumpy_ball(resolution)
        vertices, faces = vertices.detach().to(device), faces.to(device)
        for size in SIZES:
            rows.append(_measure(backend, device, vertices, faces, label, size, repeats))
    return rows


def _measure(backend: str, device: torch.device, vertices: torch.Tensor, faces: torch.Tensor,
             label: str, size: int, repeats: int) -> dict:
    reset_peak_memory(device)
    cams = orbit(1, 20.0, 2.3, 40.0)
    matrix = cams.world_to_clip().to(device)
    colours = torch.rand(len(vertices), 3, generator=torch.Generator().manual_seed(0)).to(device)
    neighbours = mr.edge_neighbours(faces)
    v = vertices.clone().requires_grad_(True)

    def render() -> torch.Tensor:
        clip = mr.project(v, matrix)
        rast = mr.rasterize(clip, faces, (size, size), backend)
        return mr.antialias(mr.interpolate(colours, rast, faces), rast, clip, faces, neighbours)

    def forward() -> None:
        with torch.no_grad():
            render()

    def forward_backward() -> None:
        v.grad = None
        render().sum().backward()

    screen = mr.screen_vertices(mr.project(vertices, matrix), size, size)
    return {"backend": backend, "faces": len(faces), "mesh": label, "size": size,
            "visibility_per_second": 1.0 / best_seconds(
                lambda: mr.visibility(screen, faces, size, size, backend), device, repeats),
            "renders_per_second": 1.0 / best_seconds(forward, device, repeats),
            "train_renders_per_second": 1.0 / best_seconds(forward_backward, device, repeats),
            "peak_memory_gb": peak_memory_gb(device)[0]}


def mesh_table(rows: list[dict]) -> str:
    ref = {(r["mesh"], r["size"]): r for r in rows if r["backend"] == "torch"}

    def cell(r: dict, key: str) -> str:
        return f"{r[key]:.1f} ({r[key] / ref[(r['mesh'], r['size'])][key]:.1f}x)"

    return markdown_table(
        ["machine", "visibility", "faces", "pixels", "visibility/s", "renders/s (no grad)",
         "renders/s (train)", "peak memory GB"],
        [[r.get("machine", ""), r["backend"], f"{r['faces']:,}", f"{r['size']}x{r['size']}",
          cell(r, "visibility_per_second"), cell(r, "renders_per_second"),
          cell(r, "train_renders_per_second"),
          f"{r['peak_memory_gb']:.2f}"] for r in rows])

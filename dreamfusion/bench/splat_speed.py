"""The Gaussian rows of ``dreamfusion bench speed``: 64x64 images/s of each rasteriser for
10k and 50k Gaussians, forward and forward+backward, against the PyTorch reference."""
from __future__ import annotations

import torch

from ..gaussians.model import Gaussians
from ..gaussians.renderer import GaussianRenderer, gsplat_available
from ..rendering.cameras import Cameras, orbit
from ..rendering.shading import Background
from .measure import best_seconds, peak_memory_gb, reset_peak_memory
from .tables import markdown_table

COUNTS = (10_000, 50_000)
SIZE = 64


def splat_backends(device: torch.device) -> list[str]:
    """The rasterisers this machine runs: the reference, then gsplat on CUDA where it imports,
    or the compiled compositor on a CPU where it builds."""
    if device.type == "cuda":
        return ["torch", "gsplat"] if gsplat_available() else ["torch"]
    from ..gaussians.splat_cpp import load_kernel

    return ["torch", "cpp"] if load_kernel() is not None else ["torch"]


def measure_splats(backend: str, device_name: str, repeats: int) -> list[dict]:
    """Images/s per count, the pairs composited (the drawn Gaussians for gsplat, which does
    not count pairs) and the peak memory while measuring that count; run in a fresh process,
    so that peak is the rasteriser's own. The Gaussians are a trained set's shape:
    initialised as a run initialises them, in a ball of radius 0.5, with the opacity a trained
    object has (0.5) and scales of their neighbours' spacing."""
    device = torch.device(device_name)
    renderer = GaussianRenderer(backend, device, 0.3, 0.7)
    background = Background("solid", (1.0, 1.0, 1.0)).to(device)
    cams = orbit(1, 20.0, 2.3, 40.0)
    lights = cams.positions / cams.positions.norm(dim=-1, keepdim=True)
    return [_measure_count(renderer, backend, device, background, cams, lights, count, repeats)
            for count in COUNTS]


def _measure_count(renderer: GaussianRenderer, backend: str, device: torch.device,
                   background: Background, cams: Cameras, lights: torch.Tensor, count: int,
                   repeats: int) -> dict:
    reset_peak_memory(device)        # this count's peak, not the larger one measured before
    g = Gaussians(count, 1.0, 0.5, 0.5, torch.Generator().manual_seed(0)).to(device)

    def forward() -> int:
        with torch.no_grad():
            return renderer.render(g, background, cams, SIZE, SIZE, "lambertian",
                                   lights).rendered.n_samples

    def forward_backward() -> None:
        g.zero_grad()
        renderer.render(g, background, cams, SIZE, SIZE, "lambertian",
                        lights).rendered.rgb.sum().backward()

    return {"backend": backend, "gaussians": count, "pairs": forward(),
            "images_per_second": 1.0 / best_seconds(forward, device, repeats),
            "train_images_per_second": 1.0 / best_seconds(forward_backward, device, repeats),
            "peak_memory_gb": peak_memory_gb(device)[0]}


def splat_table(rows: list[dict]) -> str:
    ref = {r["gaussians"]: r for r in rows if r["backend"] == "torch"}
    cell = lambda r, k: f"{r[k]:.1f} ({r[k] / ref[r['gaussians']][k]:.1f}x)"  # noqa: E731
    return markdown_table(
        ["machine", "rasteriser", "Gaussians", "pairs (torch) / drawn (gsplat)",
         "images/s (no grad)", "images/s (train)", "peak memory GB"],
        [[r["machine"], r["backend"], f"{r['gaussians']:,}", f"{r['pairs']:,}",
          cell(r, "images_per_second"), cell(r, "train_images_per_second"),
          f"{r['peak_memory_gb']:.2f}"] for r in rows])

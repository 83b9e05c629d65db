"""What a real machine can honour: a range for every number in the config, and an estimate
of the memory a config needs, checked before any work.

Pure arithmetic (no torch), so the CLI refuses an impossible config at once. The ranges are
data: ``tests/test_hostile_inputs.py`` checks that every number in the schema has one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from omegaconf import DictConfig

from . import registry

STEPS = 10_000_000          # far beyond any published run (DreamFusion: 15,000 steps)


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    low_open: bool = False          # (low, ...]: the value must exceed ``low``

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}]"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e12 else f"{x:g}"


def _positive(high: float) -> Range:
    return Range(0, high, low_open=True)


_STEP = Range(1, STEPS)
_STEP0 = Range(0, STEPS)
_UNIT = Range(0, 1)

RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),            # numpy's and every library's seed range
    "steps": _STEP, "height": Range(8, 4096), "width": Range(8, 4096),
    "batch_size": Range(1, 256),
    "nerf.bound": _positive(100), "nerf.hidden": Range(1, 1024), "nerf.layers": Range(1, 16),
    "nerf.blob_density": Range(0, 1000), "nerf.blob_radius": _positive(100),
    "nerf.fd_eps": _positive(1),
    "nerf.grid.n_levels": Range(1, 32), "nerf.grid.features": Range(1, 16),
    "nerf.grid.table_size_log2": Range(10, 24), "nerf.grid.base_resolution": Range(2, 4096),
    "nerf.grid.growth": Range(1, 4), "nerf.grid.start_levels": Range(0, 32),
    "nerf.grid.start_step": _STEP0, "nerf.grid.level_every": _STEP,
    "gaussians.count": Range(1, 10_000_000), "gaussians.init_radius": _positive(100),
    "gaussians.init_opacity": Range(0.001, 0.999),
    "gaussians.min_scale": Range(0, 10), "gaussians.max_count": Range(1, 10_000_000),
    "gaussians.densify.start": _STEP0, "gaussians.densify.stop": _STEP0,
    "gaussians.densify.every": _STEP, "gaussians.densify.grad_threshold": _positive(1e6),
    "gaussians.densify.percent_dense": _positive(1),
    "gaussians.densify.min_opacity": Range(0, 0.99),
    "gaussians.densify.max_screen_fraction": _positive(100),
    "gaussians.densify.max_world_fraction": _positive(100),
    "gaussians.densify.opacity_reset_every": _STEP0,
    "gaussians.lr.position": _positive(1e30), "gaussians.lr.position_final": _positive(1e30),
    "gaussians.lr.scale": _positive(1e30),
    "gaussians.lr.rotation": _positive(1e30), "gaussians.lr.opacity": _positive(1e30),
    "gaussians.lr.colour": _positive(1e30), "gaussians.lr.background": _positive(1e30),
    "refine.steps": _STEP, "refine.render_size": Range(16, 2048),
    "refine.tet_resolution": Range(4, 256), "refine.t_max": _positive(1),
    "refine.colour_hidden": Range(1, 1024), "refine.colour_fit_steps": Range(0, 100_000),
    "refine.colour_grid.n_levels": Range(1, 32), "refine.colour_grid.features": Range(1, 16),
    "refine.colour_grid.table_size_log2": Range(10, 24),
    "refine.colour_grid.base_resolution": Range(2, 4096), "refine.colour_grid.growth": Range(1, 4),
    "refine.colour_grid.start_levels": Range(0, 32), "refine.colour_grid.start_step": _STEP0,
    "refine.colour_grid.level_every": _STEP,
    "refine.lr.sdf": _positive(1e30), "refine.lr.deform": _positive(1e30),
    "refine.lr.colour": _positive(1e30), "refine.lr.background": _positive(1e30),
    "marcher.step_size": Range(1e-4, 10), "marcher.grid_resolution": Range(1, 512),
    "marcher.update_every": _STEP, "marcher.warmup_steps": _STEP0,
    "marcher.ema_decay": _positive(1), "marcher.threshold": _UNIT,
    "marcher.early_stop_eps": Range(0, 1),
    "shading.albedo": _UNIT, "shading.lambertian": _UNIT, "shading.textureless": _UNIT,
    "shading.ambient": _UNIT, "shading.diffuse": _UNIT, "shading.light_jitter": Range(0, 10),
    "shading.albedo_only_steps": _STEP0,
    "prompt.perp_neg_weight": Range(0, 100),
    "prompt.views.azimuth_centers": Range(-180, 180), "prompt.views.half_width": _positive(180),
    "prompt.views.min_elevation": Range(-90, 90), "prompt.views.max_elevation": Range(-90, 90),
    "guidance.guidance_scale": _positive(10_000), "guidance.grad_clip": _positive(1e6),
    "guidance.t_min": _positive(1), "guidance.t_max": _positive(1),
    "guidance.t_max_end": _positive(1), "guidance.t_min_end": _positive(1),
    "guidance.tp_mu": _UNIT, "guidance.tp_sigma": _positive(10),
    "guidance.render_size": Range(8, 4096), "guidance.references": Range(1, 4096),
    "guidance.uncond_per_caption": Range(1, 1024), "guidance.front_bias": _UNIT,
    "guidance.recon_std_rescale": _UNIT, "guidance.anneal_end": _positive(1),
    "guidance.camera_sigma": Range(0.1, 360),
    "camera.views_per_sample": Range(1, 16),
    # not a resource: any float32 a user may try (a test diverges a run with 1e30)
    "optim.lr": _positive(1e30), "optim.lr_grid_scale": _positive(1000),
    "optim.beta1": Range(0, 1), "optim.beta2": Range(0, 1), "optim.eps": _positive(1),
    "export.resolution": Range(8, 1024), "export.threshold": _positive(1e30),
    "export.texture_size": Range(0, 8192), "export.decimate": Range(0, 100_000_000),
    "export.keep_fraction": _UNIT,
    "output.val_every": _STEP, "output.val_size": Range(8, 2048),
    "output.turntable_frames": Range(1, 720), "output.turntable_size": Range(8, 2048),
    "output.turntable_elevation": Range(-90, 90), "output.log_every": _STEP,
    "output.eval_every": _STEP,
    "checkpoint.every": _STEP, "checkpoint.keep": Range(1, 1000),
    "faults.max_bad_steps": Range(1, 1_000_000), "faults.window": _STEP,
    "faults.lr_factor": Range(0, 1, low_open=True), "faults.max_rollbacks": Range(0, 1000),
    "faults.inject_nan_at": _STEP, "faults.kill_at_step": _STEP0,
    # regularizer weights, and the steps of their [start_step, start, end, end_step] ramps
    "regularizers.weight": Range(0, 1e6), "regularizers.step": _STEP0,
}

# [min, max] pairs: both ends within these bounds, min <= max
PAIR_RANGES: dict[str, tuple[float, float]] = {
    "camera.elevation": (-90.0, 90.0), "camera.azimuth": (-180.0, 180.0),
    "camera.distance": (1e-6, 100.0), "camera.fov": (1.0, 179.0)}

GIB = 1 << 30


def _hash_table_rows(cfg: DictConfig) -> int:
    g = cfg.nerf.grid
    table = 1 << g.table_size_log2
    rows = 0
    for level in range(g.n_levels):
        resolution = math.ceil(g.base_resolution * g.growth ** level - 1.0) + 1
        rows += min(resolution ** 3, table)
    return rows


def gaussian_needs(cfg: DictConfig) -> dict[str, int]:
    """Bytes by part for 3D Gaussians: ``max_count`` of them with gradients and Adam state
    (14 parameters and 3 statistics each), one training step's Gaussian-pixel pairs (at
    least 16 per pixel, 24 floats each kept for backward), renders and the export grid."""
    o = cfg.output
    pixels = cfg.batch_size * cfg.camera.views_per_sample * cfg.height * cfg.width
    render_pixels = max(4 * o.val_size ** 2, o.turntable_frames * o.turntable_size ** 2)
    floats = {
        "Gaussians with gradients and Adam state": cfg.gaussians.max_count * (4 * 14 + 3),
        "one training step's pairs": pixels * 16 * 24,
        "validation and turntable renders": render_pixels * 16 * 8,
        "export density grid": 3 * cfg.export.resolution ** 3 if cfg.export.enabled else 0,
    }
    return {what: 4 * count for what, count in floats.items()}


def mesh_needs(cfg: DictConfig) -> dict[str, int]:
    """Bytes by part for the mesh stage: the tetrahedral grid (``6 n^3`` tetrahedra of four
    int64 indices, ``(n+1)^3`` vertices with SDF, offsets, gradients and Adam state), the
    colour field with its state, marching's per-tetrahedron temporaries (about 40 floats
    each), one training step's pixels (about 64 floats each kept for backward, antialiasing
    included), the renders, and the first stage's surface samples."""
    r = cfg.refine
    n = r.tet_resolution
    g = r.colour_grid
    rows = sum(min((math.ceil(g.base_resolution * g.growth ** level - 1.0) + 1) ** 3,
                   1 << g.table_size_log2) for level in range(g.n_levels))
    pixels = cfg.batch_size * cfg.camera.views_per_sample * cfg.height * cfg.width
    o = cfg.output
    render_pixels = max(4 * o.val_size ** 2, o.turntable_frames * o.turntable_size ** 2)
    floats = {
        "tetrahedral grid with gradients and Adam state": 6 * n ** 3 * 8 + (n + 1) ** 3 * 20,
        "colour field with gradients and Adam state": 4 * rows * g.features,
        "marching tetrahedra": 6 * n ** 3 * 40,
        "one training step's pixels": pixels * 64,
        "validation and turntable renders": render_pixels * 32,
        "first stage's surface samples": 200_000 * 8,
    }
    return {what: 4 * count for what, count in floats.items()}


def memory_needs(cfg: DictConfig) -> dict[str, int]:
    """Bytes a run certainly allocates, by part, the model's state first: the estimate of the
    representation's registry entry."""
    return dict(registry.resolve(registry.representation(cfg.representation).memory)(cfg))


def nerf_needs(cfg: DictConfig) -> dict[str, int]:
    """Bytes by part for the NeRF: the hash grid with its gradient and Adam's two moments,
    the occupancy grid, one training step's samples (each ray through the initial blob's
    diameter, at ``marcher.step_size``), the largest no-grad render and the export's density
    grid."""
    n, g = cfg.nerf, cfg.nerf.grid
    features = g.n_levels * g.features
    params = _hash_table_rows(cfg) * g.features + features * n.hidden + n.hidden ** 2 * n.layers
    per_sample = 3 + features + 2 * n.hidden * n.layers + 8       # floats kept for backward
    if n.normals == "finite_difference":
        per_sample *= 4                         # three more density lookups per sample
    else:
        per_sample *= 3                         # the double backward of analytic normals
    samples_per_ray = max(1, math.ceil(2 * n.blob_radius / cfg.marcher.step_size))
    rays = cfg.batch_size * cfg.camera.views_per_sample * cfg.height * cfg.width
    o = cfg.output
    render_rays = max(4 * o.val_size ** 2, o.turntable_frames * o.turntable_size ** 2)
    floats = {
        "hash grid and MLP with gradients and Adam state": 4 * params,
        "occupancy grid": 2 * cfg.marcher.grid_resolution ** 3,
        "one training step's samples": rays * samples_per_ray * per_sample,
        "validation and turntable renders": render_rays * (16 + features),
        "export density grid": 3 * cfg.export.resolution ** 3 if cfg.export.enabled else 0,
    }
    return {what: 4 * count for what, count in floats.items()}


def machine_memory() -> int:
    """This machine's physical memory in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def memory_problem(cfg: DictConfig, available: int, where: str,
                   prior: dict[str, int] | None = None) -> str | None:
    """Why ``cfg`` cannot fit in ``available`` bytes of ``where`` memory, or None; ``prior``:
    the prior's own bytes by part (``Prior.memory_needs``), resident in every phase."""
    needs = {**memory_needs(cfg), **(prior or {})}
    resident = next(iter(needs.values()), 0) + sum((prior or {}).values())
    # the export runs after training has freed its samples: the peak is the larger phase
    export = needs.get("export density grid", 0)
    train = sum(v for k, v in needs.items() if k != "export density grid")
    peak = max(train, export + resident)
    if available <= 0 or peak <= available:
        return None
    parts = ", ".join(f"{what} {size / GIB:.1f}" for what, size in needs.items() if size)
    model = registry.representation(cfg.representation).model_keys
    weights = ("; the prior's weights alone need more: a smaller model, or half precision on "
               "a GPU" if prior and sum(prior.values()) > available else "")
    return (f"this config needs about {peak / GIB:.1f} GiB ({parts} GiB), more than the "
            f"{available / GIB:.1f} GiB of {where} memory; lower height, width, batch_size, "
            f"camera.views_per_sample, "
            f"{model} or export.resolution{weights}")

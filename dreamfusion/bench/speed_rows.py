"""The measurements of ``dreamfusion bench speed`` (its command: ``speed.py``): each backend
on this machine, measured in one run against the PyTorch reference.

Per row: hash-grid samples/s at DreamFusion's size, rendered rays/s at 64x64, toy-prior SDS
steps/s, the time of a finished toy run, and the peak memory of doing all that. The rows are
the PyTorch reference (hash grid and marcher) with the config's normals; the same with
analytic normals (the fastest all-PyTorch training render, so no ratio flatters the kernel);
and the fast paths: the compiled kernel on a CPU; nerfacc's marcher, then tiny-cuda-nn with
it, on CUDA. Each row is measured in a fresh process, so that its peak memory is its own.
One more row per machine: the SDS step through a Stable-Diffusion-sized UNet and VAE with
random weights, which no hash-grid backend changes.
"""
from __future__ import annotations

import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..rendering.cameras import sample_cameras
from ..nerf.hashgrid import HashGridEncoding
from ..nerf.marcher import load_nerfacc
from ..nerf.renderer import render
from ..rendering.shading import sample_light_directions
from ..pipeline.artifacts import write_json
from ..pipeline.build import build_prior, build_scene
from ..pipeline.inputs import select_device
from ..pipeline.run import run
from ..pipeline.train import Trainer
from ..utils.atomic import write_text
from ..utils.memory import limit_malloc_arenas
from .measure import best_seconds, peak_memory_gb, synchronize
from .mesh_speed import measure_mesh, mesh_backends, mesh_table
from .splat_speed import measure_splats, splat_backends, splat_table
from .tables import markdown_table
from .toy import machine

GRID = (16, 2, 19, 16, 1.447269237440378)      # DreamFusion-sized: 16 x 2 x 2^19, base 16
RENDER = 64                                     # DreamFusion's render size
PROMPT = "a red cube"


def grid_rates(backend: str, device: torch.device, points: int, repeats: int) -> dict:
    """Samples/s of the hash grid alone, forward and forward+backward (the table gradient,
    as in training), on uniform random points: no cache locality to lean on."""
    torch.manual_seed(0)
    enc = HashGridEncoding(*GRID, backend=backend).to(device)
    x = torch.rand(points, 3, device=device)
    grad = torch.randn(points, enc.output_dim, device=device)

    def forward() -> None:
        with torch.no_grad():
            enc(x)

    def forward_backward() -> None:
        enc.params.grad = None
        enc(x).backward(grad)

    return {"grid_forward": points / best_seconds(forward, device, repeats),
            "grid_forward_backward": points / best_seconds(forward_backward, device, repeats)}


def render_rates(cfg: DictConfig, device: torch.device, repeats: int) -> dict:
    """Rays/s of a 64x64 render of the config's starting field (the density blob) after one
    occupancy update: without gradients (albedo, as in validation) and with them (lambertian,
    normals and backward, as in training)."""
    torch.manual_seed(0)
    scene = build_scene(cfg, device)
    scene.grid.update(scene.field.density)
    c = cfg.camera
    cams = sample_cameras(1, tuple(c.elevation), tuple(c.azimuth), tuple(c.distance), tuple(c.fov))
    lights = sample_light_directions(cams.positions, 0.0)
    samples = []

    def evaluate() -> None:
        with torch.no_grad():
            out = render(scene.field, scene.grid, scene.background, cams, RENDER, RENDER,
                         scene.settings, "albedo")
        samples.append(out.n_samples)

    def train() -> None:
        out = render(scene.field, scene.grid, scene.background, cams, RENDER, RENDER,
                     scene.settings, "lambertian", lights)
        out.rgb.sum().backward()

    rays = RENDER * RENDER
    return {"render_rays": rays / best_seconds(evaluate, device, repeats),
            "render_train_rays": rays / best_seconds(train, device, repeats),
            "samples_per_ray": samples[-1] / rays}


def toy_step_rate(cfg: DictConfig, device: torch.device, steps: int) -> float:
    """SDS steps/s of the toy prior's training loop (render, guidance, backward, Adam),
    timed over ``steps`` steps after the prompts are encoded and one warm-up step."""
    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg, build_scene(cfg, device), build_prior(cfg, device), PROMPT)
    trainer.encode_prompts()
    trainer.train_step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    synchronize(device)
    return steps / (time.perf_counter() - start)


@dataclass(frozen=True)
class Row:
    label: str
    grid: str                     # nerf.grid.backend
    marcher: str                  # marcher.backend
    normals: str | None = None    # nerf.normals; None: the config's


def rows_for(device: torch.device) -> list[Row]:
    if device.type == "cpu":
        return [Row("torch", "torch", "torch"), Row("torch, analytic normals", "torch", "torch",
                                                    "analytic"), Row("cpp", "cpp", "torch")]
    return [Row("torch", "torch", "torch"), Row("torch, analytic normals", "torch", "torch",
                                                "analytic"),
            Row("torch + nerfacc", "torch", "nerfacc"), Row("tcnn + nerfacc", "tcnn", "nerfacc")]


def measure_backend(config: dict, row: Row, device_name: str, points: int, repeats: int,
                    toy_steps: int, toy_run: bool) -> dict:
    """Every measurement of one row; run in a fresh process (see the module's doc)."""
    device = select_device(device_name)
    nerf = {"grid": {"backend": row.grid}} | ({"normals": row.normals} if row.normals else {})
    cfg = OmegaConf.merge(config, {"device": device.type, "nerf": nerf,
                                   "marcher": {"backend": row.marcher}})
    backend = row.grid
    result = {"backend": row.label, "normals": cfg.nerf.normals,
              **grid_rates(backend, device, points, repeats),
           **render_rates(cfg, device, repeats)}
    result["toy_steps_per_second"] = toy_step_rate(cfg, device, toy_steps)
    result["peak_memory_gb"] = peak_memory_gb(device)[0]
    if toy_run:
        result.update(_in_fresh_process(measure_toy_run, OmegaConf.to_container(cfg), device_name))
    return result


def measure_toy_run(config: dict, device_name: str) -> dict:
    """A whole ``dreamfusion run`` of the toy prompt, in a process of its own as the command
    line runs it: its wall time, its IoU and its peak memory (what ``/usr/bin/time -v``
    calls maximum resident set size, on a CPU)."""
    limit_malloc_arenas()                    # as the command line does first
    device = select_device(device_name)
    with tempfile.TemporaryDirectory() as tmp:
        finished = run(PROMPT, OmegaConf.create(config), run_dir=Path(tmp) / "run", quiet=True)
    return {"toy_run_seconds": finished.seconds,
            "toy_run_iou": finished.metrics.get("silhouette_iou"),
            "toy_run_peak_gb": peak_memory_gb(device)[0]}


def measure_sd_step(device_name: str, steps: int) -> dict:
    from .sds_timing import time_sds_step

    return time_sds_step(select_device(device_name), steps, RENDER, 512, 100.0)


def _in_fresh_process(fn, *args):
    context = multiprocessing.get_context("spawn")     # fork would inherit our OpenMP threads
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def _available(row: Row, device: torch.device) -> tuple[bool, str]:
    if row.marcher == "nerfacc" and load_nerfacc() is None:
        return False, "nerfacc does not import with its CUDA kernels here"
    if row.grid == "torch":
        return True, ""
    enc = HashGridEncoding(*GRID, backend=row.grid).to(device)
    return enc.active_backend == row.grid, enc.describe_backend()


def _tables(rows: list[dict], sd: dict | None) -> str:
    ref = rows[0]
    ratio = lambda r, key: f"{r[key] / 1e6:.3f} ({r[key] / ref[key]:.1f}x)"   # noqa: E731
    main = markdown_table(
        ["machine", "backend", "normals", "grid fwd M samples/s", "grid fwd+bwd M samples/s",
         "render rays/s (no grad)", "render rays/s (train)", "toy SDS steps/s",
         "toy run s (IoU)", "toy run peak GB", "peak memory GB"],
        [[r["machine"], r["backend"], r["normals"], ratio(r, "grid_forward"), ratio(r, "grid_forward_backward"),
          f"{r['render_rays']:.0f} ({r['render_rays'] / ref['render_rays']:.1f}x)",
          f"{r['render_train_rays']:.0f} ({r['render_train_rays'] / ref['render_train_rays']:.1f}x)",
          f"{r['toy_steps_per_second']:.2f} ({r['toy_steps_per_second'] / ref['toy_steps_per_second']:.1f}x)",
          f"{r['toy_run_seconds']:.0f} ({r['toy_run_iou']:.3f})" if "toy_run_seconds" in r else "-",
          f"{r['toy_run_peak_gb']:.2f}" if "toy_run_peak_gb" in r else "-",
          f"{r['peak_memory_gb']:.2f}"] for r in rows])
    if sd is None:
        return main
    sd_table = markdown_table(
        ["machine", "device", "dtype", "render -> VAE input -> latent", "SDS steps/s",
         "s per step", "peak memory GB"],
        [[sd["machine"], sd["device"], sd["dtype"],
          f"{sd['render']}x{sd['render']} -> {sd['render_size']} -> {sd['latent']}",
          f"{sd['steps_per_second']:.3f}", f"{sd['seconds_per_step']:.2f}",
          f"{sd['peak_memory_gb']:.2f} ({sd['memory_kind']})"]])
    return main + "\n\nStable-Diffusion-sized SDS step (random weights):\n\n" + sd_table


def run_speed_bench(cfg: DictConfig, device_name: str, points: int, repeats: int,
                    toy_steps: int, toy_run: bool, sd_steps: int, results: str,
                    command: str) -> list[dict]:
    device = select_device(device_name)
    config = OmegaConf.to_container(cfg, resolve=True)
    build_prior(OmegaConf.merge(cfg, {"device": "cpu"}))   # toy references cached once, for all
    rows = []
    for spec in rows_for(device):
        ok, why = _available(spec, device)
        if not ok:
            print(f"skipping {spec.label}: {why}", flush=True)
            continue
        print(f"measuring {spec.label} ...", flush=True)
        row = _in_fresh_process(measure_backend, config, spec, device_name, points, repeats,
                                toy_steps, toy_run)
        rows.append({"machine": machine(), "device": device.type, **row})
    splats = []
    for backend in splat_backends(device):
        print(f"measuring the {backend} Gaussian rasteriser ...", flush=True)
        splats += [{"machine": machine(), **r} for r in
                   _in_fresh_process(measure_splats, backend, device.type, repeats)]
    meshes = []
    for backend in mesh_backends() if device.type == "cpu" else ["torch"]:
        print(f"measuring the {backend} mesh rasteriser ...", flush=True)
        meshes += [{"machine": machine(), **r} for r in
                   _in_fresh_process(measure_mesh, backend, device.type, repeats)]
    sd = None
    if sd_steps:
        print("measuring the SD-sized SDS step ...", flush=True)
        sd = _in_fresh_process(measure_sd_step, device_name, sd_steps)
    table = _tables(rows, sd) + "\n\n3D Gaussians, 64x64 lambertian renders of a ball of " \
        "Gaussians (opacity 0.5, scales of their neighbours' spacing) from one camera; " \
        "ratios to the PyTorch rasteriser:\n\n" + splat_table(splats) \
        + "\n\nThe mesh rasteriser (the refine stage's), a closed bumpy ball from one camera: " \
        "'visibility' is which triangle each pixel centre sees, the part the compiled kernel " \
        "does; a render is that, then rasterise's barycentrics, interpolated vertex colours " \
        "and antialias (the same PyTorch code after either visibility), and for 'train' the " \
        "backward to the vertices; ratios to the PyTorch visibility:\n\n" + mesh_table(meshes)
    text = (f"# Speed\n\nCommand: `{command}`\n\n"
            f"Hash grid: 16 levels x 2 features x 2^19 rows, base 16, on {points} uniform random "
            "points in the unit cube; forward+backward is the table gradient from a random output "
            f"gradient. Renders: {RENDER}x{RENDER} rays of the config's starting field after one "
            "occupancy update; 'train' renders lambertian with normals and runs the backward. "
            f"Toy SDS steps/s: {toy_steps} steps of the training loop after a warm-up step. The toy "
            f"run is `dreamfusion run \"{PROMPT}\"` with the config, wall clock, export and "
            "evaluation included, in a process of its own: its peak is what `/usr/bin/time -v` "
            "reports for the command (torch's CUDA wheel alone holds 0.52 GB once imported, "
            "and its optimiser's first step imports torch._dynamo, 0.14 GB more). Each "
            "backend runs in its own process; peak memory is that "
            "process's peak resident set (CPU) or peak allocated GPU memory (CUDA). Best of "
            f"{repeats} after a warm-up for the grid and renders; ratios are to the first (torch) "
            "row of the same run, which computes what the fast rows compute. Normals: "
            "`finite_difference` (forward differences, first derivatives: every backend serves "
            "them) or `analytic` (autograd's second derivative: the PyTorch encoding only, and "
            "the faster choice for it), so the second row is the fastest all-PyTorch training "
            f"step.\n\n{table}\n")
    suffix = device.type
    write_text(Path(results) / f"speed_{suffix}.md", text)
    write_json(Path(results) / f"speed_{suffix}.json",
               {"command": command, "machine": machine(), "grid": GRID, "points": points,
                "config": config, "rows": rows, "gaussian_rows": splats, "mesh_rows": meshes,
                "sd_step": sd})
    print(table)
    return rows

"""``dreamfusion bench gpu``: one command that proves the CUDA path on a machine with one GPU
and no internet, and writes ``results/speed_cuda.md``.

In order: the CUDA-only tests (``CUDA_TESTS``, where the checkout has them: the hash grid and
marcher backends, gsplat against the PyTorch rasteriser); each backend against the PyTorch
reference (``bench speed``: nerfacc and our marcher, the PyTorch hash grid, tiny-cuda-nn
where it imports, gsplat for 10k and 50k Gaussians); one SDS step through an SD
2.1-base-sized UNet and VAE with random weights in fp16 at DreamFusion's setting (64x64 render
-> 512 -> 64x64 latent, batch 1, guidance 100), and one through an MVDream-sized one (the
same with its camera MLP and multi-view attention: 4 views of 256x256, guidance 50); and ``dreamfusion run`` with
``dreamfusion-sd.yaml`` (a NeRF) and ``dreamgaussian-sd.yaml`` (3D Gaussians) for
``--run-steps`` steps each on a random SD 2.1-base written to disk in the published layout
(so loading is on the path too), exporting their meshes, then ``dreamfusion refine`` of the
NeRF run (the mesh stage at the SD configs' 512-pixel stage-2 setting, nvdiffrast where it
imports) for as many steps. ``--tiny`` swaps in tiny models and sizes,
which is how the tests run it on a CPU.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# the tests with CUDA-only parts, relative to a checkout; a pip-installed package has no tests/
CUDA_TESTS = ("tests/test_cuda_backends.py", "tests/test_gaussians.py")
RUN_CONFIGS = ("dreamfusion-sd", "dreamgaussian-sd")     # a NeRF run and a Gaussian run


def add_parser(subparsers: Any) -> None:
    gpu = subparsers.add_parser("gpu", help="prove the CUDA path in one command -> results/speed_cuda.md")
    gpu.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                     help="cuda (the check); cpu only to test this command")
    gpu.add_argument("--run-steps", type=int, default=300, help="steps of the SD run")
    gpu.add_argument("--sd-steps", type=int, default=10, help="SDS steps timed")
    gpu.add_argument("--tiny", action="store_true", help="tiny models and sizes (a test of this command)")
    gpu.add_argument("--skip-tests", action="store_true", help="do not run the CUDA-only tests")
    gpu.add_argument("--results", default="results")


def main(args: argparse.Namespace) -> int:
    from ..errors import UserError

    if args.overrides:
        raise UserError(f"bench gpu takes no config overrides: {' '.join(args.overrides)}")
    if args.run_steps < 1 or args.sd_steps < 1:
        raise UserError("--run-steps and --sd-steps must be >= 1")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("bench gpu needs a CUDA GPU (torch.cuda.is_available() is False); "
                            "--device cpu --tiny only tests the command")
    run_gpu_bench(args.device, args.run_steps, args.sd_steps, args.tiny, not args.skip_tests,
                  Path(args.results), _command(args))
    return 0


def _command(args: argparse.Namespace) -> str:
    flags = ["--device", args.device, "--run-steps", str(args.run_steps),
             "--sd-steps", str(args.sd_steps)]
    return " ".join(["dreamfusion bench gpu", *flags] + ["--tiny"] * args.tiny
                    + ["--skip-tests"] * args.skip_tests)


def cuda_tests() -> dict:
    """Run the CUDA-only tests in a child pytest; their summary line and exit code."""
    if not all(Path(t).is_file() for t in CUDA_TESTS):
        return {"summary": f"not run: no {', '.join(CUDA_TESTS)} here (run from a checkout)",
                "exit_code": None}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", *CUDA_TESTS],
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    summary = next((ln.strip("= ") for ln in reversed(lines)
                    if re.search(r"\d+ (passed|failed|skipped|error)", ln)), "no summary")
    skips = [ln for ln in lines if ln.startswith("SKIPPED")]
    return {"summary": summary, "exit_code": done.returncode, "skipped": skips,
            "seconds": round(time.perf_counter() - start, 1)}


def sd_run(device: str, steps: int, tiny: bool, folder: Path,
           config: str = "dreamfusion-sd") -> dict:
    """``dreamfusion run`` with ``config`` for ``steps`` steps on a random SD written to
    ``folder``: steps/s, peak memory, and whether it exported a mesh."""
    import torch

    from ..config import load_config
    from ..pipeline.run import run
    from .measure import reset_peak_memory
    from .random_models import TINY, save_random_stable_diffusion
    from .sds_timing import sd21_base_configs

    written = time.perf_counter()
    configs = TINY if tiny else sd21_base_configs()
    half = torch.float16 if device == "cuda" else torch.float32
    model = folder / "random-sd"
    if not model.is_dir():          # one random SD for every run of the check
        save_random_stable_diffusion(model, configs, dtype=half)
    write_s = time.perf_counter() - written
    overrides = [f"guidance.model={model}", f"steps={steps}", f"device={device}",
                 f"output.val_every={steps}", f"checkpoint.every={steps}",
                 f"guidance.cache_dir={folder / 'cache'}", "export.texture_size=256"]
    if tiny:
        overrides += ["height=16", "width=16", "nerf.grid.n_levels=4", "nerf.grid.start_levels=2",
                      "nerf.grid.start_step=1", "nerf.grid.level_every=1",
                      "nerf.grid.table_size_log2=12", "nerf.hidden=16",
                      "marcher.grid_resolution=16", "marcher.warmup_steps=2",
                      "shading.albedo_only_steps=1", "export.resolution=32",
                      "output.val_size=16", "output.turntable_frames=3",
                      "output.turntable_size=16", "nerf.blob_density=10",
                      "gaussians.count=300", "gaussians.init_opacity=0.5"]
    cfg = load_config(config, overrides)
    reset_peak_memory(torch.device(device))          # this run's peak, not the check's so far
    result = run("a hamburger", cfg, run_dir=folder / config, quiet=True)
    return {**_run_record(result, cfg.representation, config, steps, device),
            "write_model_seconds": round(write_s, 1)}


def refine_run(device: str, steps: int, tiny: bool, source: Path) -> dict:
    """``dreamfusion refine`` of the SD NeRF run in ``source`` for ``steps`` steps at the SD
    configs' stage-2 settings (512-pixel renders, a 128-cell grid; nvdiffrast where it
    imports): steps/s, peak memory, the rasteriser it used and what it exported."""
    import torch

    from ..errors import UserError
    from ..pipeline.refine import refine
    from .measure import reset_peak_memory

    overrides = [f"refine.steps={steps}", f"checkpoint.every={steps}",
                 f"output.val_every={steps}"]
    if tiny:
        overrides += ["refine.render_size=16", "refine.tet_resolution=12",
                      "refine.colour_fit_steps=5", "refine.colour_grid.n_levels=4",
                      "refine.colour_grid.table_size_log2=12"]
    reset_peak_memory(torch.device(device))
    try:
        result = refine(source, overrides, quiet=True)
    except UserError as exc:            # e.g. a random prior's first stage with no surface
        return {"config": "refine of dreamfusion-sd", "steps": 0, "refused": str(exc)}
    return _run_record(result, "mesh", "refine of dreamfusion-sd", steps, device)


def _run_record(result: Any, representation: str, config: str, steps: int, device: str
                ) -> dict:
    import torch

    from ..config import registry
    from .measure import peak_memory_gb

    memory, kind = peak_memory_gb(torch.device(device))
    m = result.metrics
    return {"config": config, "steps": steps, "train_seconds": m["train_seconds"],
            "steps_per_second": round(steps / max(m["train_seconds"], 1e-9), 2),
            "peak_memory_gb": round(memory, 2), "memory_kind": kind,
            "exported": sorted(f for f in result.files if f.startswith("model.")),
            "backend": m[registry.representation(representation).backend_key],
            "total_seconds": round(result.seconds, 1)}


def run_gpu_bench(device: str, run_steps: int, sd_steps: int, tiny: bool, tests: bool,
                  results: Path, command: str) -> dict:
    from ..config import load_config
    from ..pipeline.artifacts import write_json
    from ..utils.atomic import write_text
    from .speed_rows import run_speed_bench
    from .sds_timing import time_sds_step
    from .toy import machine

    started = time.perf_counter()
    report: dict = {"command": command, "machine": machine()}
    if tests:
        print("CUDA-only tests ...", flush=True)
        report["tests"] = cuda_tests()
    print("backends against the PyTorch reference ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        points, repeats, toy_steps = (2000, 1, 2) if tiny else (262144, 3, 30)
        overrides = ["steps=4", "height=16", "width=16", "guidance.references=16"] if tiny else []
        # no full toy runs: four of them would take half of the check's time
        rows = run_speed_bench(load_config("toy", overrides), device, points, repeats, toy_steps,
                               False, 0, tmp, "(part of bench gpu)")
        speed_table = (Path(tmp) / f"speed_{device}.md").read_text(encoding="utf-8")
    report["backends"] = rows
    print("SD-sized SDS step ...", flush=True)
    import torch

    report["sds_step"] = time_sds_step(torch.device(device), sd_steps, 64 if not tiny else 16,
                                       512 if not tiny else 32, 100.0, tiny=tiny)
    print("MVDream-sized SDS step ...", flush=True)
    # threestudio-mvdream's second phase: four 256x256 views, guidance 50
    report["mvdream_step"] = time_sds_step(torch.device(device), sd_steps, 256 if not tiny else 16,
                                           256 if not tiny else 32, 50.0, tiny=tiny, views=4)
    report["sd_runs"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in RUN_CONFIGS:
            print(f"dreamfusion run --config {config}, {run_steps} steps on a random SD ...",
                  flush=True)
            report["sd_runs"].append(sd_run(device, run_steps, tiny, Path(tmp), config))
        print(f"dreamfusion refine of the dreamfusion-sd run, {run_steps} steps ...", flush=True)
        report["sd_runs"].append(refine_run(device, run_steps, tiny, Path(tmp) / RUN_CONFIGS[0]))
    report["seconds"] = round(time.perf_counter() - started, 1)
    name = f"speed_{device}" if not tiny else f"speed_{device}_tiny"
    write_text(results / f"{name}.md", _markdown(report, speed_table))
    write_json(results / f"{name}.json", report)
    print(f"wrote {results / (name + '.md')} in {report['seconds']:.0f} s")
    return report


def _markdown(r: dict, speed_table: str) -> str:
    from .tables import markdown_table

    tests = r.get("tests")
    tests_text = ("not run (--skip-tests)" if tests is None else
                  f"`{' '.join(CUDA_TESTS)}`: {tests['summary']}" +
                  "".join(f"\n- {s}" for s in tests.get("skipped", [])))
    step = markdown_table(
        ["model", "device", "dtype", "views x render -> VAE input -> latent", "guidance",
         "SDS steps/s", "peak memory GB"],
        [[name, s["device"], s["dtype"], f"{s.get('views', 1)} x {s['render']}x{s['render']} -> "
          f"{s['render_size']} -> {s['latent']}", f"{s['guidance_scale']:g}",
          f"{s['steps_per_second']:.2f}", f"{s['peak_memory_gb']:.2f} ({s['memory_kind']})"]
         for name, s in (("SD 2.1-base", r["sds_step"]), ("MVDream", r.get("mvdream_step")))
         if s is not None])
    runs = markdown_table(
        ["config", "steps", "steps/s", "train s", "peak memory GB", "backend", "exported"],
        [[run["config"], run["steps"], f"{run['steps_per_second']:.2f}",
          f"{run['train_seconds']:.1f}", f"{run['peak_memory_gb']:.2f}", run["backend"],
          ", ".join(run["exported"]) or "nothing"] if "refused" not in run else
         [run["config"], 0, "-", "-", "-", "-", f"refused: {run['refused']}"]
         for run in r["sd_runs"]])
    body = speed_table.split("\n", 2)[2] if speed_table.startswith("# ") else speed_table
    return (f"# GPU check\n\nCommand: `{r['command']}` ({r['seconds']:.0f} s)\n\n"
            f"Machine: {r['machine']}\n\n## CUDA-only tests\n\n{tests_text}\n\n"
            f"## Backends\n{body}\n## SD- and MVDream-sized SDS steps (random SD 2.1-base "
            f"weights; MVDream's with its camera MLP)\n\n"
            f"{step}\n\n## `dreamfusion run` on random SD 2.1-base weights (written and loaded "
            f"from disk)\n\n{runs}\n")

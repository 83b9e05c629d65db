"""``dreamfusion bench toy``: toy-world runs scored against their exact ground truth."""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..pipeline.artifacts import write_json
from ..pipeline.inputs import prepare, slugify
from ..pipeline.run import RunResult, latest_checkpoint, run
from ..utils.atomic import write_text
from .tables import markdown_table

DEFAULT_PROMPTS = ("a red cube", "a blue torus", "a green cylinder", "a yellow duck")
METRICS = (
    "Silhouette IoU: the rendered opacity (> 0.5) against the true silhouette, one ray per "
    "pixel centre for both, 64x64, at 8 azimuths (every 45 deg from the front) and 15 deg "
    "elevation; side views are azimuths +-90 deg. Best-yaw IoU is the same after turning the "
    "result about the vertical axis by the best multiple of 9 deg: the toy prior sees a "
    "symmetric object such as the cube from random azimuths and cannot fix its yaw, so a "
    "well-shaped cube may stand turned; the headline IoU counts that against it, the best-yaw "
    "column shows the shape alone. Times are wall-clock seconds of each `dreamfusion run`, "
    "including export, turntable and this evaluation, and the rendering of the toy references "
    "when their cache is cold. Chamfer: the symmetric Chamfer distance between the exported "
    "mesh (what the user gets: decimated, floaters dropped) and the true surface, 20000 "
    "area-uniform samples each, in world units and as a share of the true object's "
    "bounding-box diagonal; best-yaw Chamfer after the best turn about the vertical axis.")
BARS = {"a red cube": 0.85, "a blue torus": 0.85, "a green cylinder": 0.85, "a yellow duck": 0.75}


def machine() -> str:
    return (f"{platform.machine()} {platform.processor() or platform.system()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def progress_line(done: int, total: int, started: float, what: str) -> str:
    """``[done/total] what; elapsed, ETA`` (runs skipped as finished count as done)."""
    elapsed = time.perf_counter() - started
    eta = elapsed / done * (total - done)
    return f"[{done}/{total}] {what}; {elapsed / 60:.1f} min elapsed, ETA {eta / 60:.1f} min"


def run_once(cfg: DictConfig, prompt: str, seed: int, run_dir: Path) -> dict:
    """One seeded run into ``run_dir``, or its summary if it finished before."""
    summary = run_dir / "summary.json"
    if summary.is_file():           # finished earlier: re-running the bench resumes
        return json.loads(summary.read_text())
    seeded = OmegaConf.merge(cfg, {"seed": seed})
    loaded, _ = latest_checkpoint(run_dir)     # stopped earlier: continue where it stopped
    result: RunResult = run(prompt, seeded, run_dir=run_dir, quiet=True, resume_from=loaded)
    return {"prompt": prompt, "seed": seed, **result.metrics}


def _chamfer(r: dict, key: str) -> str:
    if key not in r:
        return "-"
    return f"{r[key]:.4f} ({100 * r[key] / r['true_size']:.1f}%)"


def _table(rows: list[dict]) -> str:
    return markdown_table(
        ["prompt", "seed", "silhouette IoU", "side-view IoU", "best-yaw IoU (yaw)",
         "Chamfer (% of size)", "best-yaw Chamfer", "train s", "total s"],
        [[r["prompt"], r["seed"], f"{r['silhouette_iou']:.3f}", f"{r['side_iou']:.3f}",
          f"{r['best_yaw_iou']:.3f} ({r['best_yaw']:+.0f})", _chamfer(r, "chamfer"),
          _chamfer(r, "chamfer_best_yaw"), f"{r['train_seconds']:.0f}",
          f"{r['total_seconds']:.0f}"] for r in rows])


def _summary(rows: list[dict]) -> str:
    out = []
    for prompt in dict.fromkeys(r["prompt"] for r in rows):
        ious = [r["silhouette_iou"] for r in rows if r["prompt"] == prompt]
        bar = BARS.get(prompt)
        met = "" if bar is None else f"{sum(i >= bar for i in ious)} of {len(ious)}"
        out.append([prompt, len(ious), f"{sum(ious) / len(ious):.3f}", f"{min(ious):.3f}",
                    "" if bar is None else f"{bar:.2f}", met])
    return markdown_table(["prompt", "seeds", "IoU mean", "IoU min", "bar",
                           "seeds at or above the bar"], out)


def run_toy_bench(cfg: DictConfig, prompts: list[str] | None, seeds: list[int],
                  results: str, runs: str, command_args: list[str]) -> list[dict]:
    prompts = list(prompts or DEFAULT_PROMPTS)
    for prompt in prompts:          # every bad prompt is refused before the first run starts
        prepare(prompt, cfg, root_check=False)
    runs_dir, results_dir = Path(runs), Path(results)
    rows, total, started = [], len(prompts) * len(seeds), time.perf_counter()
    for prompt in prompts:
        for seed in seeds:
            rows.append(run_once(cfg, prompt, seed, runs_dir / f"{slugify(prompt)}-seed{seed}"))
            r = rows[-1]
            print(progress_line(len(rows), total, started,
                                f"{prompt!r} seed {seed}: IoU {r['silhouette_iou']:.3f} (side "
                                f"{r['side_iou']:.3f}), {r['total_seconds']:.0f} s"), flush=True)
    given = ""
    if prompts != list(DEFAULT_PROMPTS):
        given = " --prompts " + " ".join(repr(p) for p in prompts)
    command = (f"dreamfusion bench toy --config {command_args[0]}{given} --seeds "
               f"{' '.join(map(str, seeds))} --runs {runs} " + " ".join(command_args[1:]))
    header = (f"# Toy-world benchmark\n\nCommand: `{command.strip()}`"
              f"\n\nMachine: {machine()}\n\n{METRICS}\n\n")
    write_text(results_dir / "toy.md",
               header + _summary(rows) + "\n\n## Runs\n\n" + _table(rows) + "\n")
    write_json(results_dir / "toy.json", {
        "command": command.strip(), "config_name": command_args[0], "machine": machine(),
        "argv": sys.argv, "config": OmegaConf.to_container(cfg), "rows": rows})
    print(_summary(rows))
    return rows

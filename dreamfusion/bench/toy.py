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
from ..pipeline.run import RunResult, prepare, run, slugify
from ..utils.atomic import write_text

DEFAULT_PROMPTS = ("a red cube", "a blue torus", "a green cylinder", "a yellow duck")
BARS = {"a red cube": 0.85, "a blue torus": 0.85, "a green cylinder": 0.85, "a yellow duck": 0.75}


def machine() -> str:
    return (f"{platform.machine()} {platform.processor() or platform.system()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def _one(cfg: DictConfig, prompt: str, seed: int, runs: Path) -> dict:
    run_dir = runs / f"{slugify(prompt)}-seed{seed}"
    summary = run_dir / "summary.json"
    if summary.is_file():           # finished earlier: re-running the bench resumes
        return json.loads(summary.read_text())
    seeded = OmegaConf.merge(cfg, {"seed": seed})
    result: RunResult = run(prompt, seeded, run_dir=run_dir, quiet=True)
    return {"prompt": prompt, "seed": seed, **result.metrics}


def _table(rows: list[dict]) -> str:
    lines = ["| prompt | seed | silhouette IoU | side-view IoU | bar | train s | total s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        bar = BARS.get(r["prompt"])
        verdict = "" if bar is None else f"{bar:.2f} {'met' if r['silhouette_iou'] >= bar else 'MISSED'}"
        lines.append(f"| {r['prompt']} | {r['seed']} | {r['silhouette_iou']:.3f} | "
                     f"{r['side_iou']:.3f} | {verdict} | {r['train_seconds']:.0f} | "
                     f"{r['total_seconds']:.0f} |")
    return "\n".join(lines)


def run_toy_bench(cfg: DictConfig, prompts: list[str] | None, seeds: list[int],
                  results: str, runs: str, command_args: list[str]) -> list[dict]:
    prompts = list(prompts or DEFAULT_PROMPTS)
    for prompt in prompts:          # every bad prompt is refused before the first run starts
        prepare(prompt, cfg)
    runs_dir, results_dir = Path(runs), Path(results)
    rows, total, started = [], len(prompts) * len(seeds), time.perf_counter()
    for prompt in prompts:
        for seed in seeds:
            rows.append(_one(cfg, prompt, seed, runs_dir))
            done = len(rows)
            eta = (time.perf_counter() - started) / done * (total - done)
            r = rows[-1]
            print(f"[{done}/{total}] {prompt!r} seed {seed}: IoU {r['silhouette_iou']:.3f} "
                  f"(side {r['side_iou']:.3f}), {r['total_seconds']:.0f} s; ETA {eta:.0f} s",
                  flush=True)
    command = "dreamfusion bench toy " + " ".join(command_args[1:])
    header = (f"# Toy-world benchmark\n\nCommand: `{command.strip()}` (config `{command_args[0]}`)"
              f"\n\nMachine: {machine()}\n\nSilhouette IoU of the rendered opacity (> 0.5) "
              "against the true silhouette, 64x64, 8 azimuths at 15 deg elevation; side views "
              "are azimuth +-90 deg. Times are wall-clock seconds of each `dreamfusion run`.\n\n")
    write_text(results_dir / "toy.md", header + _table(rows) + "\n")
    write_json(results_dir / "toy.json", {
        "command": command.strip(), "config_name": command_args[0], "machine": machine(),
        "argv": sys.argv, "config": OmegaConf.to_container(cfg), "rows": rows})
    print(_table(rows))
    return rows

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
from ..pipeline.checkpoint import CheckpointStore
from ..pipeline.run import RunResult, run
from ..utils.atomic import write_text
from .tables import markdown_table

# not "a white sphere": white on the white background gives the prior almost nothing to see
DEFAULT_PROMPTS = ("a red cube", "a blue torus", "a green cylinder", "a purple sphere",
                   "an orange cone", "a yellow duck")
METRICS = (
    "Settings: the toy config's defaults, which are DreamFusion's (uniform t in [0.02, 0.98],"
    " the nearest view's prompt: front, side, back, overhead); each Janus remedy and schedule"
    ' is compared in [remedies.md](remedies.md). Silhouette IoU: the rendered opacity (> 0.5)'
    ' against the true silhouette, one ray per pixel centre for both, 64x64, at 8 azimuths '
    '(every 45 deg from the front) x 2 elevations (15 and 40 deg); side views are azimuths '
    '+-90 deg. Best-yaw IoU is the same after turning the result about the vertical axis by '
    'the best multiple of 9 deg: the toy prior sees a symmetric object such as the cube from '
    'random azimuths and cannot fix its yaw, so a well-shaped cube may stand turned; the '
    'headline IoU counts that against it, the best-yaw column shows the shape alone. The bars'
    ' (0.85; 0.75 for the duck) were set on the 8 views at 15 deg, so they are checked '
    'against that column. Colour error: mean absolute albedo error per channel (0-1) over the'
    ' pixels both the result and the truth cover, same 16 views. Toy R@1: the share of 16 '
    'colour renders whose nearest reference image (L2, 32 references of each of the 42 toy '
    "captions) belongs to the run's own caption. Janus (objects with a front): the share of "
    "the solid above the duck's body that lies behind it (0 is right, 0.5 two-faced, 1 turned"
    ' round). Chamfer: the symmetric Chamfer distance between the exported mesh (what the '
    'user gets: decimated, floaters dropped) and the true surface, 20000 area-uniform samples'
    " each, in world units and as a share of the true object's bounding-box diagonal. Times "
    'are wall-clock seconds of each `dreamfusion run`, including export, turntable and this '
    'evaluation, and the rendering of the toy references when their cache is cold. Every '
    "figure is the one `dreamfusion run` printed and wrote to the run's `summary.json`.")
BARS = {"a red cube": 0.85, "a blue torus": 0.85, "a green cylinder": 0.85, "a yellow duck": 0.75}


def machine() -> str:
    return (f"{platform.machine()} {platform.processor() or platform.system()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {platform.python_version()}")


class Progress:
    """``[done/total] what; elapsed, ETA`` for a bench's runs; the ETA counts only the runs
    trained by this invocation, since a run that finished before is skipped at no cost."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.trained = total, 0, 0
        self.started = time.perf_counter()

    def line(self, what: str, trained: bool) -> str:
        self.done += 1
        self.trained += trained
        elapsed = time.perf_counter() - self.started
        eta = (f"ETA {elapsed / self.trained * (self.total - self.done) / 60:.1f} min"
               if self.trained else "ETA unknown")
        return f"[{self.done}/{self.total}] {what}; {elapsed / 60:.1f} min elapsed, {eta}"


def finished(run_dir: Path) -> bool:
    """Whether the run wrote its summary, its last file: a bench re-run skips it."""
    return (run_dir / "summary.json").is_file()


def run_once(cfg: DictConfig, prompt: str, seed: int, run_dir: Path) -> dict:
    """One seeded run into ``run_dir``, or its summary if it finished before."""
    summary = run_dir / "summary.json"
    if finished(run_dir):           # finished earlier: re-running the bench resumes
        return json.loads(summary.read_text())
    seeded = OmegaConf.merge(cfg, {"seed": seed})
    loaded = CheckpointStore(run_dir).latest()     # stopped earlier: continue where it stopped
    result: RunResult = run(prompt, seeded, run_dir=run_dir, quiet=True, resume_from=loaded)
    return {"prompt": prompt, "seed": seed, **result.metrics}


def _chamfer(r: dict, key: str) -> str:
    if key not in r:
        return "-"
    return f"{r[key]:.4f} ({100 * r[key] / r['true_size']:.1f}%)"


def _opt(r: dict, key: str, fmt: str) -> str:
    return "-" if key not in r else format(r[key], fmt)


def _table(rows: list[dict]) -> str:
    return markdown_table(
        ["prompt", "seed", "silhouette IoU", "side-view IoU", "best-yaw IoU (yaw)",
         "colour error", "toy R@1", "Janus", "Chamfer (% of size)", "best-yaw Chamfer",
         "train s", "total s"],
        [[r["prompt"], r["seed"], f"{r['silhouette_iou']:.3f}", f"{r['side_iou']:.3f}",
          f"{r['best_yaw_iou']:.3f} ({r['best_yaw']:+.0f})", _opt(r, "colour_error", ".3f"),
          _opt(r, "toy_r_precision", ".2f"), _opt(r, "janus", ".3f"), _chamfer(r, "chamfer"),
          _chamfer(r, "chamfer_best_yaw"), f"{r['train_seconds']:.0f}",
          f"{r['total_seconds']:.0f}"] for r in rows])


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


def _summary(rows: list[dict]) -> str:
    out = []
    for prompt in dict.fromkeys(r["prompt"] for r in rows):
        mine = [r for r in rows if r["prompt"] == prompt]
        ious = [r["silhouette_iou"] for r in mine]
        low = [iou_at_15(r) for r in mine]
        bar = BARS.get(prompt)
        met = "" if bar is None else f"{sum(i >= bar for i in low)} of {len(low)}"
        cells = [_mean(mine, k) for k in ("side_iou", "colour_error", "toy_r_precision", "janus")]
        chamfer = [100 * r["chamfer"] / r["true_size"] for r in mine if "chamfer" in r]
        out.append([prompt, len(ious), f"{sum(ious) / len(ious):.3f}", f"{min(ious):.3f}",
                    f"{sum(low) / len(low):.3f} ({min(low):.3f})",
                    *("-" if c is None else f"{c:.3f}" for c in cells),
                    f"{sum(chamfer) / len(chamfer):.1f}%" if chamfer else "-",
                    "" if bar is None else f"{bar:.2f}", met])
    return markdown_table(["prompt", "seeds", "IoU mean", "IoU min",
                           "IoU at 15 deg: mean (min)", "side IoU mean", "colour error mean",
                           "toy R@1 mean", "Janus mean", "Chamfer mean (% of size)",
                           "bar (IoU at 15 deg)", "seeds at or above the bar"], out)


def iou_at_15(row: dict) -> float:
    """The IoU over the 8 azimuths at 15 deg alone: the measure the bars were set on."""
    views = row["iou_per_view"][:8]
    return sum(views) / len(views)


def write_figures(rows: list[dict], run_dirs: list[Path], results_dir: Path, name: str,
                  key: str = "prompt") -> list[str]:
    """An image strip per run and the IoU-against-step plot, runs grouped by ``row[key]``;
    returns the Markdown that shows them."""
    from .figures import eval_curve, plot_curves, write_strip

    strips = []
    for r, run_dir in zip(rows, run_dirs):
        path = results_dir / "images" / name / f"{slugify(r[key])}-seed{r['seed']}.png"
        write_strip(run_dir, path)
        strips.append(path)
    curves: dict[str, list] = {}
    for r, run_dir in zip(rows, run_dirs):
        curve = eval_curve(run_dir)
        if curve[0]:
            curves.setdefault(r[key], []).append(curve)
    plot = results_dir / "plots" / f"{name}_iou_vs_step.png"
    if curves:
        plot_curves(curves, plot, "silhouette IoU (8 azimuths, 15 deg)",
                    "IoU against step, one line per seed")
    lines = [f"![IoU against step](plots/{plot.name})"] if curves else []
    for group in dict.fromkeys(r[key] for r in rows):
        shown = [(r, p) for r, p in zip(rows, strips) if r[key] == group]
        lines.append(f"**{group}**, 8 azimuths from the front, one row per seed:\n\n"
                     + "\n".join(f"![{group}, seed {r['seed']}](images/{name}/{p.name})"
                                  for r, p in shown))
    return lines


def run_toy_bench(cfg: DictConfig, prompts: list[str] | None, seeds: list[int],
                  results: str, runs: str, command_args: list[str]) -> list[dict]:
    prompts = list(prompts or DEFAULT_PROMPTS)
    for prompt in prompts:          # every bad prompt is refused before the first run starts
        prepare(prompt, cfg, root_check=False)
    runs_dir, results_dir = Path(runs), Path(results)
    rows, run_dirs, progress = [], [], Progress(len(prompts) * len(seeds))
    for prompt in prompts:
        for seed in seeds:
            run_dirs.append(runs_dir / f"{slugify(prompt)}-seed{seed}")
            trained = not finished(run_dirs[-1])
            rows.append(run_once(cfg, prompt, seed, run_dirs[-1]))
            r = rows[-1]
            print(progress.line(f"{prompt!r} seed {seed}: IoU {r['silhouette_iou']:.3f} (side "
                                f"{r['side_iou']:.3f}), {r['total_seconds']:.0f} s", trained),
                  flush=True)
    gallery = write_figures(rows, run_dirs, results_dir, "toy")
    given = ""
    if prompts != list(DEFAULT_PROMPTS):
        given = " --prompts " + " ".join(repr(p) for p in prompts)
    command = (f"dreamfusion bench toy --config {command_args[0]}{given} --seeds "
               f"{' '.join(map(str, seeds))} --runs {runs} " + " ".join(command_args[1:]))
    header = (f"# Toy-world benchmark\n\nCommand: `{command.strip()}`"
              f"\n\nMachine: {machine()}\n\n{METRICS}\n\n")
    write_text(results_dir / "toy.md",
               header + _summary(rows) + "\n\n## Runs\n\n" + _table(rows) + "\n\n## Gallery\n\n"
               + "\n\n".join(gallery) + "\n")
    write_json(results_dir / "toy.json", {
        "command": command.strip(), "config_name": command_args[0], "machine": machine(),
        "argv": sys.argv, "config": OmegaConf.to_container(cfg), "rows": rows})
    print(_summary(rows))
    return rows

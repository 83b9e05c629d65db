"""``dreamfusion bench toy``: toy-world runs scored against their exact ground truth.

Its parser is built with the CLI's, so torch and the pipeline are imported where they are
used: bad input is refused without them."""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import load_config, registry
from ..errors import UserError
from ..pipeline.inputs import prepare, slugify
from ..utils.atomic import write_text
from .fanout import Executor, Job, LocalExecutor, add_executor_args, executor_flags, \
    executor_from_args, run_all, summaries
from .tables import markdown_table

# not "a white sphere": white on the white background gives the prior almost nothing to see
DEFAULT_PROMPTS = ("a red cube", "a blue torus", "a green cylinder", "a purple sphere",
                   "an orange cone", "a yellow duck")
METRICS = (
    "Settings: each config's own, one config per representation: `toy` (the NeRF, with "
    "DreamFusion's settings: uniform t in [0.02, 0.98], the nearest view's prompt: front, side,"
    " back, overhead; 1000 steps) and `toy-gaussians` (3D Gaussians with the same prior, "
    "cameras, prompts and t; 500 steps); each Janus remedy and schedule"
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
    " each, in world units and as a share of the true object's bounding-box diagonal; "
    "best-yaw Chamfer is the same after the best turn about the vertical axis, searched in "
    "9 deg steps and then to 0.9 deg (before 2026-12-07, in 9 deg steps only). Times "
    'are wall-clock seconds of each `dreamfusion run`, including export, turntable and this '
    'evaluation, and the rendering of the toy references when their cache is cold. Every '
    "figure is the one `dreamfusion run` printed and wrote to the run's `summary.json`.")
DEFAULT_CONFIGS = ("toy", "toy-gaussians")
BARS = {"a red cube": 0.85, "a blue torus": 0.85, "a green cylinder": 0.85, "a yellow duck": 0.75}


def machine() -> str:
    import torch

    return (f"{platform.machine()} {platform.processor() or platform.system()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def _chamfer(r: dict, key: str) -> str:
    if key not in r:
        return "-"
    return f"{r[key]:.4f} ({100 * r[key] / r['true_size']:.1f}%)"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _opt(r: dict, key: str, fmt: str) -> str:
    return _fmt(r.get(key), fmt)


def _table(rows: list[dict]) -> str:
    return markdown_table(
        ["representation", "prompt", "seed", "silhouette IoU", "side-view IoU",
         "best-yaw IoU (yaw)", "colour error", "toy R@1", "Janus", "Chamfer (% of size)",
         "best-yaw Chamfer", "train s", "total s"],
        [[r["representation"], r["prompt"], r["seed"], f"{r['silhouette_iou']:.3f}",
          f"{r['side_iou']:.3f}", f"{r['best_yaw_iou']:.3f} ({r['best_yaw']:+.0f})",
          _opt(r, "colour_error", ".3f"), _opt(r, "toy_r_precision", ".2f"),
          _opt(r, "janus", ".3f"), _chamfer(r, "chamfer"), _chamfer(r, "chamfer_best_yaw"),
          f"{r['train_seconds']:.0f}", f"{r['total_seconds']:.0f}"] for r in rows])


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


def _chamfer_share(rows: list[dict]) -> float | None:
    shares = [100 * r["chamfer"] / r["true_size"] for r in rows if "chamfer" in r]
    return sum(shares) / len(shares) if shares else None


def _groups(rows: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(representation, prompt, rows) in the order they ran."""
    keys = dict.fromkeys((r["representation"], r["prompt"]) for r in rows)
    return [(rep, prompt, [r for r in rows if (r["representation"], r["prompt"]) == (rep, prompt)])
            for rep, prompt in keys]


def _summary(rows: list[dict]) -> str:
    out = []
    for rep, prompt, mine in _groups(rows):
        ious = [r["silhouette_iou"] for r in mine]
        low = [iou_at_15(r) for r in mine]
        bar = BARS.get(prompt)
        met = "" if bar is None else f"{sum(i >= bar for i in low)} of {len(low)}"
        cells = [_mean(mine, k) for k in ("side_iou", "colour_error", "toy_r_precision", "janus")]
        chamfer = _chamfer_share(mine)
        out.append([rep, prompt, len(ious), f"{sum(ious) / len(ious):.3f}", f"{min(ious):.3f}",
                    f"{sum(low) / len(low):.3f} ({min(low):.3f})",
                    *("-" if c is None else f"{c:.3f}" for c in cells),
                    "-" if chamfer is None else f"{chamfer:.1f}%",
                    f"{_mean(mine, 'train_seconds'):.0f}",
                    "" if bar is None else f"{bar:.2f}", met])
    return markdown_table(["representation", "prompt", "seeds", "IoU mean", "IoU min",
                           "IoU at 15 deg: mean (min)", "side IoU mean", "colour error mean",
                           "toy R@1 mean", "Janus mean", "Chamfer mean (% of size)",
                           "train s mean", "bar (IoU at 15 deg)", "seeds at or above the bar"],
                          out)


def _comparison(rows: list[dict], base: str = "nerf") -> str:
    """Each other representation against ``base``, prompt by prompt, from the same bench:
    IoU, colour error and Chamfer side by side and the ratio of training times."""
    groups = {(rep, prompt): mine for rep, prompt, mine in _groups(rows)}
    reps = list(dict.fromkeys(rep for rep, _ in groups))
    if base not in reps or len(reps) < 2:
        return ""
    table = []
    for rep in (r for r in reps if r != base):
        for prompt in dict.fromkeys(prompt for _, prompt in groups):
            a, b = groups.get((base, prompt)), groups.get((rep, prompt))
            if not a or not b:
                continue
            table.append([
                rep, prompt, f"{min(r['silhouette_iou'] for r in b):.3f}",
                f"{_mean(b, 'silhouette_iou'):.3f} / {_mean(a, 'silhouette_iou'):.3f}",
                f"{_fmt(_mean(b, 'colour_error'), '.3f')} / "
                f"{_fmt(_mean(a, 'colour_error'), '.3f')}",
                f"{_fmt(_chamfer_share(b), '.1f')}% / {_fmt(_chamfer_share(a), '.1f')}%",
                _fmt(None if "janus" not in b[0] else max(r["janus"] for r in b), ".3f"),
                f"{_mean(b, 'train_seconds') / _mean(a, 'train_seconds'):.2f}"])
    return ("## Representations compared\n\nEach representation against the NeRF of this "
            "same bench (same machine, seeds and prompts): means over the seeds, the other "
            "one first; the time ratio is the mean training time over the NeRF's.\n\n"
            + markdown_table(["representation", "prompt", "IoU min", "IoU mean (vs NeRF)",
                              "colour error (vs NeRF)", "Chamfer (vs NeRF)", "Janus max",
                              "train time / NeRF's"], table) + "\n\n")


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


def run_toy_bench(configs: dict[str, DictConfig], prompts: list[str] | None, seeds: list[int],
                  results: str, runs: str, command: str,
                  executor: Executor | None = None) -> list[dict]:
    """Every prompt and seed with each config (one per representation, keyed by its name);
    the runs go to ``runs/<representation>/``, the tables to ``results/toy.md``."""
    prompts = list(prompts or DEFAULT_PROMPTS)
    for cfg in configs.values():    # every bad prompt is refused before the first run starts
        for prompt in prompts:
            prepare(prompt, cfg, root_check=False)
    runs_dir, results_dir = Path(runs), Path(results)
    jobs = [Job(prompt, seed, runs_dir / cfg.representation / f"{slugify(prompt)}-seed{seed}",
                cfg, f"{cfg.representation} {prompt!r} seed {seed}")
            for cfg in configs.values() for prompt in prompts for seed in seeds]

    def describe(job: Job, outcome) -> str:
        r = outcome.summary
        return (f"{job.label}: IoU {r['silhouette_iou']:.3f} (side {r['side_iou']:.3f}), "
                f"{r['total_seconds']:.0f} s")

    executor = executor or LocalExecutor()
    started = time.perf_counter()
    outcomes = run_all(jobs, executor, describe)
    wall = time.perf_counter() - started
    rows = [{"representation": job.cfg.representation, **summary}
            for job, summary in zip(jobs, summaries(jobs, outcomes))]
    run_dirs = [job.run_dir for job in jobs]
    gallery = []
    for rep in dict.fromkeys(r["representation"] for r in rows):
        mine = [(r, d) for r, d in zip(rows, run_dirs) if r["representation"] == rep]
        gallery.append(f"### {rep}")
        gallery += write_figures([r for r, _ in mine], [d for _, d in mine], results_dir,
                                 f"toy-{rep}")
    header = (f"# Toy-world benchmark\n\nCommand: `{command}`"
              f"\n\nMachine: {machine()}\n\nRuns: {executor.describe()}; {len(jobs)} runs in "
              f"{wall / 60:.1f} min\n\n{METRICS}\n\n")
    write_text(results_dir / "toy.md",
               header + _summary(rows) + "\n\n" + _comparison(rows) + "## Runs\n\n"
               + _table(rows) + "\n\n## Gallery\n\n" + "\n\n".join(gallery) + "\n")
    from ..pipeline.artifacts import write_json

    write_json(results_dir / "toy.json", {
        "command": command, "config_names": list(configs), "machine": machine(),
        "executor": executor.name, "runs": executor.describe(), "wall_seconds": round(wall, 1),
        "argv": sys.argv, "configs": {name: OmegaConf.to_container(cfg)
                                      for name, cfg in configs.items()}, "rows": rows})
    print(_summary(rows))
    return rows


def add_parser(bench_sub) -> None:
    toy = bench_sub.add_parser("toy", help="toy-world runs scored against their ground truth, "
                                           "for each representation")
    toy.add_argument("overrides", nargs="*", metavar="key.sub=value",
                     help="applied to every config")
    toy.add_argument("--config", nargs="+", default=list(DEFAULT_CONFIGS),
                     help="one config per representation (default: toy toy-gaussians)")
    toy.add_argument("--prompts", nargs="+", default=None, help="toy captions to run")
    toy.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    toy.add_argument("--results", default="results", help="where the table is written")
    toy.add_argument("--runs", default="outputs/bench-toy", help="where run folders go")
    add_executor_args(toy)


def main(args) -> int:
    configs = {name: load_config(name, args.overrides) for name in args.config}
    reps = [configs[name].representation for name in args.config]
    if len(set(reps)) != len(reps):
        raise UserError(f"bench toy takes one config per representation; --config "
                        f"{' '.join(args.config)} has {', '.join(reps)}")
    if any(not registry.prior(cfg.guidance.prior).ground_truth for cfg in configs.values()):
        raise UserError("bench toy scores against the toy world: give configs with "
                        "guidance.prior=toy")
    executor = executor_from_args(args)
    given = "" if args.prompts is None else " --prompts " + " ".join(repr(p) for p in args.prompts)
    command = (f"dreamfusion bench toy --config {' '.join(args.config)}{given} --seeds "
               f"{' '.join(map(str, args.seeds))} --runs {args.runs} {executor_flags(args)} "
               + " ".join(args.overrides)).replace("  ", " ").strip()
    run_toy_bench(configs, args.prompts, args.seeds, args.results, args.runs, command, executor)
    return 0

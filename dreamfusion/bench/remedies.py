"""``dreamfusion bench remedies``: what each Janus and noise-schedule remedy buys, on the toy
duck, whose front (head and beak at +X) and ground truth are known."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import DEFAULT_CONFIG, load_config, registry
from ..errors import UserError
from ..pipeline.inputs import prepare
from ..utils.atomic import write_text
from .tables import markdown_table
from .fanout import Executor, Job, LocalExecutor, add_executor_args, executor_flags, \
    executor_from_args, run_all, summaries
from .toy import machine, write_figures

MULTIVIEW = ("guidance.prior=toy_multiview", "camera.views_per_sample=4")
# each remedy is a set of overrides on the config (configs/toy.yaml unless --config)
VARIANTS: dict[str, tuple[str, ...]] = {
    "plain prompt": ("prompt.view_dependent=false",),
    "view prompts": ("prompt.view_dependent=true",),
    "view prompts + Perp-Neg": ("prompt.view_dependent=true", "prompt.perp_neg=true"),
    "interpolated": ("prompt.view_dependent=true", "prompt.interpolate=true"),
    "interpolated + Perp-Neg": ("prompt.view_dependent=true", "prompt.interpolate=true",
                                "prompt.perp_neg=true"),
    "view prompts, anneal_sqrt t": ("prompt.view_dependent=true", "guidance.schedule=anneal_sqrt"),
    "view prompts, time_prioritized t": ("prompt.view_dependent=true",
                                         "guidance.schedule=time_prioritized"),
    "view prompts + Perp-Neg, anneal_sqrt t": ("prompt.view_dependent=true",
                                               "prompt.perp_neg=true",
                                               "guidance.schedule=anneal_sqrt"),
    # the toy world's multi-view prior (configs/toy-multiview.yaml): 4 views of one object per
    # step, denoised together, for half the steps at half the rate
    "multi-view prior": ("prompt.view_dependent=false", *MULTIVIEW),
    "multi-view prior + view prompts": ("prompt.view_dependent=true", *MULTIVIEW),
}
# a remedy's settings that --overrides may change (a test's step count), applied before them
BASES: dict[str, tuple[str, ...]] = {
    name: ("steps=500", "optim.lr=0.005") for name in VARIANTS if name.startswith("multi-view")}
IOU_TARGET = 0.90       # the cost table's "time to the same IoU"
METRICS = (
    'IoU: silhouette IoU against the truth at 8 azimuths x 2 elevations (15 and 40 deg; whole'
    ' object) and at the two side views (+-90 deg), where a front-biased prior most often '
    "fails. Janus: the share of the solid above the duck's body (its head and beak, which "
    'face +X) that lies at x < 0: 0 for a right duck, about 0.5 for a two-headed one, 1 for '
    "one that faces backwards. Head volume: that solid over the true head's, to show a head "
    "was made at all. Means over seeds, with the worst seed in brackets. 'view prompts' with "
    "uniform t is DreamFusion's setting and our default.")


COST = (
    "Steps per second of training (the multi-view prior renders 4 views a step, the others 1), "
    f"and how soon the IoU at the evaluation cameras first reaches {IOU_TARGET:.2f} "
    "(evaluated every `output.eval_every` steps): the time to the same IoU, measured in this "
    "same bench run.")


def _cell(values: list[float], worst) -> str:
    return f"{statistics.mean(values):.3f} ({worst(values):.3f})"


def _mean(rows: list[dict], variant: str, key: str) -> float | None:
    values = [r[key] for r in rows if r["variant"] == variant]
    return statistics.mean(values) if values else None


def _delta(value: float, base: float | None) -> str:
    return "" if base is None else f"{value - base:+.3f}"


def _table(rows: list[dict]) -> str:
    """Means (worst seed), and the change in side-view IoU against the plain prompt and
    against plain view prompts, so that what helped and what did not is read off directly."""
    plain = _mean(rows, "plain prompt", "side_iou")
    views = _mean(rows, "view prompts", "side_iou")
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == name]
        col = lambda k: [r[k] for r in rs]  # noqa: E731
        side = statistics.mean(col("side_iou"))
        out.append([name, len(rs), _cell(col("silhouette_iou"), min), _cell(col("side_iou"), min),
                    _cell(col("janus"), max), f"{statistics.mean(col('feature_volume')):.2f}",
                    _delta(side, plain), _delta(side, views),
                    f"{statistics.mean(col('train_seconds')):.0f}"])
    return markdown_table(["remedy", "seeds", "IoU", "side-view IoU", "Janus", "head volume",
                           "side IoU vs plain", "side IoU vs view prompts", "train s"], out)


def _settings(name: str) -> tuple[str, ...]:
    return (*BASES.get(name, ()), *VARIANTS[name])


def first_step_at(run_dir: Path, target: float) -> int | None:
    """The first evaluated step whose silhouette IoU reaches ``target`` (None: never)."""
    path = run_dir / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        row = json.loads(line)
        if row.get("eval_silhouette_iou", -1.0) >= target:
            return int(row["step"])
    return None


def _cost_table(rows: list[dict]) -> str:
    """What each remedy costs: steps/s, and the steps and seconds until the IoU first
    reaches ``IOU_TARGET`` (means over the seeds that reach it)."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == name]
        rate = statistics.mean(r["steps"] / r["train_seconds"] for r in rs)
        reached = [r for r in rs if r["steps_to_target"] is not None]
        steps = statistics.mean(r["steps_to_target"] for r in reached) if reached else None
        seconds = (statistics.mean(r["steps_to_target"] * r["train_seconds"] / r["steps"]
                                   for r in reached) if reached else None)
        out.append([name, rs[0]["views_per_sample"], f"{rate:.1f}",
                    f"{len(reached)} of {len(rs)}", "-" if steps is None else f"{steps:.0f}",
                    "-" if seconds is None else f"{seconds:.0f}"])
    return markdown_table(["remedy", "views per step", "steps/s",
                           f"seeds reaching IoU {IOU_TARGET:.2f}", "steps to it", "seconds to it"],
                          out)


def _plot(rows: list[dict], results: Path) -> str:
    """The ablation at a glance: IoU, side-view IoU and Janus per remedy (mean, worst seed)."""
    from .figures import plot_bars

    names = list(dict.fromkeys(r["variant"] for r in rows))
    series = {}
    for key, worst in (("silhouette_iou", min), ("side_iou", min), ("janus", max)):
        values = [[r[key] for r in rows if r["variant"] == n] for n in names]
        series[key] = [(statistics.mean(v), worst(v)) for v in values]
    plot_bars(names, series, results / "plots" / "remedies.png",
              "Janus remedies on the toy duck (Janus: lower is better)")
    return "plots/remedies.png"


def _configs(config: str, overrides: list[str], prompt: str,
             names: list[str]) -> dict[str, DictConfig]:
    """Each remedy's config; every bad input is refused before the first run."""
    from ..guidance.toy.world import SHAPES
    from ..pipeline.build import build_prior

    cfgs: dict[str, DictConfig] = {}
    for name in names:
        if name not in VARIANTS:
            raise UserError(f"unknown remedy {name!r}; known: {', '.join(VARIANTS)}")
        cfgs[name] = load_config(config, [*BASES.get(name, ()), *overrides, *VARIANTS[name]])
        if not registry.prior(cfgs[name].guidance.prior).ground_truth:
            raise UserError("bench remedies needs the toy prior: only it has a ground truth")
        prepare(prompt, cfgs[name], root_check=False)
        if not SHAPES[build_prior(cfgs[name]).parse(prompt).shape].has_front:
            raise UserError(f"{prompt!r} has no front to turn into a Janus; try 'a yellow duck'")
    return cfgs


def run_remedies_bench(config: str, overrides: list[str], prompt: str, seeds: list[int],
                       variants: list[str] | None, results: str, runs: str,
                       executor: Executor | None = None, flags: str = "") -> list[dict]:
    names = variants or list(VARIANTS)
    cfgs = _configs(config, overrides, prompt, names)
    slug = lambda name: re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")  # noqa: E731
    jobs = [Job(prompt, seed, Path(runs) / f"{slug(name)}-seed{seed}", cfgs[name],
                f"{name} seed {seed}") for name in names for seed in seeds]

    def describe(job: Job, outcome) -> str:
        r = outcome.summary
        return (f"{job.label}: IoU {r['silhouette_iou']:.3f} side {r['side_iou']:.3f} "
                f"Janus {r['janus']:.3f}")

    executor = executor or LocalExecutor()
    outcomes = run_all(jobs, executor, describe)
    run_dirs = [job.run_dir for job in jobs]
    variant = [name for name in names for _ in seeds]           # each job's remedy
    rows = [{"variant": name, **summary, "views_per_sample": cfgs[name].camera.views_per_sample,
             "steps_to_target": first_step_at(job.run_dir, IOU_TARGET)}
            for name, job, summary in zip(variant, jobs, summaries(jobs, outcomes))]
    figures = write_figures(rows, run_dirs, Path(results), "remedies", key="variant")
    figures.insert(0, f"![remedies]({_plot(rows, Path(results))})")
    command = (f"dreamfusion bench remedies --config {config} --prompt \"{prompt}\" --seeds "
               f"{' '.join(map(str, seeds))} --runs {runs} {flags} {' '.join(overrides)}"
               ).replace("  ", " ").strip()
    body = (f"# Janus and noise-schedule remedies on the toy world\n\nCommand: `{command}`\n\n"
            f"Machine: {machine()}\n\nRuns: {executor.describe()}\n\n{METRICS}\n\n"
            + "Overrides per remedy: " +
            "; ".join(f"{n}: `{' '.join(_settings(n))}`" for n in names) + "\n\n" + _table(rows)
            + f"\n\n## Cost\n\n{COST}\n\n" + _cost_table(rows) + "\n\n## Figures\n\n"
            + "\n\n".join(figures) + "\n")
    write_text(Path(results) / "remedies.md", body)
    from ..pipeline.artifacts import write_json

    write_json(Path(results) / "remedies.json", {
        "command": command, "machine": machine(), "variants": {n: _settings(n) for n in names},
        "config": OmegaConf.to_container(cfgs[names[0]]), "rows": rows})
    print(_table(rows))
    return rows


def add_parser(bench_sub) -> None:
    rem = bench_sub.add_parser("remedies",
                               help="the Janus and noise-schedule remedies on the toy duck")
    rem.add_argument("overrides", nargs="*", metavar="key.sub=value")
    rem.add_argument("--config", default=DEFAULT_CONFIG)
    rem.add_argument("--prompt", default="a yellow duck")
    rem.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    rem.add_argument("--variants", nargs="+", default=None, help="remedies to run (default: all)")
    rem.add_argument("--results", default="results")
    rem.add_argument("--runs", default="outputs/bench-remedies")
    add_executor_args(rem)


def main(args) -> int:
    run_remedies_bench(args.config, args.overrides, args.prompt, args.seeds, args.variants,
                       args.results, args.runs, executor_from_args(args), executor_flags(args))
    return 0

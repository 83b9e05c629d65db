"""``dreamfusion bench remedies``: what each Janus and noise-schedule remedy buys, on the toy
duck, whose front (head and beak at +X) and ground truth are known."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import load_config
from ..errors import UserError
from ..guidance.toy.world import SHAPES
from ..pipeline.artifacts import write_json
from ..pipeline.build import build_prior
from ..pipeline.inputs import prepare
from ..utils.atomic import write_text
from .tables import markdown_table
from .toy import Progress, finished, machine, run_once, write_figures

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
}
METRICS = (
    'IoU: silhouette IoU against the truth at 8 azimuths x 2 elevations (15 and 40 deg; whole'
    ' object) and at the two side views (+-90 deg), where a front-biased prior most often '
    "fails. Janus: the share of the solid above the duck's body (its head and beak, which "
    'face +X) that lies at x < 0: 0 for a right duck, about 0.5 for a two-headed one, 1 for '
    "one that faces backwards. Head volume: that solid over the true head's, to show a head "
    "was made at all. Means over seeds, with the worst seed in brackets. 'view prompts' with "
    "uniform t is DreamFusion's setting and our default.")


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


def run_remedies_bench(config: str, overrides: list[str], prompt: str, seeds: list[int],
                       variants: list[str] | None, results: str, runs: str) -> list[dict]:
    names = variants or list(VARIANTS)
    cfgs: dict[str, DictConfig] = {}
    for name in names:           # every bad input is refused before the first run
        if name not in VARIANTS:
            raise UserError(f"unknown remedy {name!r}; known: {', '.join(VARIANTS)}")
        cfgs[name] = load_config(config, [*overrides, *VARIANTS[name]])
        if cfgs[name].guidance.prior != "toy":
            raise UserError("bench remedies needs the toy prior: only it has a ground truth")
        prepare(prompt, cfgs[name], root_check=False)
        if not SHAPES[build_prior(cfgs[name]).parse(prompt).shape].has_front:
            raise UserError(f"{prompt!r} has no front to turn into a Janus; try 'a yellow duck'")
    rows, run_dirs, progress = [], [], Progress(len(names) * len(seeds))
    for name in names:
        for seed in seeds:
            slug = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")
            run_dirs.append(Path(runs) / f"{slug}-seed{seed}")
            trained = not finished(run_dirs[-1])
            row = run_once(cfgs[name], prompt, seed, run_dirs[-1])
            rows.append({"variant": name, **row})
            print(progress.line(f"{name} seed {seed}: IoU {row['silhouette_iou']:.3f} side "
                                f"{row['side_iou']:.3f} Janus {row['janus']:.3f}", trained),
                  flush=True)
    figures = write_figures(rows, run_dirs, Path(results), "remedies", key="variant")
    figures.insert(0, f"![remedies]({_plot(rows, Path(results))})")
    command = (f"dreamfusion bench remedies --config {config} --prompt \"{prompt}\" --seeds "
               f"{' '.join(map(str, seeds))} --runs {runs} {' '.join(overrides)}").strip()
    body = (f"# Janus and noise-schedule remedies on the toy world\n\nCommand: `{command}`\n\n"
            f"Machine: {machine()}\n\n{METRICS}\n\n" + "Overrides per remedy: " +
            "; ".join(f"{n}: `{' '.join(VARIANTS[n])}`" for n in names) + "\n\n" + _table(rows)
            + "\n\n## Figures\n\n" + "\n\n".join(figures) + "\n")
    write_text(Path(results) / "remedies.md", body)
    write_json(Path(results) / "remedies.json", {
        "command": command, "machine": machine(), "variants": {n: VARIANTS[n] for n in names},
        "config": OmegaConf.to_container(cfgs[names[0]]), "rows": rows})
    print(_table(rows))
    return rows

"""What the benches draw: image strips of finished runs and matplotlib plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..rendering.cameras import orbit
from ..pipeline.artifacts import render_views, to_uint8
from ..pipeline.reexport import load_run
from ..utils.atomic import atomic_path, write_png


def strip_image(run_dir: Path, views: int = 8, size: int = 64,
                elevation: float = 15.0) -> np.ndarray:
    """The run's colour renders (size, views * size, 3) from ``views`` azimuths (every
    360/views deg from the front)."""
    cfg, scene, _ = load_run(run_dir)
    cams = orbit(views, elevation, sum(cfg.camera.distance) / 2, sum(cfg.camera.fov) / 2)
    images = render_views(scene, cams, size, "lambertian")          # without gradients
    return to_uint8(torch.cat(list(images), dim=1))


def write_strip(run_dir: Path, path: Path, views: int = 8, size: int = 64,
                elevation: float = 15.0) -> None:
    write_png(path, strip_image(run_dir, views, size, elevation))


def write_stacked_strips(run_dirs: list[Path], path: Path, views: int = 8,
                         size: int = 64) -> None:
    """One strip per run, one above the other (a first stage above its mesh stage)."""
    write_png(path, np.concatenate([strip_image(d, views, size) for d in run_dirs], axis=0))


def eval_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """The IoU-against-step records a toy run leaves in ``metrics.jsonl``."""
    steps, values = [], []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "eval_silhouette_iou" in record:
            steps.append(record["step"])
            values.append(record["eval_silhouette_iou"])
    return steps, values


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on a server or in CI);
    imported late, since only the benches draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def plot_curves(curves: dict[str, list[tuple[list[int], list[float]]]], path: Path,
                ylabel: str, title: str) -> None:
    """One colour per label, one line per run (seed) of that label."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.0))
    for k, (label, runs) in enumerate(curves.items()):
        for j, (steps, values) in enumerate(runs):
            ax.plot(steps, values, color=f"C{k}", alpha=0.8, marker="o", markersize=3,
                    label=label if j == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_bars(groups: list[str], series: dict[str, list[tuple[float, float]]], path: Path,
              title: str) -> None:
    """Grouped bars: for each series, a (mean, worst seed) per group; the worst as a tick."""
    fig, ax = _pyplot().subplots(figsize=(max(6.4, 0.9 * len(groups) + 2), 4.0))
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [v[0] for v in values], width, color=f"C{k}", label=f"{name} (mean)")
        ax.scatter(xs, [v[1] for v in values], color="black", marker="_", s=120, zorder=3,
                   label="worst seed" if k == 0 else None)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)

"""One text-to-3D run: check the inputs, train, and write the run folder."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..errors import UserError
from ..export.pipeline import export_settings, field_mesh
from ..export.writers import write_meshes
from ..guidance.toy.prior import ToyWorldPrior
from ..utils.atomic import write_png, write_text
from .artifacts import save_checkpoint, validation_strip, write_json, write_turntable
from .build import build_prior, build_scene, resolve_prior_model
from .evaluate import janus_score, silhouette_iou, surface_scores
from .train import StepStats, Trainer

MAX_PROMPT = 500


@dataclass
class RunResult:
    run_dir: Path
    seconds: float
    files: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def check_prompt(prompt: str) -> str:
    text = prompt.strip()
    if not text:
        raise UserError("the prompt is empty")
    if len(text) > MAX_PROMPT:
        raise UserError(f"the prompt is {len(text)} characters long; the limit is {MAX_PROMPT}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UserError("the prompt contains control characters")
    return text


def slugify(prompt: str, limit: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:limit].rstrip("-") or "run"


def check_output_root(root: Path) -> None:
    """Fail before any work if run folders cannot be created under ``root``."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output folder {str(root)!r}: "
                        f"{exc.strerror or exc}") from None


def new_run_dir(root: Path, prompt: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{slugify(prompt)}-{stamp}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise UserError(f"cannot find a free run folder name under {str(root)!r}")


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


class RunLog:
    """The progress bar and ``metrics.jsonl``."""

    def __init__(self, path: Path, total: int, every: int, quiet: bool) -> None:
        self.path, self.every = path, every
        self.bar = tqdm(total=total, disable=quiet, unit="step", dynamic_ncols=True)
        self.start = time.perf_counter()
        self.lines: list[str] = []

    def __call__(self, s: StepStats) -> None:
        self.bar.update(1)
        if s.step % self.every == 0 or s.step == self.bar.total:
            self.bar.set_postfix(loss=f"{s.loss:.3g}", t=f"{s.t:.2f}", view=s.view, refresh=False)
            record = asdict(s) | {"seconds": round(time.perf_counter() - self.start, 3)}
            self.lines.append(json.dumps(record))
            if len(self.lines) >= 20:
                self.flush()

    def flush(self) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in self.lines))
        self.lines.clear()

    def close(self) -> None:
        self.flush()
        self.bar.close()


def prepare(prompt: str, cfg: DictConfig) -> tuple[str, Path]:
    """Every check that can fail on the user's input, before any work or any file."""
    prompt = check_prompt(prompt)
    select_device(cfg.device)
    if cfg.guidance.prior == "toy":
        prior = build_prior(cfg)
        prior.parse(prompt)                 # unknown words fail here
        if cfg.prompt.negative.strip():
            prior.parse(cfg.prompt.negative)
    else:
        resolve_prior_model(cfg)            # absent weights fail here, before any folder
    root = Path(cfg.output.root)
    check_output_root(root)
    return prompt, root


def run(prompt: str, cfg: DictConfig, run_dir: Path | None = None, quiet: bool = False) -> RunResult:
    """Train on ``prompt`` and write the run folder; returns where and what was written."""
    prompt, root = prepare(prompt, cfg)
    run_dir = run_dir or new_run_dir(root, prompt)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_text(run_dir / "config.yaml", f"# dreamfusion run \"{prompt}\"\n" + OmegaConf.to_yaml(cfg))
    torch.manual_seed(cfg.seed)
    device = select_device(cfg.device)
    scene = build_scene(cfg, device)
    if not quiet:
        print(f"hash grid: {scene.field.encoding.describe_backend()}", file=sys.stderr)
    prior = build_prior(cfg, device)
    trainer = Trainer(cfg, scene, prior, prompt)
    distance, fov = sum(cfg.camera.distance) / 2, sum(cfg.camera.fov) / 2
    log = RunLog(run_dir / "metrics.jsonl", cfg.steps, cfg.output.log_every, quiet)

    def on_step(stats: StepStats) -> None:
        log(stats)
        if stats.step % cfg.output.val_every == 0 or stats.step == cfg.steps:
            write_png(run_dir / "val" / f"step_{stats.step:06d}.png",
                      validation_strip(scene, distance, fov, cfg.output.val_size))

    try:
        trainer.fit(on_step)
    finally:
        log.close()
    train_seconds = time.perf_counter() - started
    save_checkpoint(run_dir / "checkpoint.pt", scene, trainer.optimizer, trainer.step)
    o = cfg.output
    write_turntable(scene, run_dir / "turntable.gif", o.turntable_frames, o.turntable_size,
                    o.turntable_elevation, distance, fov)
    files = ["config.yaml", "metrics.jsonl", "val/", "checkpoint.pt", "turntable.gif"]
    settings = export_settings(cfg)
    threshold = settings.threshold
    mesh = None
    if cfg.export.enabled:
        mesh = field_mesh(scene.field, settings)
        files += [p.name for p in write_meshes(mesh, run_dir, list(settings.formats))]
    metrics: dict = {"train_seconds": round(train_seconds, 1), "steps": trainer.step,
                     "hashgrid_backend": scene.field.encoding.active_backend}
    if isinstance(prior, ToyWorldPrior):
        scores = silhouette_iou(scene, prior.parse(prompt), cfg)
        metrics.update(silhouette_iou=round(scores.iou, 4), side_iou=round(scores.side_iou, 4),
                       best_yaw_iou=round(scores.best_yaw_iou, 4), best_yaw=scores.best_yaw,
                       iou_per_view=[round(s, 4) for s in scores.per_view])
        if mesh is not None:
            surface = surface_scores(mesh.vertices, mesh.faces, prior.parse(prompt))
            metrics.update(chamfer=round(surface.chamfer, 4),
                           chamfer_best_yaw=round(surface.chamfer_best_yaw, 4),
                           true_size=round(surface.size, 4))
        janus = janus_score(scene, prior.parse(prompt), threshold)
        if janus is not None:
            metrics.update(janus=round(janus.janus, 4),
                           feature_volume=round(janus.feature_volume, 4))
    seconds = time.perf_counter() - started
    metrics["total_seconds"] = round(seconds, 1)
    write_json(run_dir / "summary.json", {"prompt": prompt, "seed": cfg.seed, **metrics})
    files.append("summary.json")
    return RunResult(run_dir, seconds, files, metrics)

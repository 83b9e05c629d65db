"""One text-to-3D run: check the inputs, train, and write the run folder."""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..config.text import quote
from ..errors import Interrupted, TrainingFailed, UserError
from ..export.mesh import NoSurface
from ..export.pipeline import export_settings
from ..export.writers import write_meshes
from ..guidance.base import Prior, RunInputs
from ..utils.atomic import remove_temp_files, write_png, write_text
from ..utils.determinism import deterministic_on
from .artifacts import validation_strip, write_json, write_turntable
from .build import build_prior, build_scene, representation_spec
from .checkpoint import CheckpointStore, Loaded, check_compatible, open_run
from .inputs import check_output_root, config_header, new_run_dir, prepare, select_device
from .representation import Representation
from .runlog import EventLog, MetricsLog, ProgressStyle, progress_style, truncate_metrics
from .supervisor import Supervisor
from .train import StepStats, Trainer


@dataclass
class RunResult:
    run_dir: Path
    seconds: float
    files: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    report: str | None = None       # the prior's line about its scores (the toy's truth)


@dataclass
class _Session:
    """One sitting of a run: what training and the finish need, built by ``_start``."""
    prompt: str
    cfg: DictConfig
    run_dir: Path
    scene: Representation
    prior: Prior
    trainer: Trainer
    supervisor: Supervisor
    events: EventLog
    style: ProgressStyle
    started: float

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def inputs(self) -> RunInputs:
        return RunInputs(self.prompt)

    @property
    def view(self) -> tuple[float, float]:
        """The distance and field of view of the validation and turntable cameras."""
        return sum(self.cfg.camera.distance) / 2, sum(self.cfg.camera.fov) / 2


def run(prompt: str, cfg: DictConfig, run_dir: Path | None = None, quiet: bool = False,
        resume_from: Loaded | None = None) -> RunResult:
    """Train on ``prompt`` and write the run folder; returns where and what was written.

    With ``resume_from`` (a checkpoint of ``run_dir``) training continues from it, provided
    it was made with the same training config.
    """
    device = select_device(cfg.device)          # decided once, for the switch and the run
    with deterministic_on(device):
        session = _start(prompt, cfg, device, run_dir, quiet, resume_from)
        _train(session)
        return _finish(session)


def _start(prompt: str, cfg: DictConfig, device: torch.device, run_dir: Path | None,
           quiet: bool, resume_from: Loaded | None) -> _Session:
    """Check the inputs, build and load everything, then create the run folder and its first
    checkpoint (or restore ``resume_from``)."""
    prompt, root = prepare(prompt, cfg, root_check=run_dir is None)
    if resume_from is not None:
        check_compatible(resume_from, cfg)
    if run_dir is not None:
        check_output_root(run_dir)
    started = time.perf_counter()
    style = progress_style(quiet)
    torch.manual_seed(cfg.seed)
    scene = build_scene(cfg, device)
    backend = scene.backend()[1]
    if not quiet:
        print(backend, file=sys.stderr)
    # every model is loaded (and every prompt encoded) before the run folder exists: a model
    # that cannot be loaded is bad input, and leaves nothing behind
    prior = build_prior(cfg, device)
    trainer = Trainer(cfg, scene, prior, prompt)
    trainer.encode_prompts()
    if run_dir is not None:
        return _open_folder(prompt, cfg, run_dir, scene, prior, trainer, style, backend,
                            started, resume_from)
    run_dir = new_run_dir(root, prompt)
    try:
        return _open_folder(prompt, cfg, run_dir, scene, prior, trainer, style, backend,
                            started, None)
    except BaseException:
        # a folder without its first checkpoint cannot be resumed: leave nothing behind
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _open_folder(prompt: str, cfg: DictConfig, run_dir: Path, scene: Representation,
                 prior: Prior, trainer: Trainer, style: ProgressStyle, backend: str, started: float,
                 resume_from: Loaded | None) -> _Session:
    """Write ``config.yaml``, then save the first checkpoint or restore ``resume_from``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_yaml = OmegaConf.to_yaml(cfg)
    write_text(run_dir / "config.yaml", config_header(prompt) + config_yaml)
    events = EventLog(run_dir / "run.log", style)
    events(backend, echo=False)         # printed before the models loaded
    for path in remove_temp_files(run_dir):
        events(f"removed {path.relative_to(run_dir)}, left by a write that was cut short")
    store = CheckpointStore(run_dir, cfg.checkpoint.keep)
    supervisor = Supervisor(trainer, scene, store, events, prompt, config_yaml, started)
    session = _Session(prompt, cfg, run_dir, scene, prior, trainer, supervisor, events, style,
                       started)
    if resume_from is None:
        events(f"started {quote(prompt)} with seed {cfg.seed}, {cfg.steps} steps")
        truncate_metrics(session.metrics_path, 0)
        supervisor.save()
    else:
        supervisor.restore(resume_from)
        truncate_metrics(session.metrics_path, trainer.step)
        events(f"resumed at step {trainer.step} from {resume_from.path.name}",
               warn=style == "bar")
    return session


def _train(s: _Session) -> None:
    """The supervised loop, with validation strips and the prior's progress scores (the toy
    world's IoU curve) on the way."""
    cfg, scene = s.cfg, s.scene
    log = MetricsLog(s.metrics_path, cfg.steps, cfg.output.log_every, s.style, s.trainer.step)
    distance, fov = s.view

    def on_step(stats: StepStats) -> None:
        log(stats)
        if stats.fault is not None:
            return
        last = stats.step == cfg.steps
        if stats.step % cfg.output.val_every == 0 or last:
            write_png(s.run_dir / "val" / f"step_{stats.step:06d}.png",
                      validation_strip(scene, distance, fov, cfg.output.val_size))
        if stats.step % cfg.output.eval_every == 0 or last:
            scores = s.prior.progress_metrics(scene, s.inputs, cfg)
            if scores:
                log.write({"step": stats.step, **scores})

    try:
        s.supervisor.run(on_step, on_rollback=lambda step: truncate_metrics(s.metrics_path, step))
    except TrainingFailed as exc:
        raise TrainingFailed(f"{exc} (run folder {s.run_dir})") from None
    except Interrupted as exc:
        s.events(str(exc))
        raise Interrupted(f"{exc} in {s.run_dir}; continue with: dreamfusion run --resume "
                          f"{s.run_dir}") from None
    finally:
        log.close()


def _finish(s: _Session) -> RunResult:
    """The turntable, the meshes, the prior's scores and ``summary.json``."""
    cfg, scene, run_dir = s.cfg, s.scene, s.run_dir
    train_seconds = s.supervisor.train_seconds
    o = cfg.output
    distance, fov = s.view
    write_turntable(scene, run_dir / "turntable.gif", o.turntable_frames, o.turntable_size,
                    o.turntable_elevation, distance, fov)
    files = ["config.yaml", "run.log", "metrics.jsonl", "val/", "checkpoints/", "turntable.gif"]
    settings = export_settings(cfg, scene.surface_level)
    metrics: dict = {"train_seconds": round(train_seconds, 1), "steps": s.trainer.step,
                     "representation": cfg.representation,
                     representation_spec(cfg).backend_key: scene.backend()[0],
                     "rollbacks": s.supervisor.rollbacks, "threads": torch.get_num_threads()}
    mesh = None
    if cfg.export.enabled:
        files += [p.name for p in scene.write_native(run_dir)]
        try:
            mesh = scene.export_mesh(settings)
            files += [p.name for p in write_meshes(mesh, run_dir, list(settings.formats))]
        except NoSurface as exc:    # training made nothing solid: a result, not bad input
            s.events(f"no mesh written: {exc}", warn=True)
            metrics["export_error"] = str(exc)
    scores = s.prior.evaluate(scene, s.inputs, cfg, mesh, settings.threshold)
    metrics.update(scores)
    seconds = time.perf_counter() - s.started
    metrics["total_seconds"] = round(s.supervisor.seconds_before + seconds, 1)
    write_json(run_dir / "summary.json", {"prompt": s.prompt, "seed": cfg.seed, **metrics})
    files.append("summary.json")
    return RunResult(run_dir, seconds, files, metrics,
                     s.prior.summary_line(metrics) if scores else None)


def resume(run_dir: Path, overrides: Sequence[str] = (), prompt: str | None = None,
           quiet: bool = False) -> RunResult:
    """Continue the run in ``run_dir`` from its newest checkpoint that verifies.

    ``overrides`` may change only what does not alter training (output, export, checkpoint
    and fault settings, the device and the backends); ``prompt``, if given, must be the run's.
    """
    opened = open_run(run_dir, overrides, "resume")
    cfg, loaded = opened.cfg, opened.loaded
    if prompt is not None and prompt.strip() != opened.prompt:
        raise UserError(f"{str(run_dir)!r} is a run of {opened.prompt!r}, not "
                        f"{prompt.strip()!r}; --resume takes no new prompt")
    if opened.step >= cfg.steps and (run_dir / "summary.json").is_file():
        raise UserError(f"{str(run_dir)!r} has finished all {cfg.steps} steps; use "
                        f"`dreamfusion export {run_dir}` to write its meshes again")
    prepare(opened.prompt, cfg, root_check=False)
    check_compatible(loaded, cfg)
    check_output_root(run_dir)
    events = EventLog(run_dir / "run.log")
    for why in opened.skipped:
        events(f"{why}; falling back to {loaded.path.name}", warn=True)
    return run(opened.prompt, cfg, run_dir, quiet, resume_from=loaded)

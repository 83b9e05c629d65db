"""Drive the trainer to its last step without losing the run: checkpoints, faults, signals.

* A checkpoint is saved at step 0, every ``checkpoint.every`` steps, at the last step, and
  when SIGINT (Ctrl-C) or SIGTERM arrives. Signals are deferred to the end of the current
  step, so the checkpoint never holds a half-applied update; a second Ctrl-C stops at once.
* A step whose loss or gradients are not finite is skipped (the trainer never applies it).
  ``faults.max_bad_steps`` of them within ``faults.window`` steps roll the run back to the
  newest checkpoint that verifies, with the learning rate multiplied by ``faults.lr_factor``;
  after ``faults.max_rollbacks`` rollbacks the run stops and keeps its checkpoints.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import Interrupted, TrainingFailed
from ..utils.atomic import write_text
from .checkpoint import CheckpointStore, Loaded, load_scene
from .representation import Representation
from .runlog import EventLog
from .train import StepStats, Trainer


class StopFlag:
    signal: str | None = None


@contextmanager
def deferred_signals() -> Iterator[StopFlag]:
    """Turn SIGINT and SIGTERM into a flag the loop reads between steps."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag                  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: object) -> None:
        if flag.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt         # asked twice: stop now, without a checkpoint
        flag.signal = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Supervisor:
    def __init__(self, trainer: Trainer, scene: Representation, store: CheckpointStore, events: EventLog,
                 prompt: str, config_yaml: str, session_start: float | None = None) -> None:
        self.trainer, self.scene, self.store, self.events = trainer, scene, store, events
        self.prompt, self.config_yaml = prompt, config_yaml
        self.cfg = trainer.cfg
        self.rollbacks = 0
        self.bad_steps: list[int] = []
        self.saved_step: int | None = None
        self.seconds_before = 0.0           # training time of earlier sessions of this run
        self._session_start = time.perf_counter() if session_start is None else session_start

    @property
    def train_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self._session_start

    def state(self) -> dict:
        return {"prompt": self.prompt, "config": self.config_yaml,
                "scene": {name: m.state_dict() for name, m in self.scene.checkpoint_modules().items()},
                "trainer": self.trainer.state_dict(),
                "faults": {"rollbacks": self.rollbacks, "bad_steps": list(self.bad_steps)},
                "train_seconds": self.train_seconds}

    def save(self) -> Path:
        path = self.store.save(self.state(), self.trainer.step)
        self.saved_step = self.trainer.step
        self.events(f"step {self.trainer.step}: saved {path.parent.name}/{path.name}")
        return path

    def restore(self, loaded: Loaded, rollback: bool = False) -> None:
        """Load a checkpoint; a rollback keeps the RNG running, so the retry draws anew."""
        state = loaded.state
        load_scene(self.scene, loaded)
        self.trainer.load_state_dict(state["trainer"], restore_rng=not rollback)
        self.saved_step = self.trainer.step
        if not rollback:
            saved, now = state["trainer"]["schedule"], self.trainer.schedule_state()
            if saved != now:
                self.events(f"the timestep schedule at step {self.trainer.step} is {now}, but the "
                            f"checkpoint recorded {saved}: this version computes it differently, "
                            f"so the resumed run will not match an uninterrupted one", warn=True)
            self.rollbacks = int(state["faults"]["rollbacks"])
            self.bad_steps = [int(s) for s in state["faults"]["bad_steps"]]
            self.seconds_before = float(state["train_seconds"])

    def run(self, on_step: Callable[[StepStats], None] | None = None,
            on_rollback: Callable[[int], None] | None = None) -> None:
        """Train to ``cfg.steps``; raises ``Interrupted`` or ``TrainingFailed`` after saving
        what can be saved."""
        every = self.cfg.checkpoint.every
        with deferred_signals() as stop:
            while self.trainer.step < self.cfg.steps:
                stats = self.trainer.train_step()
                if on_step is not None:
                    on_step(stats)
                if stats.fault is not None and self._fault(stats):
                    if on_rollback is not None:
                        on_rollback(self.trainer.step)
                    continue
                step = self.trainer.step
                if step % every == 0 or step == self.cfg.steps:
                    self.save()
                if step == self.cfg.faults.kill_at_step:
                    self._kill_once(step)
                if stop.signal is not None:
                    path = self.save() if self.saved_step != step else self.store.paths()[0]
                    raise Interrupted(f"stopped by {stop.signal} at step {step}; saved "
                                      f"{path.parent.name}/{path.name}")

    def _kill_once(self, step: int) -> None:
        """``faults.kill_at_step``: die as a lost node or the OOM killer would, at once and
        without cleaning up. A marker in the run folder makes it once: the retry that
        resumes from the last checkpoint passes this step again and must live."""
        marker = self.store.folder.parent / f"killed-at-step-{step}"
        if marker.exists():
            return
        write_text(marker, f"killed by faults.kill_at_step={step}\n")
        self.events(f"step {step}: killing this process (faults.kill_at_step)")
        os.kill(os.getpid(), signal.SIGKILL)

    def _fault(self, stats: StepStats) -> bool:
        """Log a skipped step; roll back when they repeat. True when it rolled back."""
        f = self.cfg.faults
        self.bad_steps = [s for s in self.bad_steps if s > stats.step - f.window] + [stats.step]
        self.events(f"step {stats.step}: skipped, {stats.fault}", warn=True)
        if len(self.bad_steps) < f.max_bad_steps:
            return False
        bad = len(self.bad_steps)
        if self.rollbacks >= f.max_rollbacks:
            raise TrainingFailed(self._give_up(bad))
        loaded = self.store.latest(lambda p, why: self.events(f"{why}; trying an older one",
                                                             warn=True))
        if loaded is None:
            raise TrainingFailed(f"{bad} non-finite steps of the last {f.window} at step "
                                 f"{stats.step}, and no checkpoint verifies to roll back to")
        scale = self.trainer.lr_scale * f.lr_factor
        self.restore(loaded, rollback=True)
        self.trainer.set_lr_scale(scale)
        self.rollbacks += 1
        self.bad_steps = []
        lrs = ", ".join(f"{g['lr']:.3g}" for g in self.trainer.optimizer.param_groups)
        self.events(f"step {stats.step}: {bad} non-finite steps of the last {f.window}; rolled "
                    f"back to step {self.trainer.step} ({loaded.path.name}) with the learning "
                    f"rate x{scale:g} ({lrs}); rollback {self.rollbacks} of {f.max_rollbacks}",
                    warn=True)
        return True

    def _give_up(self, bad: int) -> str:
        f = self.cfg.faults
        paths = self.store.paths()
        kept = f"{paths[0].parent.name}/{paths[0].name}" if paths else "none"
        message = (f"training diverged at step {self.trainer.step}: {bad} non-finite steps of "
                   f"the last {f.window} after {self.rollbacks} rollbacks; kept {kept}; "
                   f"try a lower optim.lr")
        self.events(message, warn=False)
        return message

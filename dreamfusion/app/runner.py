"""The app's one run at a time: ``dreamfusion run`` (or ``dreamfusion refine`` of a finished
run) in a child process, watched through its run folder.

The run is the command-line run itself, started as ``python -m dreamfusion run``: the same
checks, run folder, checkpoints and messages, resumable from the CLI. A child process, not a
thread, because the run's Ctrl-C handling (a checkpoint at the end of the step) needs the
main thread of its process, and so that the app's web server never waits on training.
Stop sends it SIGINT, exactly what Ctrl-C does. Progress is read from what the run writes:
``metrics.jsonl`` (step, loss, t, seconds) and ``val/step_*.png``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from ..config import load_config
from ..config.text import quote
from ..errors import UserError
from ..pipeline.inputs import check_cpu_memory, check_words, config_header

State = Literal["idle", "starting", "running", "stopping", "finished", "stopped", "failed"]
ACTIVE: tuple[State, ...] = ("starting", "running", "stopping")
# the exit codes of ``dreamfusion run`` (cli.main) and what they mean here
ENDINGS: dict[int, State] = {0: "finished", 130: "stopped"}


@dataclass
class Snapshot:
    """What the page shows of the current (or last) run."""
    state: State = "idle"
    prompt: str = ""
    run_dir: Path | None = None
    step: int = 0
    total: int = 0
    loss: float | None = None
    t: float | None = None
    eta_seconds: float | None = None
    val_image: Path | None = None          # the newest validation strip
    message: str = ""                      # how it ended: the run's last line
    log: list[str] = field(default_factory=list)    # the run's last lines of output

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def run_command(prompt: str, config: str, overrides: Sequence[str], root: Path) -> list[str]:
    """The child's command line: ``dreamfusion run`` with the app's output root last, so
    that every run lands where the gallery looks."""
    # after "--" a prompt that starts with "-" is still the prompt
    return [sys.executable, "-m", "dreamfusion", "run", "--config", config, "--", prompt,
            *overrides, f"output.root={root}"]


def refine_command(run_dir: Path, overrides: Sequence[str]) -> list[str]:
    """The child's command line for the mesh stage of ``run_dir`` (written inside it)."""
    return [sys.executable, "-m", "dreamfusion", "refine", str(run_dir), *overrides]


def find_run_dir(root: Path, before: set[str], prompt: str) -> Path | None:
    """The run folder the child created: new under ``root`` since ``before`` and with this
    prompt in its ``config.yaml`` header (``pipeline.run`` writes it first)."""
    header = config_header(prompt)
    try:
        names = [p for p in root.iterdir() if p.name not in before and p.is_dir()]
    except OSError:
        return None
    for path in sorted(names, key=lambda p: p.name):
        try:
            with open(path / "config.yaml", encoding="utf-8") as fh:
                if fh.readline() == header:
                    return path
        except (OSError, UnicodeDecodeError):
            continue
    return None


def read_progress(run_dir: Path) -> tuple[dict | None, Path | None]:
    """The last step record of ``metrics.jsonl`` and the newest validation strip."""
    last = None
    try:
        text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in reversed(text.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue            # the line being written
        if isinstance(record, dict) and "loss" in record:
            last = record
            break
    strips = sorted((run_dir / "val").glob("step_*.png")) if (run_dir / "val").is_dir() else []
    return last, strips[-1] if strips else None


class Runner:
    """At most one ``dreamfusion run`` child per app; a second start while one is active is
    refused (``UserError``), not queued: a queued run would start minutes later on a page
    that may be closed by then."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._snap = Snapshot()
        self._watch = root                 # where the current run's folder appears
        self._before: set[str] = set()
        self._output: deque[str] = deque(maxlen=40)
        self._reader: threading.Thread | None = None

    def start(self, prompt: str, config: str, overrides: Sequence[str]) -> str:
        """Check the input as the CLI does first (no torch: instant), then start the run;
        returns the prompt as the run will use it. Bad input raises ``UserError``."""
        with self._lock:
            self._refuse_while_active()
            if any(o.split("=", 1)[0].strip() == "output.root" for o in overrides):
                raise UserError("the app writes every run under its --root; give no "
                                "output.root")
            cfg = load_config(config, list(overrides))
            prompt = check_words(prompt, cfg)
            check_cpu_memory(cfg)
            self.root.mkdir(parents=True, exist_ok=True)
            self._launch(run_command(prompt, config, overrides, self.root), self.root, prompt,
                         int(cfg.steps))
            return prompt

    def start_refine(self, run_dir: Path, overrides: Sequence[str] = ()) -> Path:
        """Start ``dreamfusion refine RUN_DIR`` on a finished or stopped run, after the
        checks ``refine`` makes before any work (bad input raises ``UserError``); returns the
        folder its run will appear in (``RUN_DIR/refine``)."""
        from ..pipeline.refine import plan_refine

        with self._lock:
            self._refuse_while_active()
            prompt, cfg = plan_refine(run_dir, overrides)
            check_cpu_memory(cfg)
            root = Path(cfg.output.root)
            self._launch(refine_command(run_dir, overrides), root, prompt, int(cfg.steps))
            return root

    def _refuse_while_active(self) -> None:
        if self._snap.active:
            raise UserError(f"a run of {quote(self._snap.prompt)} is going; this app makes "
                            f"one at a time: stop it or wait for it to finish")

    def _launch(self, command: list[str], root: Path, prompt: str, total: int) -> None:
        """Start ``command``, whose run folder will appear under ``root`` (created by the
        child where it does not exist yet, so a refused refine leaves no folder behind)."""
        self._watch = root
        self._before = {p.name for p in root.iterdir()} if root.is_dir() else set()
        self._output.clear()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # its own session: a Ctrl-C meant for the app reaches the run only through close()
        self._proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, text=True, encoding="utf-8", errors="replace",
            start_new_session=True)
        self._snap = Snapshot("starting", prompt, total=total)
        self._reader = threading.Thread(target=self._read_output, args=(self._proc,),
                                        daemon=True)
        self._reader.start()

    def _read_output(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.strip():
                self._output.append(line)

    def stop(self) -> bool:
        """Ask the run to stop at the end of its step with a checkpoint (SIGINT, as Ctrl-C);
        False when no run is going. Asked again, it does not signal again: a second SIGINT
        stops a run at once, without its checkpoint."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or not self._snap.active:
                return False
            if self._snap.state != "stopping":
                self._proc.send_signal(signal.SIGINT)
                self._snap.state = "stopping"
            return True

    def snapshot(self) -> Snapshot:
        """The run's state now, read from the child and its run folder."""
        with self._lock:
            snap, proc = self._snap, self._proc
            if proc is None:
                return snap
            if snap.run_dir is None:
                snap.run_dir = find_run_dir(self._watch, self._before, snap.prompt)
            if snap.run_dir is not None:
                record, snap.val_image = read_progress(snap.run_dir)
                if record is not None:
                    self._progress(snap, record)
            snap.log = list(self._output)
            code = proc.poll()
            if code is not None and snap.active:
                # the exit can be seen before the last lines are read from the pipe: the
                # message is the last line, so read to the end first (EOF comes at once)
                if self._reader is not None:
                    self._reader.join(timeout=10)
                snap.log = list(self._output)
                snap.state = ENDINGS.get(code, "failed")
                snap.message = self._ending(code)
            elif snap.state == "starting" and snap.run_dir is not None:
                snap.state = "running"
            return Snapshot(**vars(snap))

    @staticmethod
    def _progress(snap: Snapshot, record: dict) -> None:
        snap.step, snap.loss, snap.t = int(record["step"]), record["loss"], record["t"]
        seconds = record.get("seconds")
        # ``seconds`` counts from this sitting's first step, which for a new run is step 0
        if seconds and snap.step > 0:
            snap.eta_seconds = seconds / snap.step * max(0, snap.total - snap.step)

    def _ending(self, code: int) -> str:
        lines = list(self._output)
        if code == 0:       # "wrote DIR in N s: files", then the toy scores
            wrote = [line for line in lines if line.startswith("wrote ")]
            return wrote[-1] if wrote else "finished"
        ours = [line for line in lines if line.startswith("dreamfusion: ")]
        if code < 0:
            return (f"the run's process was killed by {signal.Signals(-code).name}"
                    + (f"; its last words: {lines[-1]}" if lines else ""))
        return ours[-1] if ours else (lines[-1] if lines else f"the run exited with code {code}")

    def close(self, timeout: float = 60.0) -> None:
        """Stop a going run with its checkpoint and wait for it (the app is shutting down)."""
        if self.stop() and self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()

"""What a run reports as it goes: progress on stderr, ``metrics.jsonl`` and ``run.log``.

How progress is shown is decided once per run (``progress_style``): a live bar on a
terminal; a plain line every few percent where stderr is a file, a pipe or a CI log (a bar
there is thousands of carriage-return frames), with every ``run.log`` event echoed; nothing
but warnings with ``--quiet``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from tqdm import tqdm

from ..config.text import one_line
from ..errors import UserError
from ..utils.atomic import append_text, write_text

if TYPE_CHECKING:          # only annotations: the app formats durations here without torch
    from .train import StepStats

ProgressStyle = Literal["bar", "lines", "quiet"]
LINE_EVERY_PERCENT = 5


def progress_style(quiet: bool, stream: TextIO | None = None) -> ProgressStyle:
    """``quiet`` with --quiet, ``bar`` where ``stream`` (stderr) is a terminal, else ``lines``."""
    if quiet:
        return "quiet"
    stream = sys.stderr if stream is None else stream
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):        # a closed or unusual stream: no bar
        return "lines"


def say(message: str, style: ProgressStyle) -> None:
    """One line on stderr, above the bar if there is one."""
    line = f"dreamfusion: {message}"
    if style == "bar":
        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


class EventLog:
    """``run.log``: one timestamped line per event (start, checkpoint, fault, rollback, resume).

    Appended line by line, so a killed run's log ends where the run did; an append that
    fails raises ``WriteError`` like every other write. Each message is made one line
    whatever it quotes. Warnings also go to stderr; with the ``lines`` style every event
    does, so a log of stderr tells the same story as ``run.log``.
    """

    def __init__(self, path: Path, style: ProgressStyle = "quiet") -> None:
        self.path, self.style = path, style

    def __call__(self, message: str, warn: bool = False, echo: bool = True) -> None:
        """Log ``message``; ``echo=False`` where stderr has already been told."""
        message = one_line(message)
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        append_text(self.path, f"{stamp} {message}\n")
        if warn or (echo and self.style == "lines"):
            say(message, self.style)


def duration(seconds: float) -> str:
    """``4m05s``, or ``2h03m`` from an hour on."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class MetricsLog:
    """Progress on stderr (in ``style``) and ``metrics.jsonl`` (every ``every`` steps,
    appended as written)."""

    def __init__(self, path: Path, total: int, every: int, style: ProgressStyle,
                 start_step: int = 0) -> None:
        self.path, self.every, self.total, self.style = path, every, total, style
        self.bar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True,
                        file=sys.stderr) if style == "bar" else None
        self.first_step = start_step
        self.line_every = max(1, math.ceil(total * LINE_EVERY_PERCENT / 100))
        self.start = time.perf_counter()

    def __call__(self, s: StepStats) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if s.step % self.every == 0 or s.step == self.total or s.fault:
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{s.loss:.3g}", t=f"{s.t:.2f}", view=s.view,
                                     refresh=False)
            record = asdict(s) | {"seconds": round(time.perf_counter() - self.start, 3)}
            if record["fault"] is None:
                del record["fault"]
            self.write(record)
        if self.style == "lines" and (s.step % self.line_every == 0 or s.step == self.total):
            say(self._line(s), self.style)

    def _line(self, s: StepStats) -> str:
        elapsed = time.perf_counter() - self.start
        done = max(1, s.step - self.first_step)
        eta = elapsed / done * (self.total - s.step)
        return (f"step {s.step}/{self.total} ({100 * s.step / self.total:.0f}%) loss "
                f"{s.loss:.4g} t {s.t:.2f} view {s.view}; {done / max(elapsed, 1e-9):.2f} "
                f"step/s, ETA {duration(eta)}")

    def write(self, record: dict) -> None:
        append_text(self.path, json.dumps(record) + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after ``step``: a resumed run writes them again."""
    if not path.is_file():
        return
    try:
        # records are ASCII (json.dumps); stray bytes from a damaged file must not stop a resume
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    kept = []
    for line in text.split("\n"):
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue        # a line cut short by the kill
    write_text(path, "".join(kept))

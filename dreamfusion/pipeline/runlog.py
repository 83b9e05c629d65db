"""What a run reports as it goes: the progress bar, ``metrics.jsonl`` and ``run.log``."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from ..utils.atomic import write_text
from .train import StepStats


class EventLog:
    """``run.log``: one timestamped line per event (start, checkpoint, fault, rollback, resume).

    Appended and flushed line by line, so a killed run's log ends where the run did. Warnings
    also go to stderr, above the progress bar.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str, warn: bool = False) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")
        if warn:
            tqdm.write(f"dreamfusion: {message}", file=sys.stderr)


class MetricsLog:
    """The progress bar and ``metrics.jsonl`` (every ``every`` steps, flushed as written)."""

    def __init__(self, path: Path, total: int, every: int, quiet: bool,
                 start_step: int = 0) -> None:
        self.path, self.every, self.total = path, every, total
        self.bar = tqdm(total=total, initial=start_step, disable=quiet, unit="step",
                        dynamic_ncols=True)
        self.start = time.perf_counter()

    def __call__(self, s: StepStats) -> None:
        self.bar.update(1)
        if s.step % self.every == 0 or s.step == self.total or s.fault:
            self.bar.set_postfix(loss=f"{s.loss:.3g}", t=f"{s.t:.2f}", view=s.view, refresh=False)
            record = asdict(s) | {"seconds": round(time.perf_counter() - self.start, 3)}
            if record["fault"] is None:
                del record["fault"]
            self.write(record)

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.bar.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after ``step``: a resumed run writes them again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue        # a line cut short by the kill
    write_text(path, "".join(kept))

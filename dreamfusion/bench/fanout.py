"""Many runs at once: one after another in this process (``local``), or one Ray task each
(``ray``) on a local Ray or on a cluster whose nodes share the run folders' filesystem.

A run is a ``Job`` (prompt, seed, config, folder). ``run_job`` trains it, reads its summary
if it finished before, or resumes it from its newest checkpoint if it stopped, so a Ray task
retried after its worker died (a lost node, the OOM killer) continues where the dead one
saved last. A run that fails for a reason a retry cannot fix (bad input, a diverged run) is
an ``Outcome`` with its one-line reason, returned once and never retried.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Protocol

from omegaconf import DictConfig, OmegaConf

from ..errors import TrainingFailed, UserError, printable

ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorName, ...] = ("local", "ray")
RAY_EXTRA = "pip install -e \".[ray]\" (or pip install \"ray>=2.10\")"
# what a worker inherits from the driver: the cache and where relative paths start
_ENV_PREFIXES = ("DREAMFUSION_", "HF_")


@dataclass(frozen=True)
class Job:
    prompt: str
    seed: int
    run_dir: Path
    cfg: DictConfig
    label: str = ""             # for the progress line


@dataclass
class Outcome:
    """How one job ended. ``state``: ``trained`` (from step 0), ``resumed`` (from a
    checkpoint), ``done before`` (its summary was there) or ``failed`` (``error`` says why)."""
    state: str
    seconds: float              # wall time in this invocation
    summary: dict | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def trained(self) -> bool:
        return self.state in ("trained", "resumed")


class Progress:
    """``[done/total] what; elapsed, ETA`` for a bench's runs; the ETA counts only the runs
    trained by this invocation, since a run that finished before is skipped at no cost."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.trained = total, 0, 0
        self.started = time.perf_counter()

    def line(self, what: str, trained: bool) -> str:
        self.done += 1
        self.trained += trained
        elapsed = time.perf_counter() - self.started
        eta = (f"ETA {elapsed / self.trained * (self.total - self.done) / 60:.1f} min"
               if self.trained else "ETA unknown")
        return f"[{self.done}/{self.total}] {what}; {elapsed / 60:.1f} min elapsed, {eta}"


def finished(run_dir: Path) -> bool:
    """Whether the run wrote its summary, its last file: a bench re-run skips it."""
    return (run_dir / "summary.json").is_file()


def run_once(cfg: DictConfig, prompt: str, seed: int, run_dir: Path) -> dict:
    """One seeded run into ``run_dir``, or its summary if it finished before."""
    summary = run_dir / "summary.json"
    if finished(run_dir):           # finished earlier: re-running the bench resumes
        return json.loads(summary.read_text())
    seeded = OmegaConf.merge(cfg, {"seed": seed})
    from ..pipeline.checkpoint import CheckpointStore
    from ..pipeline.run import RunResult, run

    loaded = CheckpointStore(run_dir).latest()     # stopped earlier: continue where it stopped
    result: RunResult = run(prompt, seeded, run_dir=run_dir, quiet=True, resume_from=loaded)
    return {"prompt": prompt, "seed": seed, **result.metrics}


def one_line(text: str) -> str:
    """The first line of an error, control characters escaped (a newline in a prompt)."""
    return printable(text.strip().splitlines()[0] if text.strip() else text)


def run_job(job: Job, threads: int | None = None) -> Outcome:
    """Train ``job`` here with ``threads`` torch threads (None: as they are)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    state = ("done before" if finished(job.run_dir) else
             "resumed" if (job.run_dir / "checkpoints").is_dir() else "trained")
    try:
        summary = run_once(job.cfg, job.prompt, job.seed, job.run_dir)
    except (UserError, TrainingFailed) as exc:      # retrying cannot help: recorded once
        return Outcome("failed", time.perf_counter() - started, error=one_line(str(exc)))
    finally:
        torch.set_num_threads(before)
    return Outcome(state, time.perf_counter() - started, summary=summary)


class Executor(Protocol):
    name: ExecutorName
    cpus_per_run: int | None

    def map(self, jobs: list[Job]) -> Iterator[tuple[int, Outcome]]:
        """Each job's index and outcome, in the order they end."""
        ...

    def describe(self) -> str:
        """How the runs were placed, for a results file."""
        ...


class LocalExecutor:
    """The jobs one after another in this process."""
    name: ExecutorName = "local"

    def __init__(self, cpus_per_run: int | None = None) -> None:
        self.cpus_per_run = cpus_per_run

    def map(self, jobs: list[Job]) -> Iterator[tuple[int, Outcome]]:
        for i, job in enumerate(jobs):
            yield i, run_job(job, self.cpus_per_run)

    def describe(self) -> str:
        import torch

        threads = self.cpus_per_run or torch.get_num_threads()
        return f"local: one run at a time, {threads} torch thread{'s' * (threads > 1)}"


def _ray_task(job: Job, env: dict[str, str], cwd: str) -> Outcome:
    """A Ray task: the driver's cache settings and folder, threads from the CPUs Ray gave
    this task (runs packed on one node must not fight over its cores)."""
    import ray

    os.environ.update(env)
    os.chdir(cwd)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(cpus))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return run_job(job, threads)


class RayExecutor:
    """Each job a Ray task asking for ``cpus_per_run`` CPUs (and one GPU when its config's
    device is CUDA, or ``auto`` on a cluster with GPUs), retried ``retries`` times when its
    worker dies."""
    name: ExecutorName = "ray"

    def __init__(self, address: str | None = None, cpus_per_run: int | None = None,
                 retries: int = 3) -> None:
        try:
            importlib.import_module("ray")      # only whether it imports, before any run
        except ImportError:
            raise UserError(f"--executor ray needs Ray, which is not installed: "
                            f"{RAY_EXTRA}") from None
        self.address, self.retries = address, retries
        self.cpus_per_run = cpus_per_run or 1
        self.cluster_cpus: float | None = None
        self.cluster_gpus: float | None = None

    def connect(self) -> bool:
        """Join ``address`` or start a local Ray; True when this call started it."""
        import ray

        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            else:
                # small: tasks pass a config and a summary, never tensors
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                         object_store_memory=100 * 2**20)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot start or reach Ray"
                            f"{f' at {self.address}' if self.address else ''}: "
                            f"{one_line(str(exc))}") from None
        return True

    def describe(self) -> str:
        cluster = "" if self.cluster_cpus is None else f" of {self.cluster_cpus:g} in the cluster"
        return (f"ray: one task per run, {self.cpus_per_run} CPU{'s' * (self.cpus_per_run > 1)}"
                f" (torch threads) each{cluster}")

    def map(self, jobs: list[Job]) -> Iterator[tuple[int, Outcome]]:
        import ray

        started = self.connect()
        resources = ray.cluster_resources()
        self.cluster_cpus, self.cluster_gpus = resources.get("CPU"), resources.get("GPU")
        task = ray.remote(_ray_task)
        env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        pending = {}
        try:
            for i, job in enumerate(jobs):
                gpus = self.gpus_for(str(job.cfg.device))
                ref = task.options(num_cpus=self.cpus_per_run, num_gpus=gpus,
                                   max_retries=self.retries, retry_exceptions=False,
                                   name=f"dreamfusion {job.label or job.prompt}"[:200]
                                   ).remote(job, env, os.getcwd())
                pending[ref] = i
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    yield i, self._result(ref)
        finally:
            for ref in pending:         # interrupted: stop the rest (they keep checkpoints)
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()

    def gpus_for(self, device: str) -> int:
        """One GPU for a CUDA run; ``auto`` means CUDA where the cluster has GPUs, as it
        would on a machine that has one."""
        if device.startswith("cuda"):
            return 1
        return int(device == "auto" and (self.cluster_gpus or 0) > 0)

    def _result(self, ref) -> Outcome:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:     # raised by the run itself: not retried
            cause = getattr(exc, "cause", None)
            return Outcome("failed", 0.0, error=one_line(
                f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)))
        except ray.exceptions.RayError as exc:     # its worker died every time it was tried
            return Outcome("failed", 0.0, error=f"lost after {self.retries + 1} attempts: "
                                                f"{one_line(str(exc))}")


def make_executor(name: str, address: str | None = None, cpus_per_run: int | None = None,
                  retries: int = 3) -> Executor:
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; choose {' or '.join(EXECUTORS)}")
    if cpus_per_run is not None and cpus_per_run < 1:
        raise UserError(f"--cpus-per-run must be >= 1, got {cpus_per_run}")
    if retries < 0:
        raise UserError(f"--retries must be >= 0, got {retries}")
    if name == "local":
        if address:
            raise UserError("--ray-address needs --executor ray")
        return LocalExecutor(cpus_per_run)
    return RayExecutor(address, cpus_per_run, retries)


def add_executor_args(parser) -> None:
    """``--executor``, ``--ray-address``, ``--cpus-per-run`` and ``--retries``."""
    parser.add_argument("--executor", default="local", choices=EXECUTORS,
                        help="local: the runs one after another here; ray: one Ray task each")
    parser.add_argument("--ray-address", default=None,
                        help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--cpus-per-run", type=int, default=None,
                        help="torch threads per run, and the CPUs each Ray task asks for "
                             "(default: local, torch's default; ray, 1)")
    parser.add_argument("--retries", type=int, default=3,
                        help="Ray: times a run whose worker died is tried again, from its "
                             "newest checkpoint")


def executor_from_args(args) -> Executor:
    return make_executor(args.executor, args.ray_address, args.cpus_per_run, args.retries)


def executor_flags(args) -> str:
    """The executor options as given, for a results file's command line."""
    flags = [f"--executor {args.executor}"] if args.executor != "local" else []
    if args.ray_address:
        flags.append(f"--ray-address {args.ray_address}")
    if args.cpus_per_run is not None:
        flags.append(f"--cpus-per-run {args.cpus_per_run}")
    return " ".join(flags)


def run_all(jobs: list[Job], executor: Executor,
            describe: Callable[[Job, Outcome], str] | None = None) -> list[Outcome]:
    """Every job's outcome, in the jobs' order, with a progress line as each ends."""
    progress = Progress(len(jobs))
    outcomes: list[Outcome | None] = [None] * len(jobs)
    for i, outcome in executor.map(jobs):
        outcomes[i] = outcome
        job = jobs[i]
        what = (f"{job.label}: failed: {outcome.error}" if not outcome.ok else
                describe(job, outcome) if describe else f"{job.label}: {outcome.state}")
        print(progress.line(what, outcome.trained), flush=True)
    return [o for o in outcomes if o is not None]


def summaries(jobs: list[Job], outcomes: list[Outcome]) -> list[dict]:
    """The summaries of a bench's runs, which must all have finished: a failure stops the
    bench before any table is written (its runs keep their folders and resume)."""
    failed = [(j, o) for j, o in zip(jobs, outcomes) if not o.ok]
    if failed:
        job, outcome = failed[0]
        raise TrainingFailed(f"{len(failed)} of {len(jobs)} runs failed, no table written; "
                             f"first: {job.label}: {outcome.error}")
    return [o.summary for o in outcomes if o.summary is not None]

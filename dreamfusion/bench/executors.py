"""``dreamfusion bench executors``: the same toy runs one at a time here and packed as Ray
tasks, in one invocation: wall time, the metrics each gave, and what Ray costs per task.

Phases, in this order, on caches warmed first (one 1-step run per prompt renders the toy
references and builds the kernels, so no phase pays for them): ``local`` (one run at a
time, torch's default threads: what ``bench toy`` does without ``--executor``), ``ray`` (one
task per run, ``--cpus-per-run`` CPUs and threads each, as many at once as the cluster's CPUs
allow, Ray's start included) and ``local, equal threads`` (one at a time with the threads a
Ray task gets, whose metrics must equal Ray's exactly).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import DEFAULT_CONFIG, load_config, registry
from ..errors import UserError
from ..pipeline.inputs import prepare, slugify
from ..utils.atomic import write_text
from .fanout import Job, LocalExecutor, Outcome, RayExecutor, run_all, run_once, summaries
from .tables import markdown_table
from .toy import DEFAULT_PROMPTS, machine

BAR = 1.2           # ray's wall time over local's, at most
TIMES = ("train_seconds", "total_seconds", "threads")


def _noop() -> float:
    return time.perf_counter()


def worker_import_seconds() -> float:
    """What a fresh worker pays once before its first run: a new Python importing the
    trainer and torch (Ray reuses its workers after that)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import dreamfusion.pipeline.run"], check=True)
    return time.perf_counter() - started


def ray_round_trip(cpus: int) -> float:
    """On a running Ray: a warm no-op task's round trip, the median of 20."""
    import ray

    noop = ray.remote(_noop).options(num_cpus=cpus)
    ray.get(noop.remote())
    trips = []
    for _ in range(20):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        trips.append(time.perf_counter() - t0)
    return statistics.median(trips)


def _warm(cfg: DictConfig, prompts: list[str]) -> None:
    warm = OmegaConf.merge(cfg, {"steps": 1, "export": {"enabled": False}})
    with tempfile.TemporaryDirectory() as folder:
        for prompt in prompts:
            run_once(warm, prompt, 0, Path(folder) / slugify(prompt))


def _phase(name: str, executor, jobs: list[Job]) -> dict:
    started = time.perf_counter()
    outcomes: list[Outcome] = run_all(jobs, executor)
    wall = time.perf_counter() - started
    rows = summaries(jobs, outcomes)
    return {"phase": name, "runs": executor.describe(), "wall_seconds": round(wall, 1),
            "rows": rows}


def _compare(phase: dict, base: dict) -> tuple[float, bool]:
    """The largest IoU difference to ``base``, and whether every metric is identical."""
    diff = max(abs(a["silhouette_iou"] - b["silhouette_iou"])
               for a, b in zip(phase["rows"], base["rows"]))
    same = all({k: v for k, v in a.items() if k not in TIMES} ==
               {k: v for k, v in b.items() if k not in TIMES}
               for a, b in zip(phase["rows"], base["rows"]))
    return diff, same


def _report(phases: list[dict], overhead: dict, jobs: list[Job], command: str) -> str:
    local, on_ray, equal = phases
    table = []
    for p in phases:
        diff, same = _compare(p, on_ray)
        ious = [r["silhouette_iou"] for r in p["rows"]]
        table.append([p["phase"], p["runs"], f"{p['wall_seconds']:.0f}",
                      f"{p['wall_seconds'] / local['wall_seconds']:.2f}",
                      f"{statistics.mean(r['total_seconds'] for r in p['rows']):.1f}",
                      f"{statistics.mean(ious):.4f}", f"{diff:.4f}", "yes" if same else "no"])
    ratio = on_ray["wall_seconds"] / local["wall_seconds"]
    run_s = statistics.mean(r["total_seconds"] for r in on_ray["rows"])
    diff, _ = _compare(local, on_ray)
    _, same = _compare(equal, on_ray)
    verdict = (f"Ray over local: **{ratio:.2f}x** the wall time (bar: at most {BAR}x: "
               f"{'met' if ratio <= BAR else 'not met'}); IoU within {diff:.4f} of local's "
               f"(bar 0.01: {'met' if diff <= 0.01 else 'not met'}); metrics identical to "
               f"local at equal threads: {'yes' if same else 'no'}.")
    cost = (f"Ray's costs against a toy run's {run_s:.0f} s: starting a local Ray "
            f"{overhead['start']:.1f} s, once per command; a fresh worker's import of the "
            f"trainer and torch {overhead['worker_import']:.1f} s (timed in a new Python), once"
            f" per worker, which Ray then reuses; a warm task's round trip "
            f"{1000 * overhead['round_trip']:.1f} ms "
            f"({100 * overhead['round_trip'] / run_s:.3f}% of a run).")
    return (f"# Executors: the same toy runs here and on Ray\n\nCommand: `{command}`\n\n"
            f"Machine: {machine()}\n\n{len(jobs)} runs: "
            + ", ".join(dict.fromkeys(j.prompt for j in jobs))
            + f"; seeds {', '.join(map(str, dict.fromkeys(j.seed for j in jobs)))}. "
            + (__doc__ or "").split("\n\n", 1)[1].replace("\n", " ").strip() + "\n\n"
            + markdown_table(["phase", "how the runs were placed", "wall s", "vs local",
                              "mean run s", "IoU mean", "max IoU difference to ray",
                              "metrics identical to ray"], table)
            + f"\n\n{verdict}\n\n{cost}\n")


def run_executors_bench(cfg: DictConfig, prompts: list[str], seeds: list[int], runs: str,
                        results: str, address: str | None, cpus: int, command: str) -> dict:
    if not registry.prior(cfg.guidance.prior).ground_truth:
        raise UserError("bench executors compares toy runs' scores: give a config with "
                        "guidance.prior=toy")
    if Path(runs).is_dir() and any(Path(runs).iterdir()):
        # finished runs would be skipped, and their phase timed at nothing
        raise UserError(f"bench executors times fresh runs, and {runs!r} already holds some: "
                        f"give another --runs or remove it")
    for prompt in prompts:
        prepare(prompt, cfg, root_check=False)
    executor = RayExecutor(address, cpus)       # Ray is there, before any run
    print("warming the caches: one 1-step run per prompt", flush=True)
    _warm(cfg, prompts)

    def jobs(phase: str) -> list[Job]:
        return [Job(p, s, Path(runs) / phase / f"{slugify(p)}-seed{s}", cfg, f"{phase} {p!r} "
                    f"seed {s}") for p in prompts for s in seeds]

    phases = [_phase("local", LocalExecutor(), jobs("local"))]
    import ray

    started = time.perf_counter()
    ours = executor.connect()       # its start counts in the phase's wall time
    ray_start = time.perf_counter() - started
    ray_phase = _phase("ray", executor, jobs("ray"))
    ray_phase["wall_seconds"] = round(time.perf_counter() - started, 1)
    overhead = {"start": round(ray_start, 2), "round_trip": ray_round_trip(cpus)}
    if ours:
        ray.shutdown()
    overhead["worker_import"] = round(worker_import_seconds(), 2)
    phases += [ray_phase, _phase("local, equal threads", LocalExecutor(cpus),
                                 jobs("local-equal-threads"))]
    text = _report(phases, overhead, jobs("ray"), command)
    write_text(Path(results) / "executors.md", text)
    from ..pipeline.artifacts import write_json

    data = {"command": command, "argv": sys.argv, "machine": machine(), "phases": phases,
            "ray_overhead": overhead, "bar": BAR, "config": OmegaConf.to_container(cfg)}
    write_json(Path(results) / "executors.json", data)
    print(text)
    return data


def add_parser(bench_sub) -> None:
    ex = bench_sub.add_parser("executors", help="the same toy runs here and as Ray tasks")
    ex.add_argument("overrides", nargs="*", metavar="key.sub=value")
    ex.add_argument("--config", default=DEFAULT_CONFIG)
    ex.add_argument("--prompts", nargs="+", default=None,
                    help="toy captions (default: the toy bench's)")
    ex.add_argument("--seeds", nargs="+", type=int, default=[0])
    ex.add_argument("--cpus-per-run", type=int, default=1, help="each Ray task's CPUs")
    ex.add_argument("--ray-address", default=None)
    ex.add_argument("--runs", default="outputs/bench-executors")
    ex.add_argument("--results", default="results")


def main(args) -> int:
    if args.cpus_per_run < 1:
        raise UserError(f"--cpus-per-run must be >= 1, got {args.cpus_per_run}")
    cfg = load_config(args.config, args.overrides)
    prompts = list(args.prompts or DEFAULT_PROMPTS)
    command = " ".join(["dreamfusion bench executors", "--config", args.config, "--prompts",
                        *(repr(p) for p in prompts), "--seeds", *map(str, args.seeds),
                        "--cpus-per-run", str(args.cpus_per_run), "--runs", args.runs,
                        *args.overrides])
    run_executors_bench(cfg, prompts, args.seeds, args.runs, args.results, args.ray_address,
                        args.cpus_per_run, command)
    return 0

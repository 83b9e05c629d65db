"""``dreamfusion batch PROMPTS.txt``: one run per prompt and seed, here or over Ray, and a
table of how each ended (time, state, the toy world's scores where the prior has them).

Re-running the same command skips the runs that finished and resumes those that stopped. A
prompt the prior cannot read fails that run alone, with its one-line reason in the table; a
config or model that cannot work fails the whole batch before any folder is made (exit 2).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from ..config import DEFAULT_CONFIG, load_config
from ..errors import UserError
from ..pipeline.inputs import check_words, slugify
from ..utils.atomic import write_text
from .fanout import (Job, Outcome, add_executor_args, executor_flags, executor_from_args,
                     one_line, run_all)
from .tables import markdown_table

# the toy world's scores, where the prior has a ground truth: (key, column, format)
SCORES = (("silhouette_iou", "IoU", ".3f"), ("side_iou", "side IoU", ".3f"),
          ("colour_error", "colour error", ".3f"), ("janus", "Janus", ".3f"))


def read_prompt_list(path: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with ``#`` are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read prompts file {path!r}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None
    prompts = [line.strip() for line in text.splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UserError(f"prompts file {path!r} has no prompts (one per line)")
    return prompts


def plan(prompts: list[str], seeds: list[int], cfg: DictConfig,
         runs: Path) -> tuple[list[Job], dict[int, Outcome]]:
    """Every (prompt, seed) as a job, and the outcomes already known: a prompt the prior
    cannot read fails here, at no cost, without a folder."""
    folders: dict[str, str] = {}
    for prompt in dict.fromkeys(prompts):
        other = folders.setdefault(slugify(prompt), prompt)
        if other != prompt:
            raise UserError(f"prompts {other!r} and {prompt!r} would share the run folder "
                            f"{slugify(prompt)!r}; make them differ in letters or digits")
    jobs, known = [], {}
    for prompt in dict.fromkeys(prompts):
        try:
            check_words(prompt, cfg)
            why = None
        except UserError as exc:
            why = one_line(str(exc))
        for seed in seeds:
            if why is not None:
                known[len(jobs)] = Outcome("failed", 0.0, error=why)
            jobs.append(Job(prompt, seed, runs / f"{slugify(prompt)}-seed{seed}", cfg,
                            f"{prompt!r} seed {seed}"))
    return jobs, known


def _score(summary: dict | None, key: str, spec: str) -> str:
    return "-" if not summary or key not in summary else format(summary[key], spec)


def table(jobs: list[Job], outcomes: list[Outcome], runs: Path) -> str:
    scored = [s for s in SCORES if any(o.summary and s[0] in o.summary for o in outcomes)]
    rows = [[j.prompt, j.seed, o.state, f"{o.seconds:.0f}",
             _score(o.summary, "total_seconds", ".0f"),
             *(_score(o.summary, key, spec) for key, _, spec in scored),
             str(j.run_dir.relative_to(runs)) if o.ok else "", o.error or ""]
            for j, o in zip(jobs, outcomes)]
    return markdown_table(["prompt", "seed", "state", "s here", "run s",
                           *(name for _, name, _ in scored), "folder", "why it failed"], rows)


def run_batch(prompts_file: str, seeds: list[int], config: str, overrides: list[str],
              runs: str | None, args) -> int:
    prompts = read_prompt_list(prompts_file)
    cfg = load_config(config, overrides)
    executor = executor_from_args(args)
    runs_dir = Path(runs or Path("outputs") / f"batch-{slugify(Path(prompts_file).stem)}")
    jobs, known = plan(prompts, seeds, cfg, runs_dir)
    todo = [i for i in range(len(jobs)) if i not in known]
    for i in known:
        print(f"{jobs[i].label}: failed: {known[i].error}", flush=True)
    if todo:                # the config's own checks (memory, weights), once, before any run
        from ..pipeline.inputs import check_output_root, prepare

        prepare(jobs[todo[0]].prompt, cfg, root_check=False)
        check_output_root(runs_dir)
    started = time.perf_counter()
    outcomes = dict(known)
    outcomes.update(zip(todo, run_all([jobs[i] for i in todo], executor)))
    ordered = [outcomes[i] for i in range(len(jobs))]
    wall = time.perf_counter() - started
    failed = sum(not o.ok for o in ordered)
    command = " ".join(["dreamfusion batch", prompts_file, "--config", config, "--seeds",
                        *map(str, seeds), "--runs", str(runs_dir), *executor_flags(args).split(),
                        *overrides])
    text = (f"# Batch: {prompts_file}\n\nCommand: `{command}`\n\nRuns: {executor.describe()}; "
            f"{len(jobs)} runs, {failed} failed, {wall / 60:.1f} min\n\n"
            + table(jobs, ordered, runs_dir) + "\n")
    runs_dir.mkdir(parents=True, exist_ok=True)
    write_text(runs_dir / "batch.md", text)
    from ..pipeline.artifacts import write_json

    write_json(runs_dir / "batch.json", {
        "command": command, "argv": sys.argv, "executor": executor.name,
        "runs": executor.describe(), "wall_seconds": round(wall, 1),
        "rows": [{"prompt": j.prompt, "seed": j.seed, "folder": str(j.run_dir),
                  "state": o.state, "seconds": round(o.seconds, 1), "error": o.error,
                  "summary": o.summary} for j, o in zip(jobs, ordered)]})
    print(table(jobs, ordered, runs_dir))
    print(f"{len(jobs) - failed} of {len(jobs)} runs finished; table in {runs_dir / 'batch.md'}",
          file=sys.stderr)
    return 1 if failed else 0


def add_parser(sub) -> None:
    batch = sub.add_parser("batch", help="one run per prompt (and seed) of a file, here or on Ray")
    batch.add_argument("prompts_file", metavar="PROMPTS.txt",
                       help="one prompt per line; blank lines and # comments are skipped")
    batch.add_argument("overrides", nargs="*", metavar="key.sub=value",
                       help="config overrides for every run")
    batch.add_argument("--config", default=DEFAULT_CONFIG,
                       help="a YAML file or a bundled config's name (default: toy)")
    batch.add_argument("--seeds", nargs="+", type=int, default=[0])
    batch.add_argument("--runs", default=None,
                       help="the run folders' root (default: outputs/batch-<file name>); "
                            "with Ray, on a filesystem every worker reaches")
    add_executor_args(batch)


def main(args) -> int:
    return run_batch(args.prompts_file, args.seeds, args.config, args.overrides, args.runs, args)

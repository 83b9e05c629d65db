"""``dreamfusion run "<prompt>" [key.sub=value ...]``, ``export``, ``refine``, ``batch``, ``app`` and
``bench ...``; each bench and ``batch``/``app`` parse their own arguments."""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from . import app
from .bench import batch, executors, gpu, refine, remedies, rprecision, sds_step, speed, toy
from .config import DEFAULT_CONFIG, load_config, to_yaml
from .errors import Interrupted, TrainingFailed, UserError, error_line
from .utils.memory import limit_malloc_arenas


#: each bench's module owns its parser (``add_parser``) and its command (``main``); none
#: imports torch before its ``main`` runs. In this order in ``dreamfusion bench --help``.
BENCHES = {"toy": toy, "refine": refine, "remedies": remedies, "executors": executors, "speed": speed,
           "rprecision": rprecision, "sds-step": sds_step, "gpu": gpu}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:          # argparse's own errors: one line, exit 2
        raise UserError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dreamfusion", description="Text-to-3D by score distillation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="train a 3D object from a prompt and export it")
    run.add_argument("prompt", nargs="?", help='what to make, e.g. "a red cube"')
    run.add_argument("overrides", nargs="*", metavar="key.sub=value",
                     help="config overrides, e.g. steps=500 nerf.hidden=32")
    run.add_argument("--config", default=None,
                     help="a YAML file or the name of a bundled config (default: toy)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a stopped run from its newest good checkpoint")
    run.add_argument("--dry-run", action="store_true",
                     help="check the prompt and config, print the resolved config, and exit")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    export = sub.add_parser("export", help="write a finished run's meshes again")
    export.add_argument("run_dir", help="a run folder (with config.yaml and checkpoints/)")
    export.add_argument("--format", help="glb, obj or glb,obj (default: the run's)")
    export.add_argument("--resolution", type=int, help="marching-cubes grid per axis")
    export.add_argument("--threshold", help="auto or a density value")
    export.add_argument("--texture-size", type=int, help="texture side in texels; 0: vertex colours")
    export.add_argument("--decimate", type=int, help="at most this many faces; 0: all")
    stage = sub.add_parser("refine", help="the mesh stage: refine a NeRF or Gaussian run's "
                                           "surface and texture as a mesh (DMTet)")
    stage.add_argument("run_dir", help="a first stage's run folder (finished or stopped)")
    stage.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. refine.steps=300 refine.tet_resolution=48")
    stage.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.add_parser(sub)
    app.add_parser(sub)
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    for module in BENCHES.values():
        module.add_parser(bench_sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dreamfusion")
    except PackageNotFoundError:        # run from a source tree that was never installed
        return "unknown (not installed)"


OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _run(args: argparse.Namespace) -> int:
    from .pipeline.inputs import check_cpu_memory, check_words, run_root

    if args.resume is not None:
        if args.config is not None:
            raise UserError("--resume takes the run's own config.yaml; give no --config")
        if args.prompt is not None and OVERRIDE.match(args.prompt):
            args.overrides.insert(0, args.prompt)       # "run --resume DIR steps=5"
            args.prompt = None
        if args.dry_run:
            raise UserError("--dry-run checks a new run; it does not combine with --resume")
        from .pipeline.run import resume

        result = resume(Path(args.resume), args.overrides, args.prompt, args.quiet)
    else:
        if args.prompt is None:
            raise UserError("the following arguments are required: prompt")
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
        check_words(args.prompt, cfg)       # before torch is imported: refusals are instant
        check_cpu_memory(cfg)
        from .pipeline.inputs import prepare
        from .pipeline.run import run

        if args.dry_run:
            prepare(args.prompt, cfg, dry_run=True)
            print(to_yaml(cfg), end="")
            print(f"dreamfusion: the prompt and config are valid; the run would go under "
                  f"{os.path.join(run_root(cfg).absolute(), '')}", file=sys.stderr)
            return 0
        result = run(args.prompt, cfg, quiet=args.quiet)
    _report(result)
    # refine.after: the stage after the first, in the same command (a refine run's own
    # config always says false)
    if load_config(str(result.run_dir / "config.yaml")).refine.after:
        from .pipeline.refine import refine

        _report(refine(result.run_dir, (), args.quiet))
    return 0


def _report(result) -> None:
    print(f"wrote {result.run_dir} in {result.seconds:.0f} s: {', '.join(result.files)}")
    if result.report:
        print(result.report)


def _refine(args: argparse.Namespace) -> int:
    from .pipeline.refine import refine

    _report(refine(Path(args.run_dir), args.overrides, args.quiet))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .pipeline.reexport import export_run

    if args.overrides:
        raise UserError(f"export takes flags, not overrides: {' '.join(args.overrides)}")
    flags = {"formats": f"[{args.format}]" if args.format else None,
             "resolution": args.resolution, "threshold": args.threshold,
             "texture_size": args.texture_size, "decimate": args.decimate}
    overrides = [f"export.{k}={v}" for k, v in flags.items() if v is not None]
    written, step = export_run(Path(args.run_dir), overrides)
    print(f"wrote {', '.join(str(p) for p in written)} (step {step})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    return BENCHES[args.bench].main(args)


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()
    try:
        parser = _parser()
        args, extra = parser.parse_known_args(argv)
        # overrides may come after options too ("run PROMPT --quiet steps=5")
        unknown = [e for e in extra if e.startswith("-") or "=" not in e]
        if unknown:
            raise UserError(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = [*getattr(args, "overrides", []), *extra]
        commands = {"run": _run, "export": _export, "refine": _refine, "bench": _bench, "batch": batch.main,
                    "app": app.main}
        return commands[args.command](args)
    except UserError as exc:
        print(error_line(str(exc)), file=sys.stderr)
        return 2
    except TrainingFailed as exc:                   # a diverged run is not the user's input
        print(f"dreamfusion: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"dreamfusion: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("dreamfusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

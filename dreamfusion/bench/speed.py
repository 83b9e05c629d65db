"""``dreamfusion bench speed``: each backend on this machine, measured in one run against the
PyTorch reference (the measurements: ``speed_rows.py``, imported only when the bench runs, so
the CLI answers bad input without importing torch)."""
from __future__ import annotations

import argparse
from typing import Any

from ..config import DEFAULT_CONFIG, load_config
from ..errors import UserError


def add_parser(bench_sub: Any) -> None:
    speed = bench_sub.add_parser("speed", help="each backend's speed against the PyTorch reference")
    speed.add_argument("overrides", nargs="*", metavar="key.sub=value")
    speed.add_argument("--config", default=DEFAULT_CONFIG, help="for renders and toy runs")
    speed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    speed.add_argument("--points", type=int, default=262144, help="hash-grid points per call")
    speed.add_argument("--repeats", type=int, default=3)
    speed.add_argument("--toy-steps", type=int, default=30, help="toy SDS steps timed")
    speed.add_argument("--no-toy-run", action="store_true", help="skip the full toy runs")
    speed.add_argument("--sd-steps", type=int, default=1,
                       help="SDS steps timed with the SD-sized UNet (0: skip)")
    speed.add_argument("--results", default="results")


def main(args: argparse.Namespace) -> int:
    if args.points < 1 or args.repeats < 1 or args.toy_steps < 1 or args.sd_steps < 0:
        raise UserError("bench speed takes --points, --repeats and --toy-steps >= 1, "
                        "--sd-steps >= 0")
    cfg = load_config(args.config, args.overrides)
    if cfg.guidance.prior != "toy":
        raise UserError("bench speed times the toy prior: give a config with guidance.prior=toy")
    command = " ".join(["dreamfusion bench speed", *args.overrides, "--config", args.config,
                        "--device", args.device, "--points", str(args.points), "--repeats",
                        str(args.repeats), "--toy-steps", str(args.toy_steps),
                        "--sd-steps", str(args.sd_steps)] + ["--no-toy-run"] * args.no_toy_run)
    from .speed_rows import run_speed_bench

    run_speed_bench(cfg, args.device, args.points, args.repeats, args.toy_steps,
                    not args.no_toy_run, args.sd_steps, args.results, command)
    return 0

"""``dreamfusion bench sds-step``: the time of one SDS step through a Stable-Diffusion-sized
model with random weights (the measurement: ``sds_timing.py``, imported only when the bench
runs, so the CLI answers bad input without importing torch)."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserError


def add_parser(bench_sub: Any) -> None:
    step = bench_sub.add_parser("sds-step", help="one SDS step with an SD-sized random model")
    step.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    step.add_argument("--steps", type=int, default=3, help="steps timed after a warm-up")
    step.add_argument("--render", type=int, default=64, help="render size (DreamFusion: 64)")
    step.add_argument("--render-size", type=int, default=512, help="VAE input size")
    step.add_argument("--guidance-scale", type=float, default=100.0)
    step.add_argument("--results", default="results")


def main(args: argparse.Namespace) -> int:
    if args.overrides:
        raise UserError(f"bench sds-step takes no config overrides: {' '.join(args.overrides)}")
    if args.steps < 1 or args.render < 8 or args.render_size < 8:
        raise UserError("--steps must be >= 1, --render and --render-size >= 8")
    from .sds_timing import run_sds_step_bench

    run_sds_step_bench(args.device, args.steps, args.render, args.render_size,
                       args.guidance_scale, args.results)
    return 0

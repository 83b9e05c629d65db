"""``dreamfusion bench speed``: hash-grid throughput of each backend on this machine, with the
ratio to the PyTorch reference measured in the same run."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..nerf.hashgrid import HashGridEncoding
from ..pipeline.artifacts import write_json
from ..utils.atomic import write_text
from .tables import markdown_table
from .toy import machine

GRID = (16, 2, 19, 16, 1.447269237440378)      # DreamFusion-sized: 16 x 2 x 2^19, base 16


def _rate(enc: HashGridEncoding, x: torch.Tensor, grad: torch.Tensor, backward: bool,
          repeats: int) -> float:
    """Samples per second, the best of ``repeats`` timed calls after one warm-up."""
    best = float("inf")
    for i in range(repeats + 1):
        enc.params.grad = None
        start = time.perf_counter()
        if backward:
            (enc(x) * grad).sum().backward()
        else:
            with torch.no_grad():
                enc(x)
        if i:
            best = min(best, time.perf_counter() - start)
    return x.shape[0] / best


def run_speed_bench(points: int, repeats: int, results: str) -> list[dict]:
    torch.manual_seed(0)
    x = torch.rand(points, 3)
    grad = torch.randn(points, GRID[0] * GRID[1])
    rows = []
    for backend in ("torch", "cpp"):
        enc = HashGridEncoding(*GRID, backend=backend)
        if backend == "cpp" and not enc.kernel_available:
            print(f"skipping cpp: {enc.describe_backend()}")
            continue
        rows.append({"backend": backend, "forward": _rate(enc, x, grad, False, repeats),
                     "forward_backward": _rate(enc, x, grad, True, repeats)})
    ref = rows[0]
    for r in rows:
        r["forward_vs_torch"] = r["forward"] / ref["forward"]
        r["forward_backward_vs_torch"] = r["forward_backward"] / ref["forward_backward"]
    table = markdown_table(
        ["machine", "backend", "forward M samples/s", "forward+backward M samples/s",
         "x torch (fwd / fwd+bwd)"],
        [[machine(), r["backend"], f"{r['forward'] / 1e6:.3f}", f"{r['forward_backward'] / 1e6:.3f}",
          f"{r['forward_vs_torch']:.1f} / {r['forward_backward_vs_torch']:.1f}"] for r in rows])
    write_text(Path(results) / "speed_cpu.md",
               f"# Hash-grid speed\n\nCommand: `dreamfusion bench speed --points {points} "
               f"--repeats {repeats}`\n\nGrid 16 levels x 2 features x 2^19 rows, base 16; "
               f"{points} uniform random points in the unit cube; the backward pass is the "
               "gradient w.r.t. the table (as in training) from a random output gradient. "
               f"Best of {repeats} after a warm-up.\n\n{table}\n")
    write_json(Path(results) / "speed_cpu.json", {"machine": machine(), "grid": GRID,
                                                   "points": points, "rows": rows})
    print(table)
    return rows

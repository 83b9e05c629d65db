"""What every bench measures the same way: waiting for the device, the best of repeated
calls, and peak memory."""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after one warm-up, in seconds."""
    best = float("inf")
    for i in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak over from what is in use now, so that the next ``peak_memory_gb``
    covers only the work in between (a no-op on a CPU without Linux's /proc)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif _STATUS.exists():
        # Linux: "5" resets this process's peak resident set (VmHWM) to its current one
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_gb(device: torch.device) -> tuple[float, str]:
    """Peak allocated GPU memory on CUDA, else this process's peak resident set, and which."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30, "peak GPU memory allocated"
    if _STATUS.exists():
        # VmHWM, not ru_maxrss: a process that multiprocessing spawns inherits its parent's
        # ru_maxrss through fork and exec, so a small row measured in a fresh process under a
        # large parent would report the parent's peak
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20, "peak process RSS"
    # ru_maxrss: KiB on Linux, bytes on macOS; the whole process, weights included
    scale = 2 ** 30 if sys.platform == "darwin" else 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, "peak process RSS"

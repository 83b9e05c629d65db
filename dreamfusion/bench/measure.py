"""What every bench measures the same way: waiting for the device, the best of repeated
calls, and peak memory."""
from __future__ import annotations

import resource
import time

import torch


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


def peak_memory_gb(device: torch.device) -> tuple[float, str]:
    """Peak allocated GPU memory on CUDA, else this process's peak resident set, and which."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30, "peak GPU memory allocated"
    # ru_maxrss is in KiB on Linux: the whole process, weights included
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "peak process RSS"

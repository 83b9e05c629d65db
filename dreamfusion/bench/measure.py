"""What every bench measures the same way: waiting for the device, and peak memory."""
from __future__ import annotations

import resource

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> tuple[float, str]:
    """Peak allocated GPU memory on CUDA, else this process's peak resident set, and which."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30, "peak GPU memory allocated"
    # ru_maxrss is in KiB on Linux: the whole process, weights included
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "peak process RSS"

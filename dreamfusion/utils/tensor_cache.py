"""A tensor cached in a safetensors file: read it, or compute it and write it atomically.

Several processes may share the cache (runs packed on one machine, workers of a cluster on
one filesystem): the first to miss computes while the others wait on a lock beside the file,
then read what it wrote, instead of all computing the same thing at once."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import WriteError
from .atomic import atomic_path


def default_cache_dir() -> Path:
    """Where every prior caches what it computes: ``$DREAMFUSION_CACHE`` or
    ``~/.cache/dreamfusion``."""
    return Path(os.environ.get("DREAMFUSION_CACHE", Path.home() / ".cache" / "dreamfusion"))


def _load(path: Path) -> torch.Tensor | None:
    try:
        return load_file(str(path))["tensor"]
    except (OSError, KeyError, SafetensorError):
        return None


def cached_tensor(path: Path | None, compute: Callable[[], torch.Tensor],
                  wait: float = 3600.0) -> tuple[torch.Tensor, bool]:
    """``(tensor, was_computed)``. A missing or unreadable file is computed again, by one
    process at a time (the others wait up to ``wait`` seconds, then compute for themselves);
    an unwritable cache costs time, not correctness."""
    if path is None:
        return compute().detach().cpu().contiguous(), True
    found = _load(path)
    if found is not None:
        return found, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock", timeout=wait)
        lock.acquire()
    except (OSError, Timeout):      # a read-only cache, or a holder that never lets go
        lock = None
    try:
        found = _load(path)         # written by whoever held the lock before us
        if found is not None:
            return found, False
        tensor = compute().detach().cpu().contiguous()
        try:
            with atomic_path(path) as tmp:
                save_file({"tensor": tensor}, str(tmp))
        except WriteError:          # atomic_path's form of every OSError, the file named
            pass
        return tensor, True
    finally:
        if lock is not None:
            lock.release()

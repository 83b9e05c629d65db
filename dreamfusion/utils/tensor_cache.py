"""A tensor cached in a safetensors file: read it, or compute it and write it atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import WriteError
from .atomic import atomic_path


def default_cache_dir() -> Path:
    """Where every prior caches what it computes: ``$DREAMFUSION_CACHE`` or
    ``~/.cache/dreamfusion``."""
    return Path(os.environ.get("DREAMFUSION_CACHE", Path.home() / ".cache" / "dreamfusion"))


def cached_tensor(path: Path | None, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """``(tensor, was_computed)``. A missing or unreadable file is computed again; an
    unwritable cache costs time, not correctness."""
    if path is not None:
        try:
            return load_file(str(path))["tensor"], False
        except (OSError, KeyError, SafetensorError):
            pass
    tensor = compute().detach().cpu().contiguous()
    if path is not None:
        try:
            with atomic_path(path) as tmp:
                save_file({"tensor": tensor}, str(tmp))
        except WriteError:          # atomic_path's form of every OSError, the file named
            pass
    return tensor, True

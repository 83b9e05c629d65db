"""Text embeddings cached on disk, keyed by the model and the prompt."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from ...utils.tensor_cache import cached_tensor


def model_key(folder: Path, weights_subfolder: str = "text_encoder") -> str:
    """Identifies a model's text encoder: its folder and the size and time of its weights,
    so that replacing the weights in place invalidates the cache."""
    files = sorted(p for p in (folder / weights_subfolder).glob("*") if p.is_file())
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return json.dumps([str(folder.resolve()), stamp])


class TextEmbeddingCache:
    """``get(prompt)``: from memory, from ``cache_dir`` or computed by ``encode`` and stored."""

    def __init__(self, cache_dir: Path | None, key: str, encode: Callable[[str], torch.Tensor]) -> None:
        self.cache_dir, self.key, self.encode = cache_dir, key, encode
        self.misses = 0
        self._memory: dict[str, torch.Tensor] = {}

    def path(self, prompt: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps([self.key, prompt]).encode()).hexdigest()[:32]
        return self.cache_dir / "text" / f"{digest}.safetensors"

    def get(self, prompt: str) -> torch.Tensor:
        if prompt in self._memory:
            return self._memory[prompt]
        embedding, computed = cached_tensor(self.path(prompt), lambda: self.encode(prompt))
        self.misses += computed
        self._memory[prompt] = embedding
        return embedding

"""tiny-cuda-nn's ``HashGrid`` as a backend: its CUDA kernel run on our parameter tensor.

tiny-cuda-nn lays its parameters out exactly as ``HashGridEncoding`` does (that layout is
where ours comes from), so its kernel reads our ``(rows, features)`` table flattened, and a
checkpoint moves between backends unchanged. Its own ``Encoding`` module is used only for the
native kernel it wraps; its parameters are never used.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

_why_not: str = ""


@lru_cache(maxsize=None)
def load_tcnn() -> Any | None:
    """The ``tinycudann`` module where it imports and a CUDA device is present, else None."""
    global _why_not
    if not torch.cuda.is_available():
        _why_not = "no CUDA device"
        return None
    try:
        import tinycudann
    except Exception as exc:        # not installed, or built for another torch or GPU
        _why_not = f"tinycudann does not import ({type(exc).__name__}: {exc}); see the README"
        return None
    return tinycudann


def unavailable_reason() -> str:
    return _why_not


def encoding_config(n_levels: int, features: int, table_size_log2: int, base_resolution: int,
                    growth: float) -> dict:
    return {"otype": "HashGrid", "n_levels": n_levels, "n_features_per_level": features,
            "log2_hashmap_size": table_size_log2, "base_resolution": base_resolution,
            "per_level_scale": growth, "interpolation": "Linear"}


@lru_cache(maxsize=None)
def _native(config: tuple) -> Any:
    """One fp32 tcnn ``Encoding`` per configuration (and CUDA device in use)."""
    return load_tcnn().Encoding(3, dict(config), dtype=torch.float32)


def tcnn_encode(x: torch.Tensor, params: torch.Tensor, config: dict, output_dim: int
                ) -> torch.Tensor:
    """Features of ``x`` (N, 3) on a CUDA device by tcnn's kernel, differentiable w.r.t.
    ``params`` and ``x`` (N, output_dim)."""
    from tinycudann.modules import _C, _module_function

    enc = _native(tuple(sorted(config.items())))
    n = x.shape[0]
    step = int(_C.batch_size_granularity())     # tcnn works on whole batches of this size
    padded = -(-n // step) * step
    xp = x if padded == n else torch.nn.functional.pad(x, [0, 0, 0, padded - n])
    out = _module_function.apply(enc.native_tcnn_module, xp.float().contiguous(),
                                 params.reshape(-1).contiguous(), enc.loss_scale)
    return out[:n, :output_dim]
